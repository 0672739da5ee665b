"""Running a folder written by ``siglip export onnx`` with ONNX Runtime, behind the model API the pipeline uses.

An export folder holds ``text_model.onnx`` and/or ``vision_model.onnx`` (one graph per tower), ``config.json``,
the tokenizer and preprocessor files, and ``onnx_export.json`` (how it was exported, ``logit_scale`` /
``logit_bias``, and the verification results). ``OnnxModel`` loads it and offers what ``siglip.pipeline`` and the
commands call on a model: ``config``, ``get_image_features``, ``get_text_features``, ``logit_scale``,
``logit_bias``, ``device``, ``dtype`` and ``eval()``; tensors go in and come out as torch tensors on the CPU, and the
graphs run through ``onnxruntime.InferenceSession`` only (no PyTorch weights are read).

Each graph's inputs are named as the tower's forward arguments (``input_ids`` [, ``attention_mask``];
``pixel_values`` [, ``pixel_attention_mask``, ``spatial_shapes``]) and its outputs are ``last_hidden_state`` and the
unnormalised embedding (``text_embeds`` / ``image_embeds``, the ``get_*_features`` value), or ``logits`` for an
exported classifier.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .auto import AutoConfig, AutoImageProcessor, AutoTokenizer
from .config import BaseConfig
from .files import (
    ONNX_EXPORT_INFO_NAME,
    Checkpoint,
    CheckpointError,
    is_onnx_export,
    read_json_object,
    resolve_folder,
    split_hub_kwargs,
)

EXPORT_INFO_FILE = ONNX_EXPORT_INFO_NAME
TOWER_FILES = {"text": "text_model.onnx", "vision": "vision_model.onnx"}
EMBEDDING_OUTPUTS = {"text": "text_embeds", "vision": "image_embeds"}
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)

# ONNX Runtime's type strings -> numpy dtypes (inputs are cast to what the graph declares)
_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("running ONNX exports needs onnxruntime: pip install 'siglip[onnx]'") from None
    return onnxruntime


def resolve_providers(providers: Any = None, device: Any = None) -> list[Any]:
    """ONNX Runtime execution providers: ``providers`` as given, else CUDA (then CPU) for a CUDA ``device``, else the
    CPU provider. Providers this onnxruntime build lacks are an error that lists the ones it has."""
    ort = import_onnxruntime()
    if providers is None:
        cuda = str(device).startswith("cuda") or (
            isinstance(device, int) and not isinstance(device, bool) and device >= 0
        )
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else list(DEFAULT_PROVIDERS)
    if isinstance(providers, str):
        providers = [providers]
    providers = list(providers)
    if not providers:
        raise ValueError("providers is empty: name at least one ONNX Runtime execution provider")
    available = ort.get_available_providers()
    names = [p[0] if isinstance(p, (tuple, list)) else p for p in providers]
    missing = [name for name in names if name not in available]
    if missing:
        raise ValueError(
            f"ONNX Runtime execution provider(s) {', '.join(map(str, missing))} not available in this onnxruntime "
            f"build (it has {', '.join(available)})"
        )
    return providers


class OnnxModel:
    """An exported SigLIP / SigLIP2 model run by ONNX Runtime, with the model API of ``siglip.pipeline``.

    Args:
        folder: a folder written by ``siglip.export_onnx`` / ``siglip export onnx``.
        providers: ONNX Runtime execution providers (default: the CPU provider).
        session_options: an ``onnxruntime.SessionOptions`` for both sessions.
    """

    device = torch.device("cpu")  # inputs and outputs are CPU tensors, whatever provider runs the graph
    dtype = torch.float32  # what callers feed; graphs exported in float16 get their inputs cast here

    def __init__(self, folder: str | os.PathLike, providers: Any = None, session_options: Any = None) -> None:
        ort = import_onnxruntime()
        folder = Path(folder)
        if not is_onnx_export(folder):
            raise CheckpointError(
                f"{folder} has no {EXPORT_INFO_FILE}: it is not a folder written by siglip export onnx"
            )
        self.folder = folder
        self.info = read_json_object(folder / EXPORT_INFO_FILE)
        try:
            self.config: BaseConfig = AutoConfig.from_dict(Checkpoint(folder, str(folder)).config_dict())
        except ValueError as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{folder / 'config.json'}: {e}") from None
        self.config.name_or_path = str(folder)
        self.providers = resolve_providers(providers)
        self.sessions: dict[str, Any] = {}
        for tower, file in TOWER_FILES.items():
            if (folder / file).is_file():
                self.sessions[tower] = ort.InferenceSession(
                    str(folder / file), sess_options=session_options, providers=self.providers
                )
        if not self.sessions:
            raise CheckpointError(f"{folder} has no {' or '.join(TOWER_FILES.values())}")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, providers: Any = None, **kwargs: Any) -> OnnxModel:
        """Load an export from a local folder or a hub id (hub options: revision, cache_dir, token, ...)."""
        session_options = kwargs.pop("session_options", None)
        folder = resolve_folder(
            name_or_path, patterns=["*.json", "*.onnx", "*.onnx.data", "*.model"], **split_hub_kwargs(kwargs)
        )
        if kwargs:
            raise TypeError(f"OnnxModel.from_pretrained() got unexpected keyword argument(s): {', '.join(kwargs)}")
        return cls(folder, providers=providers, session_options=session_options)

    def __repr__(self) -> str:
        towers = ", ".join(TOWER_FILES[t] for t in self.sessions)
        return f"OnnxModel({str(self.folder)!r}: {towers}; {self.info.get('dtype')}; providers {self.providers})"

    # -- what the pipeline and the commands read ---------------------------------------------------------------
    @property
    def name_or_path(self) -> str:
        return str(self.folder)

    @property
    def architecture(self) -> str:
        """The class that was exported (``SiglipModel``, ``Siglip2VisionModel``, a classifier, ...)."""
        return str(self.info.get("architecture", ""))

    def eval(self) -> OnnxModel:
        return self

    @property
    def logit_scale(self) -> torch.Tensor:
        """The joint model's learned temperature (log scale), as ``SiglipModel.logit_scale``."""
        return self._scalar("logit_scale")

    @property
    def logit_bias(self) -> torch.Tensor:
        return self._scalar("logit_bias")

    def _scalar(self, name: str) -> torch.Tensor:
        if self.info.get(name) is None:  # AttributeError: hasattr() is how the pipeline asks for a joint model
            raise AttributeError(f"this ONNX export ({self.architecture}) has no {name}: it is not a joint model")
        return torch.tensor([float(self.info[name])])

    def _tower_config(self, tower: str) -> Any:
        return getattr(self.config, f"{tower}_config", self.config)

    def input_names(self, tower: str) -> list[str]:
        return [i.name for i in self._session(tower).get_inputs()]

    def _session(self, tower: str) -> Any:
        if tower not in self.sessions:
            raise ValueError(f"this ONNX export ({self.architecture}) has no {TOWER_FILES[tower]}")
        return self.sessions[tower]

    # -- running -------------------------------------------------------------------------------------------------
    def run(self, tower: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Run one tower's graph ("text" or "vision") on named inputs (tensors or arrays) -> its outputs by name.

        Inputs are cast to the dtypes the graph declares; missing or unknown names and sizes that differ from a
        fixed dimension of the graph are errors that name them.
        """
        session = self._session(tower)
        feed = {}
        declared = session.get_inputs()
        names = [i.name for i in declared]
        unknown = sorted(set(inputs) - set(names))
        if unknown:
            raise ValueError(f"{TOWER_FILES[tower]} takes {', '.join(names)}; got unexpected {', '.join(unknown)}")
        for spec in declared:
            if spec.name not in inputs or inputs[spec.name] is None:
                raise ValueError(f"{TOWER_FILES[tower]} needs {spec.name} (its inputs: {', '.join(names)})")
            value = inputs[spec.name]
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            array = np.ascontiguousarray(array, dtype=_ORT_TYPES.get(spec.type, array.dtype))
            fixed = [(axis, size) for axis, size in enumerate(spec.shape) if isinstance(size, int)]
            if array.ndim != len(spec.shape) or any(array.shape[axis] != size for axis, size in fixed):
                want = tuple(s if isinstance(s, int) else str(s) for s in spec.shape)
                raise ValueError(f"{TOWER_FILES[tower]}: {spec.name} has shape {array.shape}, the graph takes {want}")
            feed[spec.name] = array
        outputs = session.run(None, feed)
        return {spec.name: out for spec, out in zip(session.get_outputs(), outputs, strict=True)}

    def _embedding(self, tower: str, inputs: dict[str, Any]) -> torch.Tensor:
        name = EMBEDDING_OUTPUTS[tower]
        outputs = self.run(tower, inputs)
        if name not in outputs:
            raise ValueError(f"{TOWER_FILES[tower]} of this export ({self.architecture}) has no {name} output")
        return torch.from_numpy(outputs[name]).float()

    def get_text_features(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Unnormalised text embeddings (B, P), as ``SiglipModel.get_text_features``.

        A graph exported without ``attention_mask`` (its tokenizer returns none, as the hub SigLIP tokenizers) takes
        an all-ones mask or none; a graph with one gets all ones when none is given.
        """
        from .modeling_siglip import check_token_ids

        kwargs.pop("return_dict", None)
        if kwargs:
            raise TypeError(f"get_text_features() got unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        if position_ids is not None:
            raise ValueError("ONNX exports take no position_ids (positions are 0..L-1, as the model's default)")
        if input_ids is None:
            raise ValueError("get_text_features needs input_ids")
        input_ids = torch.as_tensor(input_ids)
        if input_ids.dtype.is_floating_point or input_ids.dim() != 2:
            raise ValueError(
                f"input_ids must be an integer tensor of shape (batch, sequence), got {input_ids.dtype} "
                f"{tuple(input_ids.shape)}"
            )
        check_token_ids(input_ids, self._tower_config("text").vocab_size)
        inputs: dict[str, Any] = {"input_ids": input_ids}
        if "attention_mask" in self.input_names("text"):
            inputs["attention_mask"] = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        elif attention_mask is not None and not bool((torch.as_tensor(attention_mask) != 0).all()):
            raise ValueError(
                "this export's text_model.onnx takes no attention_mask (its tokenizer returns none), but the mask "
                "given masks some tokens; pad to the model's length instead, or export from a tokenizer that returns "
                "an attention mask"
            )
        return self._embedding("text", inputs)

    def get_image_features(
        self,
        pixel_values: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Unnormalised image embeddings (B, D), as ``get_image_features`` of the exported model (NaFlex: with
        ``pixel_attention_mask`` and ``spatial_shapes``). Inputs are checked as the PyTorch model checks them."""
        from .modeling_siglip import check_pixel_values
        from .modeling_siglip2 import check_naflex_inputs

        kwargs.pop("return_dict", None)
        if kwargs:
            raise TypeError(f"get_image_features() got unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        if interpolate_pos_encoding:
            raise ValueError(
                "ONNX exports of FixRes models take the trained image size only (no interpolate_pos_encoding)"
            )
        config = self._tower_config("vision")
        if "spatial_shapes" in self.input_names("vision"):
            spatial_shapes = check_naflex_inputs(
                pixel_values, pixel_attention_mask, spatial_shapes, config, "OnnxModel"
            )
            if pixel_attention_mask is None:  # nothing padded (checked above)
                pixel_attention_mask = torch.ones(pixel_values.shape[:2], dtype=torch.int32)
            inputs = {
                "pixel_values": pixel_values,
                "pixel_attention_mask": pixel_attention_mask,
                "spatial_shapes": spatial_shapes,
            }
        else:
            if pixel_attention_mask is not None or spatial_shapes is not None:
                raise ValueError("this export's vision_model.onnx is FixRes: it takes pixel_values only")
            check_pixel_values(pixel_values, "OnnxModel", config.num_channels)
            inputs = {"pixel_values": pixel_values}
        return self._embedding("vision", inputs)


def load_onnx_export(
    checkpoint: Checkpoint | str | os.PathLike,
    dtype: Any = None,
    device: Any = None,
    device_map: Any = None,
    **kwargs: Any,
) -> tuple[OnnxModel, Any, Any]:
    """(OnnxModel, tokenizer, image processor) from an export folder: what ``pipeline(model=DIR)`` loads.

    ``dtype`` may only be None / "auto" / float32 (the graphs fix their own); ``device`` "cuda" picks the CUDA
    provider unless ``providers=`` is given.
    """
    checkpoint = Checkpoint.resolve(checkpoint)
    folder = checkpoint.folder
    providers = kwargs.pop("providers", None)
    session_options = kwargs.pop("session_options", None)
    if kwargs:
        raise TypeError(f"an ONNX export takes no {', '.join(sorted(kwargs))} (only providers=, session_options=)")
    if dtype not in (None, "auto", "float32", torch.float32):
        raise ValueError(f"{folder} is an ONNX export: its dtype is fixed at export time ({dtype} was asked for)")
    if device is None and device_map not in (None, "auto"):
        device = device_map
    if not (device is None or isinstance(device, int) or str(device) == "cpu" or str(device).startswith("cuda")):
        raise ValueError(f"{folder} is an ONNX export: it runs on cpu, or on cuda through providers=, not {device}")
    model = OnnxModel(folder, providers=resolve_providers(providers, device), session_options=session_options)
    if model.info.get("logit_scale") is None:
        raise ValueError(
            f"{folder} is an ONNX export of {model.architecture}: the pipeline and the commands need a "
            "joint model (SiglipModel / Siglip2Model) export"
        )
    return model, AutoTokenizer.from_pretrained(checkpoint), AutoImageProcessor.from_pretrained(checkpoint)
