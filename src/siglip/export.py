"""ONNX export of every SigLIP / SigLIP2 model class, checked against PyTorch before the folder appears.

``export_onnx(model_or_path, output_dir)`` writes one graph per tower through ``torch.onnx.export(dynamo=True)``:

* ``text_model.onnx``: ``input_ids`` (B, L) [+ ``attention_mask`` (B, L) when the tokenizer returns one] ->
  ``last_hidden_state`` (B, L, D), ``text_embeds`` (B, P); B and L (up to the position table) are dynamic.
* ``vision_model.onnx``: FixRes ``pixel_values`` (B, C, S, S), or NaFlex ``pixel_values`` (B, N, C*p*p),
  ``pixel_attention_mask`` (B, N), ``spatial_shapes`` (B, 2) with B and N dynamic -> ``last_hidden_state`` and
  ``image_embeds`` (B, D); a ``*ForImageClassification`` model gives ``logits`` (B, num_labels) instead.

The embeddings are the unnormalised ``get_*_features`` values (the towers' ``pooler_output``). Beside the graphs go
``config.json``, the tokenizer and preprocessor files and ``onnx_export.json`` (opset, dtype, quantization,
``logit_scale`` / ``logit_bias``, input and output names, the verification results), so the folder describes
itself and runs without PyTorch weights (``siglip.onnx_backend.OnnxModel``).

Every graph is run by ONNX Runtime (CPU provider) on inputs other than the traced ones (other batch sizes, other
text lengths and padding, NaFlex grids including 1 x N and N x 1) and compared with the PyTorch model: max abs
difference <= 1e-4 in float32, embedding cosine >= 0.99 to float32 PyTorch for float16 and int8. The folder is
written under a temporary name and renamed into place only when every check passed; any failure removes it.

The optional dependencies are the ``onnx`` extra: onnx, onnxscript (torch's exporter) and onnxruntime.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import first_line
from .files import Checkpoint, is_onnx_export, resolve_folder
from .modeling_siglip import SiglipForImageClassification, SiglipModel, SiglipTextModel, SiglipVisionModel
from .modeling_siglip2 import Siglip2VisionModel
from .onnx_backend import EMBEDDING_OUTPUTS, EXPORT_INFO_FILE, TOWER_FILES, OnnxModel

log = logging.getLogger("siglip")

DTYPES = {"float32": torch.float32, "float16": torch.float16}
QUANTIZATIONS = ("int8",)
# torch.onnx's dynamo exporter writes opset 18 and newer. From opset 23 it maps SDPA to the ONNX Attention op, whose
# ONNX Runtime kernel (1.32) rejects a (B, 1, 1, L) padding mask: 22 is the newest opset whose graphs run.
MIN_OPSET, MAX_OPSET = 18, 22
MAX_ABS_DIFF = 1e-4  # float32 graph vs PyTorch, every output
MIN_COSINE = 0.99  # float16 / int8 embedding vs float32 PyTorch, every row
# Tokenizer and preprocessing files copied next to the graphs (those the source folder has).
PREPROCESSING_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "spiece.model",
    "added_tokens.json",
    "preprocessor_config.json",
    "processor_config.json",
)
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "spiece.model")


class ExportError(ValueError):
    """An export that could not be written or failed its check against PyTorch; no output folder is left behind."""


# ------------------------------------------------------------------------------------------------------------
# The graphs: each tower with named inputs and (last_hidden_state, embedding) outputs
# ------------------------------------------------------------------------------------------------------------


class TextGraph(nn.Module):
    """(input_ids [, attention_mask]) -> (last_hidden_state (B, L, D), text_embeds (B, P))."""

    def __init__(self, tower: SiglipTextModel):
        super().__init__()
        self.tower = tower

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tower(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output


class FixResGraph(nn.Module):
    """pixel_values (B, C, S, S) -> (last_hidden_state (B, N, D), image_embeds (B, D) or classifier logits)."""

    def __init__(self, tower: SiglipVisionModel, classifier: SiglipForImageClassification | None = None):
        super().__init__()
        self.tower = tower
        # A classifier's head: its linear layer on its pooling of the patches (mean; NaFlex: masked mean).
        self.classifier = classifier.classifier if classifier is not None else None
        self._pool = classifier._pool if classifier is not None else None

    def embedding(self, out: Any, pixel_attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.classifier is None:
            return out.pooler_output
        return self.classifier(self._pool(out.last_hidden_state, pixel_attention_mask=pixel_attention_mask))

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tower(pixel_values=pixel_values)
        return out.last_hidden_state, self.embedding(out, None)


class NaFlexGraph(FixResGraph):
    """(pixel_values (B, N, C*p*p), pixel_attention_mask (B, N), spatial_shapes (B, 2)) -> as ``FixResGraph``."""

    def forward(  # type: ignore[override]
        self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor, spatial_shapes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tower(
            pixel_values=pixel_values, pixel_attention_mask=pixel_attention_mask, spatial_shapes=spatial_shapes
        )
        return out.last_hidden_state, self.embedding(out, pixel_attention_mask)


@dataclass
class Tower:
    """One graph to export: the module, traced inputs, dynamic dimensions, output names and the check inputs."""

    name: str  # "text" or "vision"
    graph: nn.Module
    example: dict[str, torch.Tensor]
    dynamic_shapes: dict[str, dict[int, Any]]
    outputs: tuple[str, str]
    checks: list[dict[str, torch.Tensor]] = field(default_factory=list)

    @property
    def file(self) -> str:
        return TOWER_FILES[self.name]


def _text_inputs(vocab: int, batch: int, length: int, masks: list[str] | None, seed: int) -> dict[str, torch.Tensor]:
    """Random ids; ``masks`` per row: "full", "right" (second half padded) or "left" (first half padded)."""
    g = torch.Generator().manual_seed(seed)
    inputs = {"input_ids": torch.randint(0, vocab, (batch, length), generator=g)}
    if masks is not None:
        mask = torch.ones(batch, length, dtype=torch.int64)
        half = max(length // 2, 1)
        for row, kind in enumerate(masks):
            if kind == "right":
                mask[row, half:] = 0
            elif kind == "left":
                mask[row, : length - half] = 0
        inputs["attention_mask"] = mask
    return inputs


def text_tower(tower: SiglipTextModel, with_mask: bool) -> Tower:
    """The text graph, traced on 2 x L ids, checked on 1 and 3 rows (padded right and left) and a shorter L."""
    config = tower.config
    L, vocab = config.max_position_embeddings, config.vocab_size
    batch, length = torch.export.Dim("batch", min=1, max=1 << 16), torch.export.Dim("sequence", min=1, max=L)
    names = ["input_ids", "attention_mask"] if with_mask else ["input_ids"]

    def inputs(b: int, n: int, masks: list[str], seed: int) -> dict[str, torch.Tensor]:
        return _text_inputs(vocab, b, n, masks if with_mask else None, seed)

    return Tower(
        "text",
        TextGraph(tower),
        inputs(2, L, ["full", "right"], 0),
        {name: {0: batch, 1: length} for name in names},
        ("last_hidden_state", EMBEDDING_OUTPUTS["text"]),
        [
            inputs(1, L, ["full"], 1),
            inputs(3, L, ["full", "right", "left"], 2),
            inputs(2, max(L // 2 + 1, 1), ["right", "full"], 3),
        ],
    )


def _naflex_inputs(shapes: list[tuple[int, int]], length: int, patch_dim: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.zeros(len(shapes), length, patch_dim)
    mask = torch.zeros(len(shapes), length, dtype=torch.int32)
    for row, (h, w) in enumerate(shapes):
        pixels[row, : h * w] = torch.rand(h * w, patch_dim, generator=g) * 2 - 1
        mask[row, : h * w] = 1
    return {"pixel_values": pixels, "pixel_attention_mask": mask, "spatial_shapes": torch.tensor(shapes)}


def vision_tower(tower: SiglipVisionModel, classifier: SiglipForImageClassification | None = None) -> Tower:
    """The vision graph: FixRes traced on 2 images and checked on 1 and 3; NaFlex traced on 2 images of 24 patches
    and checked on other batch sizes and patch counts, with 1 x N and N x 1 grids and grids larger than the learned
    position grid."""
    config = tower.config
    if classifier is None and not tower.use_head:
        raise ExportError("the vision tower has no head (vision_use_head=False): it has no image embedding to export")
    outputs = ("last_hidden_state", "logits" if classifier is not None else EMBEDDING_OUTPUTS["vision"])
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    if isinstance(tower, Siglip2VisionModel):
        patch_dim = config.num_channels * config.patch_size**2
        patches = torch.export.Dim("patches", min=1, max=1 << 20)
        return Tower(
            "vision",
            NaFlexGraph(tower, classifier),
            _naflex_inputs([(4, 6), (3, 5)], 24, patch_dim, 0),
            {
                "pixel_values": {0: batch, 1: patches},
                "pixel_attention_mask": {0: batch, 1: patches},
                "spatial_shapes": {0: batch},
            },
            outputs,
            [
                _naflex_inputs([(1, 7)], 7, patch_dim, 1),
                _naflex_inputs([(1, 40), (40, 1), (5, 7)], 40, patch_dim, 2),
                _naflex_inputs([(8, 8), (2, 30)], 64, patch_dim, 3),
            ],
        )

    def pixels(b: int, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        size = config.image_size
        return {"pixel_values": torch.rand(b, config.num_channels, size, size, generator=g) * 2 - 1}

    return Tower(
        "vision",
        FixResGraph(tower, classifier),
        pixels(2, 0),
        {"pixel_values": {0: batch}},
        outputs,
        [pixels(1, 1), pixels(3, 2)],
    )


def towers_of(model: nn.Module, text_mask: bool) -> list[Tower]:
    """The graphs a model exports: both towers of a joint model, one of a tower model, the classifier's vision graph."""
    if isinstance(model, SiglipForImageClassification):
        return [vision_tower(model.vision_model, model)]
    if isinstance(model, SiglipModel):
        return [text_tower(model.text_model, text_mask), vision_tower(model.vision_model)]
    if isinstance(model, SiglipTextModel):
        return [text_tower(model, text_mask)]
    if isinstance(model, SiglipVisionModel):
        return [vision_tower(model)]
    raise ExportError(
        f"export_onnx exports siglip models (SiglipModel, Siglip2Model, their text and vision towers and "
        f"*ForImageClassification), got {type(model).__module__}.{type(model).__name__}"
        + (
            " (merge a PEFT model's adapters with merge_and_unload() first)"
            if hasattr(model, "merge_and_unload")
            else ""
        )
    )


