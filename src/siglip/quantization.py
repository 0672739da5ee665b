"""Quantized inference: bitsandbytes 4/8-bit loading on CUDA (as in the seed document) and int8 weights on CPU.

* ``BitsAndBytesConfig`` + ``from_pretrained(..., quantization_config=...)``: the linear layers of both towers
  become bitsandbytes ``Linear4bit`` / ``Linear8bitLt`` modules on the GPU. It needs CUDA and the
  ``bitsandbytes`` package; without either, loading fails with one line naming what is missing.
* ``quantize_int8(model)``: int8 weight quantization of every linear layer through torchao (the ``quant``
  extra), for CPU and GPU inference with a smaller memory footprint.

Both keep the attention-pooling head's ``nn.MultiheadAttention`` projections and the classifier in full
precision: they are tiny and sensitive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class BitsAndBytesConfig:
    """The subset of transformers' ``BitsAndBytesConfig`` that applies to SigLIP (same names and defaults)."""

    load_in_8bit: bool = False
    load_in_4bit: bool = False
    llm_int8_threshold: float = 6.0
    llm_int8_skip_modules: list[str] | None = None
    bnb_4bit_compute_dtype: Any = None
    bnb_4bit_quant_type: str = "fp4"
    bnb_4bit_use_double_quant: bool = False
    bnb_4bit_quant_storage: Any = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("BitsAndBytesConfig: load_in_4bit and load_in_8bit can't both be True")
        if not (self.load_in_4bit or self.load_in_8bit):
            raise ValueError("BitsAndBytesConfig: set load_in_4bit=True or load_in_8bit=True")
        if self.bnb_4bit_quant_type not in ("fp4", "nf4"):
            raise ValueError(f"bnb_4bit_quant_type must be 'fp4' or 'nf4', got {self.bnb_4bit_quant_type!r}")
        if isinstance(self.bnb_4bit_compute_dtype, str):
            self.bnb_4bit_compute_dtype = getattr(torch, self.bnb_4bit_compute_dtype)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        for key in ("bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"):
            if isinstance(out[key], torch.dtype):
                out[key] = str(out[key]).replace("torch.", "")
        return {**out, "quant_method": "bitsandbytes", **self.extra}


def check_bitsandbytes(config: BitsAndBytesConfig) -> Any:
    """The bitsandbytes module, or one line saying what is missing (CUDA, the package, or both)."""
    missing = []
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (none is available here)")
    try:
        import bitsandbytes
    except ImportError:
        bitsandbytes = None
        missing.append("the bitsandbytes package (pip install bitsandbytes)")
    if missing:
        mode = "load_in_4bit" if config.load_in_4bit else "load_in_8bit"
        raise ValueError(f"quantization_config={type(config).__name__}({mode}=True) needs {' and '.join(missing)}")
    return bitsandbytes


def _linear_layers(model: nn.Module, skip: list[str]) -> list[tuple[nn.Module, str, nn.Linear]]:
    found = []
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is nn.Linear and not any(part in full.split(".") for part in skip):
                found.append((module, child_name, child))
    return found


def apply_bitsandbytes(model: nn.Module, config: BitsAndBytesConfig, device: torch.device) -> nn.Module:
    """Swap the linear layers for bitsandbytes ones and move the model to ``device`` (quantizing on the way)."""
    bnb = check_bitsandbytes(config)
    skip = list(config.llm_int8_skip_modules or []) + ["classifier"]
    compute_dtype = config.bnb_4bit_compute_dtype or torch.float32
    # the layer and its weight must agree on how the 4-bit blocks are stored
    four_bit = dict(
        compress_statistics=config.bnb_4bit_use_double_quant,
        quant_type=config.bnb_4bit_quant_type,
        quant_storage=config.bnb_4bit_quant_storage or torch.uint8,
    )
    for parent, name, linear in _linear_layers(model, skip):
        if config.load_in_4bit:
            new = bnb.nn.Linear4bit(
                linear.in_features,
                linear.out_features,
                bias=linear.bias is not None,
                compute_dtype=compute_dtype,
                **four_bit,
            )
            new.weight = bnb.nn.Params4bit(linear.weight.data.float(), requires_grad=False, **four_bit)
        else:
            new = bnb.nn.Linear8bitLt(
                linear.in_features,
                linear.out_features,
                bias=linear.bias is not None,
                has_fp16_weights=False,
                threshold=config.llm_int8_threshold,
            )
            new.weight = bnb.nn.Int8Params(linear.weight.data.half(), requires_grad=False, has_fp16_weights=False)
        if linear.bias is not None:
            new.bias = nn.Parameter(linear.bias.data.to(compute_dtype), requires_grad=False)
        setattr(parent, name, new)
    model.to(device)  # bitsandbytes quantizes the weights when they reach the GPU
    model.quantization_config = config
    return model


def quantize_int8(model: nn.Module) -> nn.Module:
    """Int8 weight-only quantization of every linear layer (torchao), in place; returns the model.

    Embeddings stay within cosine 0.99 of the full-precision ones (see tests/test_fast_paths.py and the
    benchmark table for speed and memory).
    """
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError:
        raise ImportError("int8 quantization needs torchao: pip install 'siglip[quant]'") from None

    targets = {id(linear) for _, _, linear in _linear_layers(model, ["classifier"])}
    quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, _: id(m) in targets)
    return model


def is_quantized(weight: torch.Tensor) -> bool:
    """Whether a weight is a quantized tensor subclass (torchao) rather than a plain floating tensor."""
    return type(weight) not in (torch.Tensor, nn.Parameter) and hasattr(weight, "__tensor_flatten__")


def weight_bytes(weight: torch.Tensor) -> int:
    """Bytes actually stored for a weight, looking inside quantized tensor subclasses (data, scales, ...)."""
    if not is_quantized(weight):
        return weight.numel() * weight.element_size()
    names, _ = weight.__tensor_flatten__()
    return sum(weight_bytes(getattr(weight, name)) for name in names)
