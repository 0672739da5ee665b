"""Finding checkpoints (local folders or the Hugging Face hub cache), strict weight loading, and saving.

Loading builds the model on the meta device and streams each tensor from disk straight into its final buffer
(plain ``readinto``, no mmap and no intermediate state dict), so peak memory stays close to one copy of the
weights. Every key is checked before anything is read: missing, unexpected and mis-shaped weights are reported
together in one error.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import CONFIG_NAME, BaseConfig

logger = logging.getLogger("siglip")

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
TORCH_WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"

# `siglip-demo` names the tiny model trained by this project and shipped inside the package.
DEMO_MODEL = "siglip-demo"
DEMO_FOLDER = Path(__file__).resolve().parent / "assets" / "demo"

# Files a model or processor folder may need; only these are fetched from the hub.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]

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


class CheckpointError(ValueError):
    """A checkpoint folder or file that can't be used as is; the message names the file and the problem."""


# ------------------------------------------------------------------------------------------------------------
# Resolving a folder
# ------------------------------------------------------------------------------------------------------------

_HUB_OPTIONS = ("revision", "cache_dir", "local_files_only", "token", "force_download", "subfolder")


def split_hub_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the hub options out of ``kwargs`` (in place) and return them.

    ``trust_remote_code`` is popped and dropped: accepted for drop-in compatibility, but no code from a
    checkpoint folder is ever imported (only ``HUB_PATTERNS`` files are even downloaded).
    """
    kwargs.pop("trust_remote_code", None)
    return {k: kwargs.pop(k) for k in list(kwargs) if k in _HUB_OPTIONS}


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name.replace("/", "", 1) or name.count("/") > 1


def resolve_folder(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
    subfolder: str | None = None,
    patterns: list[str] | None = None,
) -> Path:
    """A local folder holding the checkpoint's files: the path itself, or the hub snapshot in the local cache.

    Hub ids go through ``huggingface_hub.snapshot_download`` (which honours ``HF_HUB_OFFLINE``, ``HF_HOME`` and
    ``HF_HUB_CACHE``) and fetch only the files we read. Offline and not cached gives an error that says so.
    """
    if str(name_or_path) == DEMO_MODEL:
        if not DEMO_FOLDER.is_dir():
            raise CheckpointError(f"the bundled demo model is missing from this install ({DEMO_FOLDER})")
        return DEMO_FOLDER
    path = Path(os.path.expanduser(str(name_or_path)))
    if path.is_dir():
        folder = path / subfolder if subfolder else path
        if not folder.is_dir():
            raise CheckpointError(f"{path} has no subfolder {subfolder!r}")
        return folder
    name = str(name_or_path)
    if path.exists():
        raise CheckpointError(f"{name} is a file; pass the folder that holds config.json and the weights")
    if _looks_like_path(name):
        raise CheckpointError(f"{name} does not exist (expected a checkpoint folder or a hub id like google/siglip-base-patch16-224)")

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        folder = snapshot_download(
            name,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            force_download=force_download,
            allow_patterns=patterns or HUB_PATTERNS,
        )
    except HFValidationError:
        raise CheckpointError(f"{name!r} is neither an existing folder nor a valid hub repo id") from None
    except GatedRepoError:
        raise CheckpointError(f"{name} is a gated repo: accept its terms on huggingface.co and pass token=...") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{name} was not found on the Hugging Face hub (or is private: pass token=...)") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{name} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or local_files_only
        from huggingface_hub.constants import HF_HUB_CACHE

        where = cache_dir or HF_HUB_CACHE
        why = "offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True)" if offline else "the hub can't be reached"
        raise CheckpointError(
            f"{name} is not a local folder and is not in the Hugging Face cache ({where}), and {why}. "
            "Download it where the hub is reachable (huggingface-cli download "
            f"{name}) or pass the path of a local folder holding config.json and model.safetensors."
        ) from None
    except OSError as e:  # network failures that huggingface_hub did not map
        raise CheckpointError(f"could not fetch {name} from the hub: {e}") from None
    folder = Path(folder)
    return folder / subfolder if subfolder else folder


def resolve_config_file(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> Path:
    """Path of ``config.json``: a file path as given, or the file inside a folder / hub snapshot."""
    path = Path(os.path.expanduser(str(name_or_path)))
    if path.is_file():
        return path
    folder = resolve_folder(name_or_path, **hub_kwargs)
    config_file = folder / CONFIG_NAME
    if not config_file.is_file():
        raise CheckpointError(f"{folder} has no {CONFIG_NAME}; is this a SigLIP checkpoint folder?")
    return config_file


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object; bad JSON or another type is a CheckpointError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def read_config_dict(folder: Path) -> dict[str, Any]:
    config_file = folder / CONFIG_NAME
    if not config_file.is_file():
        if (folder / "trainer_state.json").is_file():
            raise CheckpointError(
                f"{folder} has no {CONFIG_NAME}: transformers.Trainer saves only the weights of models that are not "
                "transformers classes. Load it with from_pretrained(folder, config=<the trained model's config>), "
                "or train with callbacks=[siglip.SaveConfigCallback()] so that every checkpoint gets its config.json"
            )
        raise CheckpointError(f"{folder} has no {CONFIG_NAME}; is this a SigLIP checkpoint folder?")
    return read_json_object(config_file)


# ------------------------------------------------------------------------------------------------------------
# Reading weights
# ------------------------------------------------------------------------------------------------------------


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
            raise CheckpointError(f"{path} is truncated or not a safetensors file (header length {n}, file {size} bytes)")
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


def _format_keys(keys: list[str], limit: int = 20) -> str:
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
            raise ValueError(f"dtype={dtype!r} is not a torch dtype name (use 'float32', 'bfloat16', 'float16' or 'auto')")
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
                raise ValueError(f"device_map spreads the model over {sorted(map(str, devices))}; only one device is supported")
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


def config_from_folder(model_class: type, folder: Path, overrides: dict[str, Any]) -> tuple[BaseConfig, dict[str, Any]]:
    data = read_config_dict(folder)
    config_class = model_class.config_class
    model_type = data.get("model_type")
    accepted = {config_class.model_type, *config_class.parent_model_types}
    if model_type not in accepted:
        raise CheckpointError(
            f"{folder / CONFIG_NAME} has model_type={model_type!r}, but {model_class.__name__} needs "
            f"{' or '.join(repr(t) for t in sorted(accepted))}; load it with the matching class or siglip.AutoModel"
        )
    try:
        return config_class.from_dict(data, **overrides), data
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{folder / CONFIG_NAME}: {e}") from None


def load_pretrained(
    model_class: type,
    name_or_path: str | os.PathLike,
    *,
    config: BaseConfig | None = None,
    dtype: Any = None,
    device: Any = None,
    device_map: Any = None,
    attn_implementation: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build ``model_class`` from a checkpoint folder or hub id; see ``PreTrainedModel.from_pretrained``."""
    from .modeling_utils import check_attn_implementation

    check_loading_options(kwargs)
    dtype = _dtype_argument(dtype, kwargs.pop("torch_dtype", None))
    output_loading_info = bool(kwargs.pop("output_loading_info", False))
    use_safetensors = kwargs.pop("use_safetensors", None)
    quantization_config = kwargs.pop("quantization_config", None)
    if quantization_config is not None:
        from .quantization import check_bitsandbytes

        check_bitsandbytes(quantization_config)  # fail before reading any weights
    kwargs.pop("low_cpu_mem_usage", None)  # weights always stream into place
    hub_kwargs = split_hub_kwargs(kwargs)
    attn_implementation = check_attn_implementation(attn_implementation)
    target_device = resolve_device(device, device_map)
    folder = resolve_folder(name_or_path, **hub_kwargs)
    if config is None:
        config, config_dict = config_from_folder(model_class, folder, kwargs)
    else:
        if kwargs:
            config = config.replace(**kwargs)
        config_dict = config.to_dict()
    config.name_or_path = name_or_path
    infos = checkpoint_tensors(folder, use_safetensors)
    target_dtype = resolve_dtype(dtype, config_dict, infos)

    with torch.device("meta"):
        model = model_class(config)
    model.set_attn_implementation(attn_implementation)

    mapping, unexpected = match_keys(model, infos.keys(), model_class.checkpoint_prefix)
    expected = model.state_dict()
    missing = [k for k in expected if k not in set(mapping.values())]
    fresh = [k for k in missing if k.startswith(model_class.head_prefixes)] if model_class.head_prefixes else []
    missing = [k for k in missing if k not in fresh]
    mismatched = [
        f"{name}: checkpoint {list(infos[name].shape)} vs model {list(expected[key].shape)}"
        for name, key in mapping.items()
        if tuple(infos[name].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or mismatched:
        files = ", ".join(sorted({info.file.name for info in infos.values()}))
        lines = [f"the weights in {folder} ({files}) do not fit {model_class.__name__} with its config.json:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {_format_keys(missing)}")
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): {_format_keys(unexpected)}")
        if mismatched:
            lines.append(f"  wrong shape ({len(mismatched)}): {'; '.join(sorted(mismatched)[:20])}")
        raise CheckpointError("\n".join(lines))

    state: dict[str, torch.Tensor] = {}
    for info, tensor in iter_tensors((infos[n] for n in mapping), target_dtype, target_device):
        state[mapping[info.name]] = tensor
    model.load_state_dict(state, strict=False, assign=True)
    del state
    if fresh:
        _materialize_fresh(model, fresh, target_dtype, target_device)
        logger.warning(
            "%s: %s not in the checkpoint; initialised from scratch (train before use)",
            model_class.__name__,
            _format_keys(fresh),
        )
    if quantization_config is not None:
        from .quantization import apply_bitsandbytes

        target = target_device if target_device.type == "cuda" else torch.device("cuda")
        model = apply_bitsandbytes(model, quantization_config, target)
    model.eval()
    if output_loading_info:  # transformers' report; a strict load leaves only freshly initialised heads to list
        return model, {"missing_keys": sorted(fresh), "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    return model


# transformers ``from_pretrained`` options this loader does not implement, and what to do instead. They fail
# loudly: passed on as config overrides (transformers' rule for unknown keywords) they would be ignored silently.
UNSUPPORTED_LOADING_OPTIONS = {
    "max_memory": "siglip places the whole model on one device (device= or device_map=)",
    "offload_folder": "siglip does not offload weights to disk; load on one device",
    "offload_state_dict": "siglip does not offload weights; it streams them into place",
    "offload_buffers": "siglip does not offload weights; load on one device",
    "ignore_mismatched_sizes": "loading is strict; resize the checkpoint's tensors or change the config",
    "load_in_8bit": "pass quantization_config=siglip.BitsAndBytesConfig(load_in_8bit=True)",
    "load_in_4bit": "pass quantization_config=siglip.BitsAndBytesConfig(load_in_4bit=True)",
    "state_dict": "save the weights with save_pretrained and load that folder",
    "from_tf": "only PyTorch checkpoints (safetensors or pytorch_model.bin) are read",
    "from_flax": "only PyTorch checkpoints (safetensors or pytorch_model.bin) are read",
    "gguf_file": "only safetensors / pytorch_model.bin checkpoints are read",
    "variant": "only the default weight file names are read (model.safetensors, its index, pytorch_model.bin)",
    "tp_plan": "tensor parallelism is not implemented; use siglip train (DDP / FSDP) for multi-GPU training",
    "tp_size": "tensor parallelism is not implemented",
    "device_mesh": "tensor parallelism is not implemented",
    "key_mapping": "checkpoint names must be the hub names; convert the checkpoint first",
    "adapter_name": "load the adapter with peft (PeftModel.from_pretrained(model, adapter_folder))",
    "adapter_kwargs": "load the adapter with peft (PeftModel.from_pretrained(model, adapter_folder))",
    "proxies": "set HTTPS_PROXY in the environment (huggingface_hub honours it)",
    "weights_only": "weights are always read without unpickling code (weights_only=True)",
    "use_kernels": "hub kernels are not used; siglip.optimize(model) is the inference fast path",
    "kernel_config": "hub kernels are not used; siglip.optimize(model) is the inference fast path",
}


def check_loading_options(kwargs: dict[str, Any]) -> None:
    """Refuse transformers loading options we don't implement, naming each and the alternative."""
    given = [name for name in kwargs if name in UNSUPPORTED_LOADING_OPTIONS]
    if given:
        reasons = "; ".join(f"{name}: {UNSUPPORTED_LOADING_OPTIONS[name]}" for name in given)
        raise ValueError(f"from_pretrained() option(s) not supported by siglip: {reasons}")


def _dtype_argument(dtype: Any, torch_dtype: Any) -> Any:
    """``torch_dtype`` is the name transformers still accepts for ``dtype``."""
    if torch_dtype is None:
        return dtype
    if dtype is not None and dtype != torch_dtype:
        raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass dtype only")
    return torch_dtype


def _materialize_fresh(model: nn.Module, keys: list[str], dtype: torch.dtype | None, device: torch.device) -> None:
    """Give weights absent from the checkpoint (a new task head) real storage and their initial values."""
    modules = {k.rsplit(".", 1)[0] for k in keys}
    for name in sorted(modules):
        module = model.get_submodule(name)
        module.to_empty(device=device)
        if dtype is not None:
            module.to(dtype)
    model.reset_classifier()


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    if t.untyped_storage().nbytes() != t.numel() * t.element_size() or not t.is_contiguous():
        return t.contiguous().clone()
    return t


def save_pretrained(
    model: nn.Module,
    save_directory: str | os.PathLike,
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
    is_main_process: bool = True,
    safe_serialization: bool = True,
    max_shard_size: Any = None,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` atomically (temporary names, then rename).

    The keywords are transformers' (what PEFT, accelerate and Trainer pass): ``state_dict`` saves those tensors
    instead of the model's, ``is_main_process=False`` writes nothing (other ranks), ``max_shard_size`` is
    accepted and the weights stay in one file; only safetensors is written.
    """
    from safetensors.torch import save_file

    if not safe_serialization:
        raise ValueError("save_pretrained(safe_serialization=False): siglip writes safetensors only")
    save_directory = Path(save_directory)
    if not is_main_process:
        return save_directory
    save_directory.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share storage (views a user made, tied weights): give those their own copy.
    state = {k: _own_storage(v.detach()) for k, v in (state_dict or model.state_dict()).items()}
    tmp = save_directory / (SAFE_WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, save_directory / SAFE_WEIGHTS_NAME)
    save_model_config(model, save_directory)
    return save_directory


def save_model_config(model: nn.Module, save_directory: str | os.PathLike) -> Path:
    """Write the model's ``config.json``, naming its class (``architectures``) and weight dtype, as transformers."""
    config = model.config
    config.extra.pop("torch_dtype", None)
    config.extra["architectures"] = [type(model).__name__]
    config.extra["dtype"] = str(model.dtype).replace("torch.", "")
    return config.save_pretrained(save_directory)