# ------------------------------------------------------------------------------------------------------------
# Export, quantization, verification
# ------------------------------------------------------------------------------------------------------------


def _import_dependencies() -> dict[str, str]:
    """The onnx extra's packages (their versions), or an ImportError naming the extra."""
    versions = {}
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            module = __import__(name)
        except ImportError:
            raise ImportError(
                f"ONNX export needs onnx, onnxscript and onnxruntime: pip install 'siglip[onnx]' ({name} is missing)"
            ) from None
        versions[name] = getattr(module, "__version__", "?")
    return versions


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's and the quantizer's warnings and info logs (progress is ours to report)."""
    names = ("torch.onnx", "onnxscript", "onnx_ir", "")  # "" = root: onnxruntime.quantization logs there
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def default_opset() -> int:
    """The opset torch.onnx's exporter writes by default, within the range whose graphs run."""
    from torch.onnx import _constants

    return min(max(int(getattr(_constants, "ONNX_DEFAULT_OPSET", MIN_OPSET)), MIN_OPSET), MAX_OPSET)


def export_graph(tower: Tower, path: Path, opset: int) -> None:
    """``torch.onnx.export(dynamo=True)`` of one tower to ``path`` (weights inside the file below 2 GB)."""
    graph = tower.graph.eval()
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                graph,
                (),
                None,
                kwargs=tower.example,
                dynamic_shapes=tower.dynamic_shapes,
                dynamo=True,
                opset_version=opset,
                input_names=list(tower.example),
                output_names=list(tower.outputs),
                verbose=False,
                report=False,
            )
            program.save(str(path))
    except Exception as e:  # the exporter raises many types; the first line names the unsupported part
        raise ExportError(f"torch.onnx.export failed for the {tower.name} tower: {first_line(e)}") from e


