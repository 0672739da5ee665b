"""Checkpoint weights: strict, streaming reads of safetensors (and ``pytorch_model.bin``) into a module, and saving.

Reading parses each safetensors header, checks that the file holds every byte it promises, matches the stored
names to the module's keys (missing, unexpected and mis-shaped weights are reported together, with the file),
then streams each tensor from disk straight into its final buffer (plain ``readinto``, no mmap and no
intermediate state dict), so peak memory stays close to one copy of the weights. It knows modules only through
their ``state_dict`` keys and shapes: no model code lives here.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .files import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    TORCH_WEIGHTS_INDEX_NAME,
    TORCH_WEIGHTS_NAME,
    CheckpointError,
)

# Top-level parts of SigLIP checkpoints. A class that holds only some of them (a tower, the classifier) loads
# its part and ignores the others; a key outside these parts that the model lacks is an error.
KNOWN_PARTS = ("text_model", "vision_model", "logit_scale", "logit_bias", "classifier")

_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": getattr(torch, "float8_e4m3fn", None),
    "F8_E5M2": getattr(torch, "float8_e5m2", None),
}


class TensorInfo:
    """Where one stored tensor lives: file, dtype, shape and (for safetensors) its byte range."""

    __slots__ = ("file", "name", "dtype", "shape", "start", "end")

    def __init__(self, file: Path, name: str, dtype: torch.dtype, shape: tuple[int, ...], start: int, end: int):
        self.file, self.name, self.dtype, self.shape, self.start, self.end = file, name, dtype, shape, start, end


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse a safetensors header (8-byte length + JSON) and check the file holds every byte it promises."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is truncated or empty ({size} bytes): not a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise CheckpointError(
                f"{path} is truncated or not a safetensors file (header length {n}, file {size} bytes)"
            )
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path} has a corrupt safetensors header") from None
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + n
    infos: dict[str, TensorInfo] = {}
    end_max = 0
    for name, entry in header.items():
        try:
            dtype = _ST_DTYPES[entry["dtype"]]
            shape = tuple(int(s) for s in entry["shape"])
            start, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry {entry!r}") from None
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {entry['dtype']} that this torch can't hold")
        numel = 1
        for s in shape:
            numel *= s
        if end - start != numel * dtype.itemsize or start < 0:
            raise CheckpointError(f"{path}: tensor {name!r} byte range {start}:{end} does not match shape {shape}")
        infos[name] = TensorInfo(path, name, dtype, shape, base + start, base + end)
        end_max = max(end_max, end)
    if base + end_max > size:
        raise CheckpointError(
            f"{path} is truncated: its header describes {base + end_max} bytes but the file has {size} "
            "(an interrupted download? fetch it again)"
        )
    return infos, metadata


def _read_into(f, tensor: torch.Tensor, info: TensorInfo) -> None:
    if tensor.numel() == 0:
        return
    f.seek(info.start)
    view = memoryview(tensor.view(-1).view(torch.uint8).numpy())
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            raise CheckpointError(f"{info.file} ended while reading tensor {info.name!r}")
        got += n


def checkpoint_tensors(folder: Path, use_safetensors: bool | None = None) -> dict[str, TensorInfo]:
    """Every tensor of the checkpoint in ``folder``: single or sharded safetensors, else ``pytorch_model.bin``.

    ``use_safetensors`` as in transformers: True requires safetensors, False reads ``pytorch_model.bin`` only.
    """
    single = folder / SAFE_WEIGHTS_NAME
    index = folder / SAFE_WEIGHTS_INDEX_NAME
    if use_safetensors is not False:
        if single.is_file():
            return read_safetensors_header(single)[0]
        if index.is_file():
            return _sharded_infos(index)
    if use_safetensors is not True:
        for name in (TORCH_WEIGHTS_NAME, TORCH_WEIGHTS_INDEX_NAME):
            if (folder / name).is_file():
                return _torch_bin_infos(folder)
    expected = {
        True: f"{SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME} (use_safetensors=True)",
        False: f"{TORCH_WEIGHTS_NAME} or {TORCH_WEIGHTS_INDEX_NAME} (use_safetensors=False)",
        None: f"{SAFE_WEIGHTS_NAME}, {SAFE_WEIGHTS_INDEX_NAME} or {TORCH_WEIGHTS_NAME}",
    }[use_safetensors]
    raise CheckpointError(f"{folder} has no weights: expected {expected}")


def _sharded_infos(index: Path) -> dict[str, TensorInfo]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"{index} is not a valid safetensors index (needs a 'weight_map')") from None
    infos: dict[str, TensorInfo] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index.parent / shard
        if not shard_path.is_file():
            raise CheckpointError(f"{index} lists shard {shard} but {shard_path} does not exist")
        shard_infos = read_safetensors_header(shard_path)[0]
        for name, file in weight_map.items():
            if file == shard:
                if name not in shard_infos:
                    raise CheckpointError(f"{index} places {name!r} in {shard}, which does not contain it")
                infos[name] = shard_infos[name]
    return infos


_TORCH_BIN_CACHE: dict[Path, dict[str, torch.Tensor]] = {}


def _load_torch_bin(path: Path) -> dict[str, torch.Tensor]:
    """A ``pytorch_model.bin`` through ``torch.load(weights_only=True)``: tensors only, never arbitrary pickles."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad pickles
        raise CheckpointError(
            f"{path} could not be loaded with weights_only=True ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            "We never unpickle arbitrary objects; convert the checkpoint to safetensors."
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat dict of tensors")
    return state


def _torch_bin_infos(folder: Path) -> dict[str, TensorInfo]:
    index = folder / TORCH_WEIGHTS_INDEX_NAME
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise CheckpointError(f"{index} is not a valid index (needs a 'weight_map')") from None
    else:
        files = [TORCH_WEIGHTS_NAME]
    infos: dict[str, TensorInfo] = {}
    for file in files:
        path = folder / file
        if not path.is_file():
            raise CheckpointError(f"{folder} is missing weight file {file}")
        state = _load_torch_bin(path)
        _TORCH_BIN_CACHE[path] = state
        for name, t in state.items():
            infos[name] = TensorInfo(path, name, t.dtype, tuple(t.shape), -1, -1)
    return infos


def iter_tensors(
    infos: Iterable[TensorInfo], dtype: torch.dtype | None, device: torch.device
) -> Iterator[tuple[TensorInfo, torch.Tensor]]:
    """Read tensors one at a time, in file order, cast floating ones to ``dtype`` and move them to ``device``."""
    by_file: dict[Path, list[TensorInfo]] = {}
    for info in infos:
        by_file.setdefault(info.file, []).append(info)
    for file, group in by_file.items():
        group.sort(key=lambda i: i.start)
        if file.suffix == ".bin":
            state = _TORCH_BIN_CACHE.pop(file, None) or _load_torch_bin(file)
            for info in group:
                yield info, _finish(state[info.name].clone(), dtype, device)
            continue
        with open(file, "rb", buffering=0) as f:
            for info in group:
                t = torch.empty(info.shape, dtype=info.dtype)
                _read_into(f, t, info)
                yield info, _finish(t, dtype, device)


def _finish(t: torch.Tensor, dtype: torch.dtype | None, device: torch.device) -> torch.Tensor:
    if dtype is not None and t.is_floating_point() and t.dtype != dtype:
        t = t.to(dtype)
    if device.type != "cpu":
        t = t.to(device, non_blocking=False)
    return t


# ------------------------------------------------------------------------------------------------------------
# Matching checkpoint keys to a model
# ------------------------------------------------------------------------------------------------------------

_IGNORED_BUFFERS = re.compile(r"(^|\.)position_ids$")


def match_keys(model: nn.Module, names: Iterable[str], prefix: str) -> tuple[dict[str, str], list[str]]:
    """Map checkpoint names to model keys.

    A tower class (``prefix`` = "vision_model.") reads the prefixed keys of a joint checkpoint and ignores the
    other parts; keys outside the known SigLIP parts that the model lacks are returned as unexpected.
    Returns ({checkpoint name: model key}, unexpected names).
    """
    expected = set(model.state_dict().keys())
    names = [n for n in names if not _IGNORED_BUFFERS.search(n)]
    strip = bool(prefix) and any(n.startswith(prefix) for n in names) and not any(n in expected for n in names)
    own_parts = {k.split(".", 1)[0] for k in expected}
    mapping: dict[str, str] = {}
    unexpected: list[str] = []
    for name in names:
        key = name[len(prefix) :] if strip and name.startswith(prefix) else name
        if key in expected:
            mapping[name] = key
            continue
        part = name.split(".", 1)[0]
        if (strip and not name.startswith(prefix)) or (part in KNOWN_PARTS and part not in own_parts):
            continue  # another tower / head of a bigger checkpoint
        unexpected.append(name)
    return mapping, unexpected


def format_keys(keys: list[str], limit: int = 20) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


# ------------------------------------------------------------------------------------------------------------
# from_pretrained / save_pretrained
# ------------------------------------------------------------------------------------------------------------


def resolve_dtype(dtype: Any, config_dict: dict[str, Any], infos: dict[str, TensorInfo]) -> torch.dtype | None:
    """None / "auto": the config's ``dtype`` (or ``torch_dtype``), else the first floating weight's dtype."""
    if dtype is None or dtype == "auto":
        name = config_dict.get("dtype") or config_dict.get("torch_dtype")
        if isinstance(name, str) and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        for info in infos.values():
            if info.dtype.is_floating_point:
                return info.dtype
        return None
    if isinstance(dtype, str):
        value = getattr(torch, dtype.replace("torch.", ""), None)
        if not isinstance(value, torch.dtype):
            raise ValueError(
                f"dtype={dtype!r} is not a torch dtype name (use 'float32', 'bfloat16', 'float16' or 'auto')"
            )
        dtype = value
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be None, 'auto' or a floating torch.dtype, got {dtype!r}")
    return dtype


def resolve_device(device: Any, device_map: Any) -> torch.device:
    """One device for the whole model: ``device_map`` "auto" means CUDA when available, else CPU."""
    if device_map is not None:
        if isinstance(device_map, dict):
            devices = set(device_map.values())
            if len(devices) != 1:
                raise ValueError(
                    f"device_map spreads the model over {sorted(map(str, devices))}; only one device is supported"
                )
            device_map = devices.pop()
        if device_map == "auto":
            device_map = "cuda" if torch.cuda.is_available() else "cpu"
        if device is not None and torch.device(device) != torch.device(device_map):
            raise ValueError(f"device={device!r} and device_map={device_map!r} disagree")
        device = device_map
    if device is None:
        return torch.device("cpu")
    if isinstance(device, int):
        device = f"cuda:{device}"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a valid torch device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for but CUDA is not available on this machine")
    return device


def load_weights(
    model: nn.Module,
    folder: Path,
    *,
    prefix: str = "",
    optional_prefixes: tuple[str, ...] = (),
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    use_safetensors: bool | None = None,
    infos: dict[str, TensorInfo] | None = None,
) -> list[str]:
    """Fill ``model`` (built on the meta device) with the checkpoint in ``folder``, strictly.

    Args:
        prefix: the key prefix the model's weights carry inside a joint checkpoint ("vision_model." for a tower).
        optional_prefixes: keys the checkpoint may lack (a task head loaded from a base model); they are returned
            and left on the meta device for the caller to initialise.
        dtype / device: cast floating tensors to ``dtype`` and place everything on ``device``.
        infos: the checkpoint's tensors when the caller already listed them (``checkpoint_tensors``).

    Returns:
        The model keys that were absent from the checkpoint and optional.

    Raises:
        CheckpointError: listing every missing, unexpected and mis-shaped weight together, with the file names.
    """
    device = device or torch.device("cpu")
    infos = infos if infos is not None else checkpoint_tensors(folder, use_safetensors)
    mapping, unexpected = match_keys(model, infos.keys(), prefix)
    expected = model.state_dict()
    loaded = set(mapping.values())
    missing = [k for k in expected if k not in loaded]
    fresh = [k for k in missing if optional_prefixes and k.startswith(optional_prefixes)]
    missing = [k for k in missing if k not in fresh]
    mismatched = [
        f"{name}: checkpoint {list(infos[name].shape)} vs model {list(expected[key].shape)}"
        for name, key in mapping.items()
        if tuple(infos[name].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or mismatched:
        files = ", ".join(sorted({info.file.name for info in infos.values()}))
        lines = [f"the weights in {folder} ({files}) do not fit {type(model).__name__} with its config.json:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {format_keys(missing)}")
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): {format_keys(unexpected)}")
        if mismatched:
            lines.append(f"  wrong shape ({len(mismatched)}): {'; '.join(sorted(mismatched)[:20])}")
        raise CheckpointError("\n".join(lines))
    state: dict[str, torch.Tensor] = {}
    for info, tensor in iter_tensors((infos[n] for n in mapping), dtype, device):
        state[mapping[info.name]] = tensor
    model.load_state_dict(state, strict=False, assign=True)
    return fresh


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    if t.untyped_storage().nbytes() != t.numel() * t.element_size() or not t.is_contiguous():
        return t.contiguous().clone()
    return t


def save_weights(state_dict: dict[str, torch.Tensor], save_directory: Path) -> Path:
    """Write ``model.safetensors`` atomically (temporary name, then rename); returns its path."""
    from safetensors.torch import save_file

    # safetensors refuses tensors that share storage (views a user made, tied weights): give those their own copy.
    state = {k: _own_storage(v.detach()) for k, v in state_dict.items()}
    path = save_directory / SAFE_WEIGHTS_NAME
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(state, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
