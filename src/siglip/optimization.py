"""The explicit inference step: ``siglip.optimize(model)`` returns a fast, inference-only twin of a plain model.

Speed lives here and nowhere else: the model classes stay plain modules (PEFT, hooks, training and export see
every projection), and this module builds, next to a plain model, a twin that computes the same outputs faster.

What the twin does differently (its module tree, parameter names and output types are the plain model's):

* Each encoder layer runs as LayerNorm -> one q/k/v projection -> SDPA on views of it -> out_proj + residual ->
  LayerNorm -> fc1 + GELU -> fc2 + residual, with no copies between them. On CPU the projections are oneDNN inner
  products. In bf16 / fp16 they run on weights reordered into oneDNN's blocked layout, with the GELU as an eltwise
  post-op on the fp32 accumulator and the residual add as a binary post-op of the same kernel (issue 14 measured
  that block 1.6x faster on AMX, and closer to fp32); in fp32 they read the plain weights and GELU and the add run
  as torch's vectorised ops right after the kernel (``choose_kernels`` says why).
* The attention-pooling head's query is the same learned probe for every image, so its projection is computed
  once; keys and values come from one projection, and attention runs through SDPA.
* On CUDA the same structure runs on cuBLAS (one q/k/v GEMM) and SDPA, which picks flash or memory-efficient
  attention by itself (or flash-attn, for ``attn_implementation="flash_attention_2"``).
* bfloat16 or float16 on a CPU whose oneDNN has no kernels for it (no AVX512 / AMX / AVX-NE-CONVERT): the twin
  computes in float32 on the rounded weights and returns outputs in the requested dtype. torch's own bf16 matmul
  on such CPUs runs one to two orders of magnitude below float32 (the ceilings in benchmarks/RESULTS.md).

Memory: parameters that keep their device and dtype are shared with the plain model, not copied. The twin adds the
concatenated q/k/v weights (a quarter of the encoders' linear weights: +0.16 GiB for a base model in float32) and,
in bf16 / fp16 on CPU, the reordered copies of all projection weights instead (about the encoders' linear weights
again: +0.33 GiB for a base model in bf16). Converting (``dtype`` / ``device`` other than the model's) copies the
parameters once.

Inference only: the twin refuses ``.train()``, moving or casting (optimize the plain model again instead), saving,
inputs that require grad, ``backward()`` through its outputs, and running after the plain model's weights changed
in place, each with an error that says so.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .files import is_onnx_export
from .modeling_siglip import (
    ACTIVATIONS,
    SiglipEncoderLayer,
    SiglipMultiheadAttentionPoolingHead,
    _flash_attention,
)
from .modeling_utils import ModelOutput, PreTrainedModel

log = logging.getLogger("siglip")

INFERENCE_ONLY = (
    "this model was made by siglip.optimize() and is inference-only; train, wrap or export the plain model "
    "that was passed to optimize()"
)

# oneDNN eltwise post-ops for the MLP activations: (attr, algorithm). The tanh GELUs are one function written three
# ways; anything else runs as its own op after the projection.
ONEDNN_ACTIVATIONS: dict[str, tuple[str, str | None]] = {
    "gelu_pytorch_tanh": ("gelu", "tanh"),
    "gelu_new": ("gelu", "tanh"),
    "gelu_fast": ("gelu", "tanh"),
    "gelu": ("gelu", "none"),
    "relu": ("relu", None),
}


# ------------------------------------------------------------------------------------------------------------
# What this machine multiplies natively
# ------------------------------------------------------------------------------------------------------------


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX-BF16 or AVX512-BF16), as ``lscpu`` reports."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def auto_dtype(device: torch.device | str) -> torch.dtype | None:
    """The commands' ``--dtype auto`` on ``device``: bfloat16 on a CPU with native bf16, float32 on other CPUs,
    None (the checkpoint's dtype) elsewhere."""
    if torch.device(device).type != "cpu":
        return None
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def command_dtype(dtype: str, device: str, model: str | None = None) -> str | torch.dtype:
    """The commands' and the server's ``--dtype``: ``auto`` resolved by ``auto_dtype`` for ``device`` (``auto``:
    CUDA when available), other names passed through. An ONNX export ``model`` keeps ``auto``: its graphs fix
    their own dtype."""
    if dtype != "auto" or (model is not None and is_onnx_export(model)):
        return dtype
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return auto_dtype(device) or "auto"


def _onednn_supports(dtype: torch.dtype) -> bool:
    """Whether torch's oneDNN has CPU matmul kernels for ``dtype`` here (fp32 always, where oneDNN is built in)."""
    if not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.bfloat16:
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if dtype == torch.float16:
        return torch.ops.mkldnn._is_mkldnn_fp16_supported()
    return dtype == torch.float32


def compute_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype the twin computes in: ``dtype``, except half precision on a CPU without kernels for it (fp32)."""
    if device.type == "cpu" and dtype in (torch.bfloat16, torch.float16) and not _onednn_supports(dtype):
        return torch.float32
    return dtype


# ------------------------------------------------------------------------------------------------------------
# Fused projections
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernels:
    """How the twin's projections run on one device and dtype.

    Attributes:
        onednn: oneDNN inner products (``torch.ops.mkldnn._linear_pointwise``) instead of ``F.linear``.
        pack: reorder each weight once into oneDNN's blocked layout (a copy) instead of letting oneDNN read the
            plain one.
        fuse: the MLP activation as an eltwise post-op and the residual add as a binary post-op of the kernel.
    """

    onednn: bool = False
    pack: bool = False
    fuse: bool = False


def choose_kernels(device: torch.device, dtype: torch.dtype) -> Kernels:
    """The fastest kernels measured for ``dtype`` on ``device`` (the "MLP block" rows of benchmarks/RESULTS.md).

    bf16 / fp16 on CPU: oneDNN with packed weights and post-ops (AMX and AVX512-BF16 kernels want the blocked
    layout, and GELU on the fp32 accumulator is both faster and closer to fp32: issue 14). fp32 on CPU: oneDNN
    reading the plain weights, GELU and the residual add as torch's vectorised ops. On this AVX2 CPU, oneDNN's
    fp32 GELU post-op costs more than the pass it saves, and packing gained ~8% at batch 8 and nothing at batch 1
    for 0.9 s of reordering (SigLIP base) that every cold start would pay, plus a copy of the weights.
    Elsewhere (CUDA): ``F.linear`` and torch's elementwise ops.
    """
    if device.type != "cpu" or not _onednn_supports(dtype):
        return Kernels()
    if dtype == torch.float32:
        return Kernels(onednn=True)
    return Kernels(onednn=True, pack=True, fuse=True)


class Projection:
    """``act(x @ W.T + b)`` or ``x @ W.T + b + residual``, on the kernels ``choose_kernels`` picked.

    ``parts`` are (weight, bias) pairs whose outputs are concatenated (q, k and v as one projection); several parts
    are concatenated once, here. With packing the weight is reordered once into oneDNN's blocked layout for
    ``rows`` (a typical B*L: the layout is chosen for one shape and works for all). With oneDNN post-ops the
    activation or the residual add run inside the kernel; otherwise right after it, the add in place.
    """

    def __init__(
        self,
        parts: list[tuple[torch.Tensor, torch.Tensor | None]],
        kernels: Kernels,
        activation: str | None = None,
        rows: int = 1024,
    ) -> None:
        self.kernels = kernels
        self.post_op = ONEDNN_ACTIVATIONS.get(activation) if kernels.fuse and activation else None
        self.activation: Callable[[torch.Tensor], torch.Tensor] | None = None
        if activation is not None and self.post_op is None:
            self.activation = ACTIVATIONS[activation]
        with torch.no_grad():
            weights, biases = zip(*parts, strict=True)
            weight = weights[0].detach() if len(weights) == 1 else torch.cat(weights)  # (sum of out features, in)
            self.bias = None if biases[0] is None else biases[0].detach() if len(biases) == 1 else torch.cat(biases)
            self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, rows) if kernels.pack else weight

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.kernels.fuse and residual is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.weight, self.bias, "add")
        if self.kernels.onednn:
            attr, algorithm = self.post_op or ("none", None)
            y = torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, attr, [], algorithm)
        else:
            y = F.linear(x, self.weight, self.bias)
        if residual is not None:
            return y.add_(residual)
        return self.activation(y) if self.activation is not None else y


def _activation_name(fn: Callable[[torch.Tensor], torch.Tensor]) -> str | None:
    return next((name for name, f in ACTIVATIONS.items() if f is fn), None)


def _plain_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and type(module.weight) in (torch.Tensor, nn.Parameter)


class FastEncoderLayer(SiglipEncoderLayer):
    """A ``SiglipEncoderLayer`` whose forward runs four fused projections and SDPA on the same parameters.

    The plain layer's submodules stay its children under their names (``state_dict`` is unchanged); the plain
    forward still runs when attention maps are asked for.
    """

    def __init__(self, layer: SiglipEncoderLayer, activation: str, kernels: Kernels, rows: int) -> None:
        nn.Module.__init__(self)
        self.embed_dim = layer.embed_dim
        self.layer_norm1, self.self_attn = layer.layer_norm1, layer.self_attn
        self.layer_norm2, self.mlp = layer.layer_norm2, layer.mlp
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv = Projection([(p.weight, p.bias) for p in (attn.q_proj, attn.k_proj, attn.v_proj)], kernels, rows=rows)
        self.out = Projection([(attn.out_proj.weight, attn.out_proj.bias)], kernels, rows=rows)
        self.fc1 = Projection([(mlp.fc1.weight, mlp.fc1.bias)], kernels, activation, rows)
        self.fc2 = Projection([(mlp.fc2.weight, mlp.fc2.bias)], kernels, rows=rows)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn = self.self_attn
        if output_attentions:
            return super().forward(hidden_states, attention_mask, output_attentions)
        B, L, D = hidden_states.shape
        H, hd = attn.num_heads, attn.head_dim
        qkv = self.qkv(self.layer_norm1(hidden_states)).view(B, L, 3, H, hd).permute(2, 0, 3, 1, 4)  # 3 x (B,H,L,hd)
        if attn._attn_implementation == "flash_attention_2":
            out = _flash_attention(qkv[0], qkv[1], qkv[2], attention_mask, 0.0, attn.scale)
        else:
            out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attention_mask, scale=attn.scale)
        out = out.transpose(1, 2).reshape(B, L, D)  # (B, H, L, hd) -> (B, L, D); a view on CPU
        hidden_states = self.out(out, residual=hidden_states)
        return self.fc2(self.fc1(self.layer_norm2(hidden_states)), residual=hidden_states), None


class FastAttentionPoolingHead(SiglipMultiheadAttentionPoolingHead):
    """The MAP head with the probe's query projected once, one k/v projection, SDPA and fused MLP projections."""

    def __init__(self, head: SiglipMultiheadAttentionPoolingHead, activation: str, kernels: Kernels, rows: int) -> None:
        nn.Module.__init__(self)
        self.probe, self.attention, self.layernorm, self.mlp = head.probe, head.attention, head.layernorm, head.mlp
        mha = head.attention
        D, H = mha.embed_dim, mha.num_heads
        weight, bias = mha.in_proj_weight.detach(), mha.in_proj_bias.detach()
        with torch.no_grad():
            self.query = F.linear(head.probe, weight[:D], bias[:D]).view(1, 1, H, D // H).transpose(1, 2)  # (1,H,1,hd)
        self.kv = Projection([(weight[D:], bias[D:])], kernels, rows=rows)
        mlp = head.mlp
        self.out = Projection([(mha.out_proj.weight, mha.out_proj.bias)], kernels, rows=64)
        self.fc1 = Projection([(mlp.fc1.weight, mlp.fc1.bias)], kernels, activation, 64)
        self.fc2 = Projection([(mlp.fc2.weight, mlp.fc2.bias)], kernels, rows=64)

    def forward(self, hidden_state: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D) tokens and an optional (B, N) key mask -> (B, D) pooled vector."""
        B, N, D = hidden_state.shape
        H = self.attention.num_heads
        kv = self.kv(hidden_state).view(B, N, 2, H, D // H).permute(2, 0, 3, 1, 4)  # 2 x (B, H, N, hd)
        mask = None if attention_mask is None else attention_mask.to(torch.bool)[:, None, None, :]  # (B, 1, 1, N)
        out = F.scaled_dot_product_attention(self.query.expand(B, -1, -1, -1), kv[0], kv[1], attn_mask=mask)
        pooled = self.out(out.transpose(1, 2).reshape(B, 1, D))  # (B, 1, D)
        return self.fc2(self.fc1(self.layernorm(pooled)), residual=pooled)[:, 0]


# ------------------------------------------------------------------------------------------------------------
# The inference-only twin
# ------------------------------------------------------------------------------------------------------------


class _RefuseBackward(torch.autograd.Function):
    """Identity in forward; a backward through it raises (so ``loss.backward()`` on the twin's output says why)."""

    @staticmethod
    def forward(ctx: Any, anchor: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        raise RuntimeError(f"backward() through an optimized model: {INFERENCE_ONLY}")


_ANCHOR = torch.zeros((), requires_grad=True)


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to every floating tensor of an output (a tensor, a ModelOutput, or tuples of them)."""
    if isinstance(value, torch.Tensor):
        return fn(value) if value.is_floating_point() else value
    if isinstance(value, ModelOutput):
        return type(value)(**{k: _map_tensors(v, fn) for k, v in value.items()})
    if isinstance(value, tuple):
        return tuple(_map_tensors(v, fn) for v in value)
    return value


class OptimizedModel:
    """Mixed into the class of every model in an optimized twin (``OptimizedSiglipModel`` and so on).

    The entry points run the base class's code without autograd, return outputs in the requested dtype, and mark
    them so that a backward pass raises; training, moving and casting are refused.
    """

    _siglip_dtype: torch.dtype
    _siglip_compute_dtype: torch.dtype
    _siglip_int8_weights: bool
    _siglip_versions: list[tuple[torch.Tensor, int]]  # parameters and their version counters at optimize()

    @property
    def dtype(self) -> torch.dtype:
        return self._siglip_dtype

    def train(self, mode: bool = True) -> OptimizedModel:
        if mode:
            raise RuntimeError(f".train(): {INFERENCE_ONLY}")
        return super().train(False)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        raise RuntimeError(
            f"an optimized model can't be moved or cast: call siglip.optimize(plain_model, dtype=..., device=...) "
            f"instead ({INFERENCE_ONLY})"
        )

    def save_pretrained(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"save_pretrained(): {INFERENCE_ONLY}")

    def _run(self, method: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
        if any(tensor._version != version for tensor, version in self._siglip_versions):
            raise RuntimeError(
                "the plain model's weights changed since optimize() (the optimized model shares them but holds "
                "fused copies of its projections): call siglip.optimize(model) again"
            )
        grad = torch.is_grad_enabled()
        if grad:
            for name, value in [*enumerate(args), *kwargs.items()]:
                if isinstance(value, torch.Tensor) and value.requires_grad:
                    raise RuntimeError(f"input {name} requires grad: {INFERENCE_ONLY}")
        with torch.no_grad():
            out = method(*args, **kwargs)
        if self._siglip_compute_dtype != self._siglip_dtype:
            out = _map_tensors(out, lambda t: t.to(self._siglip_dtype))
        if grad:
            out = _map_tensors(out, lambda t: _RefuseBackward.apply(_ANCHOR, t))
        return out


ENTRY_POINTS = ("forward", "get_image_features", "get_text_features")


def _entry_point(name: str) -> Callable[..., Any]:
    def method(self: OptimizedModel, *args: Any, **kwargs: Any) -> Any:
        return self._run(getattr(super(OptimizedModel, self), name), args, kwargs)

    method.__name__ = name
    return method


@functools.cache
def optimized_class(cls: type[PreTrainedModel]) -> type:
    """``Optimized<cls>``: the model class with the ``OptimizedModel`` entry points in front of its own."""
    methods = {name: _entry_point(name) for name in ENTRY_POINTS if hasattr(cls, name)}
    return type(f"Optimized{cls.__name__}", (OptimizedModel, cls), {"__module__": __name__, **methods})


def _refuse_adapters(model: nn.Module) -> None:
    """A clear error for PEFT models (wrapped, or with adapters injected into the plain modules)."""
    modules = [model, *model.modules()] if isinstance(model, nn.Module) else [model]
    for module in modules:
        if type(module).__module__.split(".")[0] == "peft":
            raise TypeError(
                f"optimize() got a model with PEFT adapters ({type(module).__name__}): merge them first "
                f"(model = model.merge_and_unload()) and optimize the merged model"
            )


def _resolve_dtype(dtype: Any, model: nn.Module) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return model.dtype
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"optimize(dtype=...) takes float32, bfloat16 or float16, got {dtype!r}")
    return dtype


def _twin(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A structural copy of ``model`` whose tensors are the model's own (shared storage) where they already have
    ``device`` and ``dtype``, and converted copies otherwise; no parameter requires grad and no hook is kept."""
    from .quantization import is_quantized

    memo: dict[int, Any] = {}
    for param in model.parameters():
        if is_quantized(param):  # torchao / bitsandbytes storage: shared as it is (it has its own compute dtype)
            memo[id(param)] = param
        elif id(param) not in memo:
            target = dtype if param.is_floating_point() else param.dtype
            memo[id(param)] = nn.Parameter(param.detach().to(device, target), requires_grad=False)
    for buffer in model.buffers():
        if id(buffer) not in memo:
            memo[id(buffer)] = buffer.to(device, dtype if buffer.is_floating_point() else buffer.dtype)
    twin = copy.deepcopy(model, memo)
    for module in twin.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks):
            hooks.clear()
    return twin


def _typical_rows(tower: PreTrainedModel) -> int:
    """B*L of a typical batch through a tower (32 texts, 8 images), for oneDNN's choice of weight layout."""
    config = tower.config
    if hasattr(config, "max_position_embeddings"):  # a text tower
        return 32 * config.max_position_embeddings
    return 8 * (getattr(config, "num_patches", None) or (config.image_size // config.patch_size) ** 2)


def optimize(
    model: nn.Module,
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    int8_weights: bool = False,
) -> nn.Module:
    """A fast, inference-only twin of a SigLIP / SigLIP2 model; ``model`` itself is left as it was.

    The twin has the model's class API (``forward``, ``get_image_features``, ``get_text_features``, ``config``,
    ``logit_scale``, ...) and output types; in float32 its outputs equal the plain model's within 1e-5 (relative
    to their scale). See the module docstring for what is fused and what memory it holds.

    Args:
        model: any siglip model class (joint, tower or classifier), SigLIP or SigLIP2 NaFlex. A model with PEFT
            adapters must be merged first (``merge_and_unload()``).
        dtype: the twin's dtype (float32, bfloat16, float16 or their names); None keeps the model's.
        device: the twin's device; None keeps the model's.
        int8_weights: store the twin's linear weights in int8 (torchao weight-only quantization, the ``quant``
            extra): about 35% of the fp32 weight memory once the plain model is dropped, embeddings within cosine
            0.99; those layers then run unfused (benchmarks/RESULTS.md has the speed).

    Returns:
        The twin (``model`` again if it is already an optimized twin with that dtype and device).
    """
    _refuse_adapters(model)
    if isinstance(model, OptimizedModel):
        same_dtype = dtype is None or _resolve_dtype(dtype, model) == model.dtype
        same_device = device is None or torch.device(device) == model.device
        if same_dtype and same_device and int8_weights == model._siglip_int8_weights:
            return model
        raise ValueError(
            "optimize() got an already optimized model with other settings (dtype, device or "
            "int8_weights): optimize the plain model instead"
        )
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"optimize() takes a siglip model, got {type(model).__name__}")
    dtype = _resolve_dtype(dtype, model)
    device = torch.device(device) if device is not None else model.device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    compute = compute_dtype(dtype, device)
    if compute != dtype:
        log.info("this CPU has no %s matmul kernels: the optimized model computes in %s", dtype, compute)
    twin = _twin(model, device, compute)
    if int8_weights:
        from .quantization import quantize_int8

        quantize_int8(twin)
    kernels = choose_kernels(device, compute)
    for tower in [m for m in twin.modules() if isinstance(m, PreTrainedModel) and hasattr(m, "encoder")]:
        rows = _typical_rows(tower)
        for module in list(tower.modules()):
            for child_name, child in list(module.named_children()):
                fast = _fast_module(child, kernels, rows)
                if fast is not None:
                    setattr(module, child_name, fast)
    for module in twin.modules():
        if isinstance(module, PreTrainedModel):
            module.__class__ = optimized_class(type(module))
            module._siglip_dtype = dtype
            module._siglip_compute_dtype = compute
            module._siglip_int8_weights = int8_weights
            module._siglip_versions = [(p, p._version) for p in module.parameters()]
    return twin.eval()


def _fast_module(module: nn.Module, kernels: Kernels, rows: int) -> nn.Module | None:
    """The fused replacement of an encoder layer or attention-pooling head of exactly the plain classes, or None."""
    if type(module) is SiglipEncoderLayer:
        attn, mlp = module.self_attn, module.mlp
        linears = (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj, mlp.fc1, mlp.fc2)
        activation = _activation_name(mlp.activation_fn)
        if activation and all(_plain_linear(m) for m in linears):
            return FastEncoderLayer(module, activation, kernels, rows)
    if type(module) is SiglipMultiheadAttentionPoolingHead:
        mha, mlp = module.attention, module.mlp
        activation = _activation_name(mlp.activation_fn)
        if (
            activation
            and mha._qkv_same_embed_dim
            and mha.in_proj_bias is not None
            and mha.bias_k is None
            and all(_plain_linear(m) for m in (mha.out_proj, mlp.fc1, mlp.fc2))
        ):
            return FastAttentionPoolingHead(module, activation, kernels, rows)
    return None


__all__ = ["auto_dtype", "cpu_has_native_bf16", "optimize"]