def quantize_int8(path: Path) -> None:
    """Dynamic int8 quantization of a float32 graph in place (onnxruntime.quantization.quantize_dynamic: int8
    weights per output channel, activations quantized at run time).

    Weights use 7 of their 8 bits (``reduce_range``): on x86 CPUs without VNNI, ONNX Runtime's u8 x s8 kernels
    saturate their 16-bit intermediate sums with full-range weights. Measured on a random SigLIP base vision tower on
    this project's AVX2 machine: full range, image embedding cosine 0.975 to float32; 7-bit, 0.9997 (and faster than
    uint8 weights, which are exact to 0.9998 but take ORT's slower u8 x u8 path).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = path.with_name(path.stem + ".int8.onnx")
    with _quiet_exporter():
        quantize_dynamic(str(path), str(target), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    os.replace(target, path)
    Path(str(path) + ".data").unlink(missing_ok=True)  # a > 2 GB float32 graph's weights, now inside the int8 file


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.double().flatten(1), b.double().flatten(1), dim=-1).min())


def verify_tower(runtime: OnnxModel, tower: Tower, reference: nn.Module, dtype: str, quantize: str | None) -> dict:
    """Run the exported graph in ONNX Runtime on ``tower.checks`` and compare with ``reference`` (the float32 graph
    module in PyTorch). Returns the measured differences; raises ExportError when they exceed the bounds."""
    exact = dtype == "float32" and quantize is None
    diffs = dict.fromkeys(tower.outputs, 0.0)
    cosine = 1.0
    for inputs in tower.checks:
        with torch.no_grad():
            want = dict(zip(tower.outputs, reference(**inputs), strict=True))
        try:
            got = runtime.run(tower.name, inputs)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ExportError(f"ONNX Runtime could not run {tower.file}: {first_line(e)}") from e
        for name in tower.outputs:
            value = torch.from_numpy(got[name]).float()
            if value.shape != want[name].shape:
                raise ExportError(
                    f"{tower.file}: {name} has shape {tuple(value.shape)}, PyTorch gives "
                    f"{tuple(want[name].shape)} (inputs {_describe(inputs)})"
                )
            diffs[name] = max(diffs[name], float((value - want[name]).abs().max()))
        cosine = min(cosine, _cosine(torch.from_numpy(got[tower.outputs[1]]).float(), want[tower.outputs[1]]))
    result = {
        "inputs": [_describe(inputs) for inputs in tower.checks],
        "max_abs_diff": diffs,
        "min_cosine": cosine,
        "criterion": f"max abs diff <= {MAX_ABS_DIFF:g}" if exact else f"{tower.outputs[1]} cosine >= {MIN_COSINE}",
    }
    if exact and max(diffs.values()) > MAX_ABS_DIFF:
        worst = max(diffs, key=diffs.get)
        raise ExportError(
            f"{tower.file} differs from PyTorch: max abs difference of {worst} is {diffs[worst]:.3g} > {MAX_ABS_DIFF:g}"
        )
    if not exact and cosine < MIN_COSINE:
        raise ExportError(
            f"{tower.file} ({dtype}{', ' + quantize if quantize else ''}) differs from float32 PyTorch: "
            f"{tower.outputs[1]} cosine {cosine:.4f} < {MIN_COSINE}"
        )
    return result


def _describe(inputs: dict[str, torch.Tensor]) -> str:
    parts = [f"{name} {tuple(value.shape)}" for name, value in inputs.items()]
    if "spatial_shapes" in inputs:
        parts.append("grids " + " ".join(f"{h}x{w}" for h, w in inputs["spatial_shapes"].tolist()))
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------------------------
# The folder
# ------------------------------------------------------------------------------------------------------------


def check_options(opset: Any, dtype: Any, quantize: Any) -> int:
    """Validate the export options (before anything is loaded or written); returns the opset to use."""
    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r} is not supported; use {' or '.join(DTYPES)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ExportError(f"quantize {quantize!r} is not supported; use {' or '.join(QUANTIZATIONS)} (or none)")
    if quantize is not None and dtype != "float32":
        raise ExportError(f"quantize={quantize!r} quantizes the float32 graph: use dtype float32 with it, not {dtype}")
    if opset is None:
        return default_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"opset {opset!r} is not supported; use {MIN_OPSET}..{MAX_OPSET} (torch.onnx's exporter writes {MIN_OPSET} "
            f"and newer; from 23 its attention graphs don't run in ONNX Runtime)"
        )
    return opset


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise ExportError(f"output {output} is a file; give a folder")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise ExportError(
                f"output folder {output} exists and is not empty; pass --overwrite (overwrite=True) to "
                "replace an earlier export"
            )
        if not is_onnx_export(output):
            raise ExportError(
                f"output folder {output} is not an earlier ONNX export ({EXPORT_INFO_FILE} missing): "
                "overwrite replaces exports only; give a new folder"
            )


def _load(model_or_path: Any) -> tuple[nn.Module, Path | None]:
    """The model to export (float32 on the CPU) and the folder its tokenizer and preprocessing come from."""
    from .auto import AutoModel, AutoModelForImageClassification

    if isinstance(model_or_path, (str, os.PathLike)):
        folder = resolve_folder(model_or_path)
        if is_onnx_export(folder):
            raise ExportError(f"{folder} is already an ONNX export; export from the PyTorch checkpoint folder")
        architectures = Checkpoint(folder, str(model_or_path)).config_dict().get("architectures") or []
        classifier = any(str(a).endswith("ForImageClassification") for a in architectures)
        auto = AutoModelForImageClassification if classifier else AutoModel
        return auto.from_pretrained(folder, dtype=torch.float32, device="cpu"), folder
    if not isinstance(model_or_path, nn.Module):
        raise ExportError(
            f"export_onnx needs a siglip model or a checkpoint folder / hub id, got {type(model_or_path).__name__}"
        )
    towers_of(model_or_path, False)  # the class check, before any copy
    model = model_or_path
    params = list(model.parameters())
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in params):
        model = copy.deepcopy(model).to("cpu", torch.float32)  # the float32 reference; the caller's model is kept
    source = getattr(model, "name_or_path", "") or None
    folder = None
    if source is not None:
        try:
            folder = resolve_folder(source)
        except (OSError, ValueError) as e:
            log.warning("tokenizer and preprocessing files not copied: %s", first_line(e))
    return model, folder


def _copy_preprocessing(source: Path | None, target: Path) -> list[str]:
    copied = []
    for name in PREPROCESSING_FILES if source is not None else ():
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
            copied.append(name)
    return copied


def _tokenizer_returns_mask(folder: Path) -> bool:
    """Whether the folder's tokenizer returns an attention mask (``model_input_names``); no tokenizer: no mask, the
    hub SigLIP convention."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return False
    from .auto import AutoTokenizer

    return "attention_mask" in AutoTokenizer.from_pretrained(folder).model_input_names


def export_onnx(
    model_or_path: Any,
    output_dir: str | os.PathLike,
    *,
    opset: int | None = None,
    dtype: str = "float32",
    quantize: str | None = None,
    overwrite: bool = False,
    preprocessing: str | os.PathLike | None = None,
) -> Path:
    """Export a model to ONNX (one graph per tower), check every graph against PyTorch, and write the folder.

    Args:
        model_or_path: a loaded siglip model (``SiglipModel``, ``Siglip2Model``, a text or vision tower, a
            ``*ForImageClassification``), or a checkpoint folder / hub id.
        output_dir: the folder to create. It must not exist or be empty, unless ``overwrite`` and it holds an
            earlier export.
        opset: ONNX opset, 18..22 (default: torch.onnx's default).
        dtype: "float32" or "float16" (weights and computation; the float16 graphs take and return float16).
        quantize: "int8": dynamic int8 quantization of the float32 graphs (onnxruntime.quantization).
        overwrite: replace an earlier export in ``output_dir``.
        preprocessing: folder or hub id to copy the tokenizer and preprocessor files from (default: where the model
            was loaded from).

    Returns:
        The output folder: ``text_model.onnx`` / ``vision_model.onnx``, ``config.json``, the preprocessing files
        and ``onnx_export.json``.

    Raises:
        ExportError: bad options, a model that can't be exported, or a graph that fails its check (the folder is
            then not created). ImportError: the ``onnx`` extra is missing.
    """
    opset = check_options(opset, dtype, quantize)
    output = Path(output_dir).expanduser()
    _check_output(output, overwrite)
    versions = _import_dependencies()
    model, source = _load(model_or_path)
    if preprocessing is not None:
        source = resolve_folder(preprocessing)
    if source is not None and output.resolve() == source.resolve():
        raise ExportError(f"output folder {output} is the model's own folder; give a new folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f"{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    was_training = model.training
    try:
        model.eval()
        _write_export(model, source, tmp, opset, dtype, quantize, versions)
        _move_into_place(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        model.train(was_training)
    log.info("wrote %s", output)
    return output


def _write_export(
    model: nn.Module,
    source: Path | None,
    folder: Path,
    opset: int,
    dtype: str,
    quantize: str | None,
    versions: dict[str, str],
) -> None:
    from .version import __version__

    copied = _copy_preprocessing(source, folder)
    if not copied:
        log.warning(
            "no tokenizer or preprocessor files copied: pass preprocessing=FOLDER to make the export self-describing"
        )
    text_mask = _tokenizer_returns_mask(folder)
    towers = towers_of(model, text_mask)  # float32: the references, and the graphs unless dtype says otherwise
    model.save_config(folder)
    graphs = towers
    if dtype != "float32":  # the same graphs over a converted copy's modules, traced on inputs of that dtype
        graphs = towers_of(copy.deepcopy(model).to(DTYPES[dtype]), text_mask)
        for graph in graphs:
            graph.example = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in graph.example.items()}
    for graph in graphs:
        log.info("exporting %s (opset %d, %s%s)", graph.file, opset, dtype, f", {quantize}" if quantize else "")
        export_graph(graph, folder / graph.file, opset)
        if quantize == "int8":
            quantize_int8(folder / graph.file)
    info = {
        "format": "siglip-onnx-export",
        "architecture": type(model).__name__,
        "model_type": model.config.model_type,
        "source": getattr(model, "name_or_path", "") or None,
        "opset": opset,
        "dtype": dtype,
        "quantize": quantize,
        "logit_scale": float(model.logit_scale.detach().float().reshape(-1)[0])
        if hasattr(model, "logit_scale")
        else None,
        "logit_bias": float(model.logit_bias.detach().float().reshape(-1)[0]) if hasattr(model, "logit_bias") else None,
        "preprocessing_files": copied,
        "versions": {"siglip": __version__, "torch": torch.__version__, **versions},
    }
    _write_json(folder / EXPORT_INFO_FILE, info)
    runtime = OnnxModel(folder)  # the CPU provider: the check runs what `--model DIR` runs by default
    info["graphs"] = {}
    info["verification"] = {}
    for tower in towers:
        session = runtime.sessions[tower.name]
        info["graphs"][tower.file] = {
            "inputs": {i.name: [i.type, i.shape] for i in session.get_inputs()},
            "outputs": {o.name: [o.type, o.shape] for o in session.get_outputs()},
        }
        result = verify_tower(runtime, tower, tower.graph, dtype, quantize)
        info["verification"][tower.file] = result
        log.info(
            "checked %s against PyTorch on %d input sets: max abs diff %s, min cosine %.6f",
            tower.file,
            len(tower.checks),
            ", ".join(f"{k} {v:.2g}" for k, v in result["max_abs_diff"].items()),
            result["min_cosine"],
        )
    _write_json(folder / EXPORT_INFO_FILE, info)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _move_into_place(tmp: Path, output: Path) -> None:
    """Rename the finished folder to ``output``; an earlier export there is moved aside first, then deleted."""
    old = None
    if output.is_dir() and any(output.iterdir()):
        old = output.with_name(f"{output.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(output, old)
    elif output.is_dir():
        output.rmdir()
    os.replace(tmp, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
