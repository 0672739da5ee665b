"""SigLIP: text and fixed-resolution vision towers, the attention-pooling head, the joint model and the classifier.

Reads top to bottom: outputs, activations, attention, MLP, encoder layer, encoder, text tower, vision tower,
joint model, classifier. Module and parameter names are those of the hub checkpoints (transformers'
``modeling_siglip.py``), so a ``state_dict`` maps 1:1 to ``model.safetensors``. The SigLIP2 NaFlex file reuses the
shared blocks defined here.

Shapes: B batch, L sequence length (tokens or patches), D hidden size, H heads, hd = D / H head size.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .activations import ACTIVATIONS
from .config import SiglipConfig, SiglipTextConfig, SiglipVisionConfig
from .modeling_utils import (
    BaseModelOutput,
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
    ModelOutput,
    PreTrainedModel,
)


class SiglipOutput(ModelOutput):
    loss: torch.Tensor | None
    logits_per_image: torch.Tensor | None  # (n_images, n_texts)
    logits_per_text: torch.Tensor | None  # (n_texts, n_images)
    text_embeds: torch.Tensor | None  # (n_texts, P), L2-normalised
    image_embeds: torch.Tensor | None  # (n_images, D_vision), L2-normalised
    text_model_output: BaseModelOutputWithPooling | None
    vision_model_output: BaseModelOutputWithPooling | None


# ------------------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------------------


def lecun_normal_(tensor: torch.Tensor) -> None:
    """Truncated normal with variance 1/fan_in, as big_vision / transformers initialise dense kernels."""
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(tensor)
    nn.init.trunc_normal_(tensor, std=math.sqrt(1.0 / fan_in) / 0.87962566103423978)


def _embedding(num: int, dim: int) -> nn.Embedding:
    """An nn.Embedding without torch's default init (``init_weights`` sets the real values; under the meta device
    the default ``normal_`` would import torch._dynamo, seconds of start-up for nothing)."""
    return nn.Embedding(num, dim, _weight=torch.empty(num, dim))


def tracing() -> bool:
    """Whether a graph is being captured (torch.compile, torch.export, jit / fx tracing) rather than run eagerly.

    Checks on input *values* (NaN pixels, ids outside the vocabulary, NaFlex masks that disagree with their shapes)
    run only eagerly, at the model entry points: they read tensor values on the host, which a graph can't branch
    on. Everything else in a forward depends on shapes alone.
    """
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or _fx_symbolic_tracing()


# torch.fx symbolic tracing (torch.export and compile are covered by is_compiling); the name changed in torch 2.x.
_fx_symbolic_tracing = getattr(
    torch.fx._symbolic_trace, "is_fx_symbolic_tracing", torch.fx._symbolic_trace.is_fx_tracing
)


def padding_mask_to_attention_bias(
    attention_mask: torch.Tensor | None, dtype: torch.dtype, implementation: str
) -> torch.Tensor | None:
    """Turn a (B, L) 1/0 key mask into what the attention kernel takes.

    Returns None without a mask, a (B, 1, 1, L) boolean mask for SDPA (True = attend), or a (B, 1, 1, L) additive
    mask for eager (0 / finfo.min) — the values transformers builds. Only keys are masked: padded query rows still
    produce (ignored) outputs. A given mask is always applied, all ones or not: no branch on its values.
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must have shape (batch, sequence), got {tuple(attention_mask.shape)}")
    keep = attention_mask.to(torch.bool)[:, None, None, :]
    if implementation == "eager":
        return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)
    return keep


class SiglipAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections and no causal mask.

    Every projection runs by calling its ``nn.Linear``, so hooks, PEFT adapters and replaced modules see every call.
    Fused or prepacked projections for inference live in ``siglip.optimize``, never here.
    """

    def __init__(self, config: SiglipTextConfig | SiglipVisionConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self._attn_implementation = "sdpa"
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim)

    def reset_parameters_siglip(self) -> None:
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, L, D = hidden_states.shape
        # (B, L, D) -> (B, H, L, hd)
        q = self.q_proj(hidden_states).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        weights = None
        impl = self._attn_implementation
        if impl == "eager" or output_attentions:
            # transformers returns no attention maps under SDPA; we compute them the eager way when asked.
            if attention_mask is not None and attention_mask.dtype == torch.bool:
                attention_mask = torch.zeros(attention_mask.shape, dtype=q.dtype, device=q.device).masked_fill(
                    ~attention_mask, torch.finfo(q.dtype).min
                )
            scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale  # (B, H, L, L)
            if attention_mask is not None:
                scores = scores + attention_mask
            weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            out = torch.matmul(F.dropout(weights, p=dropout, training=self.training), v)
        elif impl == "flash_attention_2":
            out = _flash_attention(q, k, v, attention_mask, dropout, self.scale)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=dropout, scale=self.scale)
        out = out.transpose(1, 2).reshape(B, L, D)  # (B, H, L, hd) -> (B, L, D)
        return self.out_proj(out), weights


def _flash_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float, scale: float
) -> torch.Tensor:
    """flash-attn 2 on (B, H, L, hd) inputs; a key mask runs the varlen kernel on the unpadded tokens."""
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    B, H, L, hd = q.shape
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, L, H, hd)
    if mask is None:
        return flash_attn_func(q, k, v, dropout_p=dropout, softmax_scale=scale).transpose(1, 2)
    keep = mask.reshape(B, L) if mask.dtype == torch.bool else mask.reshape(B, L) == 0
    lengths = keep.sum(-1, dtype=torch.int32)
    index = keep.flatten().nonzero().flatten()
    cu = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
    packed = [t.reshape(B * L, H, hd)[index] for t in (q, k, v)]
    out = flash_attn_varlen_func(
        *packed, cu, cu, int(lengths.max()), int(lengths.max()), dropout_p=dropout, softmax_scale=scale
    )
    full = torch.zeros(B * L, H, hd, dtype=out.dtype, device=out.device)
    full[index] = out
    return full.view(B, L, H, hd).transpose(1, 2)


class SiglipMLP(nn.Module):
    def __init__(self, config: SiglipTextConfig | SiglipVisionConfig):
        super().__init__()
        self.activation_fn = ACTIVATIONS[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def reset_parameters_siglip(self) -> None:
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))  # (B, L, D) -> (B, L, I) -> (B, L, D)


class SiglipEncoderLayer(nn.Module):
    """Pre-LN transformer block: x + attn(ln1(x)), then + mlp(ln2(.))."""

    def __init__(self, config: SiglipTextConfig | SiglipVisionConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.layer_norm1 = nn.LayerNorm(self.embed_dim, eps=config.layer_norm_eps)
        self.self_attn = SiglipAttention(config)
        self.layer_norm2 = nn.LayerNorm(self.embed_dim, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn, weights = self.self_attn(self.layer_norm1(hidden_states), attention_mask, output_attentions)
        hidden_states = hidden_states + attn
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, weights


class SiglipEncoder(nn.Module):
    """A stack of encoder layers with no final norm (each tower applies its own)."""

    def __init__(self, config: SiglipTextConfig | SiglipVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList([SiglipEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False
        self._checkpoint_options: dict[str, Any] = {"use_reentrant": False}
        self._checkpoint_every = 1
        self._checkpoint_offload = False

    def set_checkpointing(
        self, enable: bool, options: dict[str, Any] | None = None, every_n_layers: int = 1, offload: bool = False
    ) -> None:
        """Recompute every ``every_n_layers``-th layer in backward (``torch.utils.checkpoint`` with ``options``)."""
        self.gradient_checkpointing = enable
        self._checkpoint_options = dict(options or {"use_reentrant": False})
        self._checkpoint_every = every_n_layers
        self._checkpoint_offload = offload

    def _checkpointed(self, index: int) -> bool:
        return (
            self.gradient_checkpointing
            and self.training
            and torch.is_grad_enabled()
            and index % self._checkpoint_every == 0
        )

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        hidden_states = inputs_embeds
        all_hidden = [hidden_states] if output_hidden_states else None
        all_attn = [] if output_attentions else None
        for index, layer in enumerate(self.layers):
            if self._checkpointed(index):
                offload = self._checkpoint_offload and hidden_states.device.type == "cuda"
                with torch.autograd.graph.save_on_cpu(pin_memory=True) if offload else contextlib.nullcontext():
                    hidden_states, weights = checkpoint(
                        layer, hidden_states, attention_mask, output_attentions, **self._checkpoint_options
                    )
            else:
                hidden_states, weights = layer(hidden_states, attention_mask, output_attentions)
            if all_hidden is not None:
                all_hidden.append(hidden_states)
            if all_attn is not None:
                all_attn.append(weights)
        return BaseModelOutput(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=tuple(all_attn) if all_attn is not None else None,
        )


class SiglipMultiheadAttentionPoolingHead(nn.Module):
    """MAP head: one learned probe attends over the tokens (torch's MultiheadAttention), then a residual MLP."""

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        probe = torch.empty(1, 1, config.hidden_size)
        if probe.device.type != "meta":  # torch.randn's draws (for seeded inits); on meta it pulls in sympy (0.5 s)
            probe.normal_()
        self.probe = nn.Parameter(probe)
        self.attention = nn.MultiheadAttention(config.hidden_size, config.num_attention_heads, batch_first=True)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config)

    def reset_parameters_siglip(self) -> None:
        nn.init.xavier_uniform_(self.probe)
        nn.init.xavier_uniform_(self.attention.in_proj_weight)
        nn.init.zeros_(self.attention.in_proj_bias)
        lecun_normal_(self.attention.out_proj.weight)
        nn.init.zeros_(self.attention.out_proj.bias)

    def forward(self, hidden_state: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) tokens and an optional (B, L) key mask -> (B, D) pooled vector."""
        B = hidden_state.shape[0]
        probe = self.probe.repeat(B, 1, 1)  # (B, 1, D)
        attn_mask = None
        if attention_mask is not None:
            # nn.MultiheadAttention wants an additive (B*H, 1, L) float mask.
            keep = attention_mask.to(torch.bool)[:, None, None, :].expand(-1, self.attention.num_heads, 1, -1)
            attn_mask = torch.zeros(keep.shape, dtype=probe.dtype, device=probe.device)
            attn_mask = attn_mask.masked_fill(~keep, torch.finfo(probe.dtype).min).reshape(-1, 1, keep.shape[-1])
        hidden_state = self.attention(probe, hidden_state, hidden_state, attn_mask=attn_mask)[0]
        hidden_state = hidden_state + self.mlp(self.layernorm(hidden_state))
        return hidden_state[:, 0]


def _reset_linear_and_norm(module: nn.Module) -> None:
    """Default init for plain Linear / Conv / LayerNorm children (lecun normal kernels, zero biases)."""
    for child in module.children():
        if isinstance(child, (nn.Linear, nn.Conv2d)):
            lecun_normal_(child.weight)
            if child.bias is not None:
                nn.init.zeros_(child.bias)
        elif isinstance(child, nn.LayerNorm):
            nn.init.ones_(child.weight)
            nn.init.zeros_(child.bias)


def _tower_output(
    enc: BaseModelOutput, last_hidden_state: torch.Tensor, pooled: torch.Tensor | None, return_dict: bool
) -> BaseModelOutputWithPooling | tuple:
    out = BaseModelOutputWithPooling(
        last_hidden_state=last_hidden_state,
        pooler_output=pooled,
        hidden_states=enc.hidden_states,
        attentions=enc.attentions,
    )
    return out if return_dict else out.to_tuple()


# Keyword arguments every forward takes besides its inputs: transformers' output flags, and the loss keyword that
# transformers.Trainer passes to models whose forward takes **kwargs (accepted and unused, as in transformers'
# SigLIP classes, whose losses are means already).
FORWARD_KEYWORDS = frozenset({"output_attentions", "output_hidden_states", "return_dict", "num_items_in_batch"})


def _check_output_flags(kwargs: dict[str, Any], owner: str) -> tuple[bool, bool, bool]:
    unknown = set(kwargs) - FORWARD_KEYWORDS
    if unknown:
        raise TypeError(f"{owner}.forward() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    return (
        bool(kwargs.get("output_attentions") or False),
        bool(kwargs.get("output_hidden_states") or False),
        kwargs.get("return_dict") is not False,
    )


# ------------------------------------------------------------------------------------------------------------
# Text tower
# ------------------------------------------------------------------------------------------------------------


class SiglipTextEmbeddings(nn.Module):
    def __init__(self, config: SiglipTextConfig):
        super().__init__()
        self.token_embedding = _embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = _embedding(config.max_position_embeddings, config.hidden_size)

    def reset_parameters_siglip(self) -> None:
        for emb in (self.token_embedding, self.position_embedding):
            nn.init.normal_(emb.weight, std=math.sqrt(1.0 / emb.weight.shape[1]))

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        L = input_ids.shape[-1]
        max_len = self.position_embedding.num_embeddings
        if L > max_len:
            raise ValueError(
                f"input_ids has {L} tokens but the text model's position table holds {max_len} "
                f"(max_position_embeddings); tokenize with truncation=True, max_length={max_len}"
            )
        if position_ids is None:
            position_ids = torch.arange(L, device=input_ids.device)[None, :]
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)  # (B, L, D)


def check_token_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """Ids outside [0, vocab_size) would index past the embedding table: name them instead (eager only)."""
    bad = (input_ids < 0) | (input_ids >= vocab_size)
    if bool(bad.any()):
        shown = input_ids[bad].unique()[:5].tolist()
        raise ValueError(f"input_ids contains ids outside the vocabulary [0, {vocab_size}): {shown}")


class SiglipTextModel(PreTrainedModel):
    """The SigLIP text tower: embeddings, encoder, final LayerNorm, and a linear head on the last position.

    ``pooler_output = head(last_hidden_state[:, -1])``: the last position, which after max-length padding is a
    pad token — exactly how SigLIP was trained (transformers #39269).
    """

    config_class = SiglipTextConfig
    checkpoint_prefix = "text_model."
    input_embeddings = "embeddings.token_embedding"

    def __init__(self, config: SiglipTextConfig):
        super().__init__(config)
        self.embeddings = SiglipTextEmbeddings(config)
        self.encoder = SiglipEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.hidden_size, config.projection_size)
        self.init_weights()

    def reset_parameters_siglip(self) -> None:
        _reset_linear_and_norm(self)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling | tuple:
        output_attentions, output_hidden_states, return_dict = _check_output_flags(kwargs, type(self).__name__)
        if input_ids is None:
            raise ValueError(f"{type(self).__name__} needs input_ids")
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype.is_floating_point:
            raise ValueError("input_ids must be an integer tensor of shape (batch, sequence)")
        input_ids = input_ids.view(-1, input_ids.shape[-1])  # (B, L)
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has {tuple(input_ids.shape)}"
            )
        if not tracing():
            token_embedding = self.embeddings.token_embedding
            check_token_ids(input_ids, getattr(token_embedding, "num_embeddings", self.config.vocab_size))
        hidden_states = self.embeddings(input_ids, position_ids)
        bias = padding_mask_to_attention_bias(attention_mask, hidden_states.dtype, self.attn_implementation)
        enc = self.encoder(hidden_states, bias, output_attentions, output_hidden_states)
        last_hidden_state = self.final_layer_norm(enc.last_hidden_state)
        pooled = self.head(last_hidden_state[:, -1, :])  # (B, P)
        return _tower_output(enc, last_hidden_state, pooled, return_dict)


# ------------------------------------------------------------------------------------------------------------
# Vision tower (fixed resolution)
# ------------------------------------------------------------------------------------------------------------


def check_pixel_values(pixel_values: Any, owner: str, num_channels: int, ndim: int = 4) -> None:
    """Clear errors for the inputs users most often get wrong (shape, dtype; NaN/inf when eager)."""
    if not isinstance(pixel_values, torch.Tensor):
        raise ValueError(f"{owner} needs pixel_values as a torch.Tensor, got {type(pixel_values).__name__}")
    if pixel_values.dim() != ndim:
        want = "(batch, channels, height, width)" if ndim == 4 else "(batch, patches, channels*patch*patch)"
        raise ValueError(f"{owner}: pixel_values must have shape {want}, got {tuple(pixel_values.shape)}")
    if ndim == 4 and pixel_values.shape[1] != num_channels:
        raise ValueError(
            f"{owner}: pixel_values has {pixel_values.shape[1]} channels, the model expects {num_channels} "
            f"(shape must be (batch, channels, height, width), got {tuple(pixel_values.shape)})"
        )
    if not pixel_values.is_floating_point():
        raise ValueError(f"{owner}: pixel_values must be a floating tensor, got {pixel_values.dtype}")
    if not tracing() and not bool(torch.isfinite(pixel_values).all()):
        raise ValueError(f"{owner}: pixel_values contains NaN or infinite values")


class SiglipVisionEmbeddings(nn.Module):
    """Conv patchify (no CLS token) plus a learned (image_size // patch_size)**2 position table."""

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.patch_size = config.patch_size
        self.patch_embedding = nn.Conv2d(
            config.num_channels, self.embed_dim, kernel_size=self.patch_size, stride=self.patch_size, padding="valid"
        )
        self.num_patches = (config.image_size // config.patch_size) ** 2
        self.position_embedding = _embedding(self.num_patches, self.embed_dim)

    def reset_parameters_siglip(self) -> None:
        nn.init.normal_(self.position_embedding.weight, std=1 / math.sqrt(self.embed_dim))
        lecun_normal_(self.patch_embedding.weight)
        nn.init.zeros_(self.patch_embedding.bias)

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """The position table resized (bicubic, no antialias) to a (height/p, width/p) grid -> (1, N, D)."""
        num_positions = self.position_embedding.num_embeddings
        new_h, new_w = height // self.patch_size, width // self.patch_size
        if new_h * new_w == num_positions and height == width:
            return self.position_embedding.weight.unsqueeze(0)
        side = int(math.isqrt(num_positions))
        grid = self.position_embedding.weight.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, D, s, s)
        grid = F.interpolate(grid, size=(new_h, new_w), mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1).reshape(1, -1, self.embed_dim)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        _, _, height, width = pixel_values.shape
        p = self.patch_size
        if height < p or width < p:
            raise ValueError(f"pixel_values of {height}x{width} are smaller than one {p}x{p} patch")
        weight = self.patch_embedding.weight
        patches = self.patch_embedding(pixel_values.to(dtype=weight.dtype))  # (B, D, H/p, W/p)
        embeddings = patches.flatten(2).transpose(1, 2)  # (B, N, D), row-major patch order
        if interpolate_pos_encoding:
            return embeddings + self.interpolate_pos_encoding(height, width)
        if embeddings.shape[1] != self.num_patches:
            side = int(math.isqrt(self.num_patches)) * p
            raise ValueError(
                f"pixel_values of {height}x{width} give {embeddings.shape[1]} patches but the position table has "
                f"{self.num_patches} ({side}x{side} images); resize the images or pass interpolate_pos_encoding=True"
            )
        return embeddings + self.position_embedding.weight.unsqueeze(0)


class SiglipVisionModel(PreTrainedModel):
    """The SigLIP vision tower: patch embeddings, encoder, post LayerNorm and (optionally) the MAP head."""

    config_class = SiglipVisionConfig
    checkpoint_prefix = "vision_model."
    main_input_name = "pixel_values"
    input_embeddings = "embeddings.patch_embedding"
    # The SigLIP2 NaFlex tower swaps in its linear patch embedding and keeps everything else.
    embeddings_class: ClassVar[type[nn.Module]] = SiglipVisionEmbeddings

    def __init__(self, config: SiglipVisionConfig):
        super().__init__(config)
        self.embeddings = self.embeddings_class(config)
        self.encoder = SiglipEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.use_head = config.vision_use_head
        if self.use_head:
            self.head = SiglipMultiheadAttentionPoolingHead(config)
        self.init_weights()

    def reset_parameters_siglip(self) -> None:
        _reset_linear_and_norm(self)

    def forward(
        self, pixel_values: torch.Tensor | None = None, interpolate_pos_encoding: bool = False, **kwargs: Any
    ) -> BaseModelOutputWithPooling | tuple:
        output_attentions, output_hidden_states, return_dict = _check_output_flags(kwargs, type(self).__name__)
        check_pixel_values(pixel_values, type(self).__name__, self.config.num_channels)
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        return self._encode(hidden_states, None, output_attentions, output_hidden_states, return_dict)

    def _encode(
        self,
        hidden_states: torch.Tensor,
        patch_mask: torch.Tensor | None,
        output_attentions: bool,
        output_hidden_states: bool,
        return_dict: bool,
    ) -> BaseModelOutputWithPooling | tuple:
        """Encoder, post LayerNorm and MAP head on (B, N, D) patch embeddings; a (B, N) ``patch_mask`` masks keys."""
        bias = padding_mask_to_attention_bias(patch_mask, hidden_states.dtype, self.attn_implementation)
        enc = self.encoder(hidden_states, bias, output_attentions, output_hidden_states)
        last_hidden_state = self.post_layernorm(enc.last_hidden_state)
        pooled = None
        if self.use_head:  # one argument without a mask, as transformers calls it (a replaced head may take one)
            pooled = self.head(last_hidden_state) if patch_mask is None else self.head(last_hidden_state, patch_mask)
        return _tower_output(enc, last_hidden_state, pooled, return_dict)


# ------------------------------------------------------------------------------------------------------------
# Joint model and classifier
# ------------------------------------------------------------------------------------------------------------


def sigmoid_loss_from_logits(logits_per_text: torch.Tensor) -> torch.Tensor:
    """big_vision's pairwise sigmoid loss on an (n, n) logit matrix whose diagonal holds the positive pairs.

    Sum over a row of -log sigmoid(+-logit), averaged over rows (not divided by n again).
    """
    n_text, n_image = logits_per_text.shape
    if n_text != n_image:
        raise ValueError(f"return_loss needs as many texts as images (matched pairs), got {n_text} and {n_image}")
    signs = 2 * torch.eye(n_text, device=logits_per_text.device, dtype=logits_per_text.dtype) - 1
    return -F.logsigmoid(signs * logits_per_text).sum(dim=-1).mean()


class _JointModelMixin:
    """``forward`` / ``get_*_features`` shared by SiglipModel and Siglip2Model."""

    text_model: nn.Module
    vision_model: nn.Module
    logit_scale: nn.Parameter
    logit_bias: nn.Parameter

    def _joint_forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        return_loss: bool | None,
        vision_inputs: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> SiglipOutput | tuple:
        output_attentions, output_hidden_states, return_dict = _check_output_flags(kwargs, type(self).__name__)
        if input_ids is None and vision_inputs is None:
            raise ValueError(f"{type(self).__name__} needs input_ids, pixel_values, or both")
        flags = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
        vision_out = text_out = image_embeds = text_embeds = None
        if vision_inputs is not None:
            vision_out = self.vision_model(**vision_inputs, **flags)
            image_embeds = vision_out.pooler_output
            if image_embeds is None:
                raise ValueError("the vision tower has no head (vision_use_head=False): it gives no image embedding")
            image_embeds = image_embeds / image_embeds.norm(p=2, dim=-1, keepdim=True)
        if input_ids is not None:
            text_out = self.text_model(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **flags
            )
            text_embeds = text_out.pooler_output
            text_embeds = text_embeds / text_embeds.norm(p=2, dim=-1, keepdim=True)
        logits_per_text = logits_per_image = loss = None
        if image_embeds is not None and text_embeds is not None:
            if text_embeds.shape[-1] != image_embeds.shape[-1]:
                raise ValueError(
                    f"text embeddings have {text_embeds.shape[-1]} dims and image embeddings {image_embeds.shape[-1]}"
                )
            logits_per_text = text_embeds @ image_embeds.t().to(text_embeds.device)  # (n_text, n_image)
            scale = self.logit_scale.to(text_embeds.device)
            bias = self.logit_bias.to(text_embeds.device)
            logits_per_text = logits_per_text * scale.exp() + bias
            logits_per_image = logits_per_text.t()
            if return_loss:
                loss = sigmoid_loss_from_logits(logits_per_text)
        elif return_loss:
            raise ValueError("return_loss=True needs both input_ids and pixel_values")
        out = SiglipOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_out,
            vision_model_output=vision_out,
        )
        return out if return_dict else out.to_tuple()

    def get_text_features(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Unnormalised text embeddings (B, P): the text tower's ``pooler_output``."""
        kwargs.pop("return_dict", None)
        return self.text_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        ).pooler_output


class SiglipModel(_JointModelMixin, PreTrainedModel):
    """SigLIP: both towers plus the learned ``logit_scale`` / ``logit_bias`` of the sigmoid loss.

    ``logits_per_text = normalize(text) @ normalize(image).T * exp(logit_scale) + logit_bias``; probabilities are
    ``sigmoid(logits)``, one independent score per pair.
    """

    config_class = SiglipConfig
    input_embeddings = "text_model.embeddings.token_embedding"
    text_model_class: ClassVar[type[SiglipTextModel]] = SiglipTextModel
    vision_model_class: ClassVar[type[SiglipVisionModel]] = SiglipVisionModel

    def __init__(self, config: SiglipConfig):
        super().__init__(config)
        self.text_model = self.text_model_class(config.text_config)
        self.vision_model = self.vision_model_class(config.vision_config)
        self.logit_scale = nn.Parameter(torch.zeros(1))
        self.logit_bias = nn.Parameter(torch.zeros(1))

    def reset_parameters_siglip(self) -> None:
        nn.init.zeros_(self.logit_scale)
        nn.init.zeros_(self.logit_bias)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Any,
    ) -> SiglipOutput | tuple:
        """Either modality may be omitted: the other's fields are then None (transformers raises instead)."""
        vision_inputs = None
        if pixel_values is not None:
            vision_inputs = {"pixel_values": pixel_values, "interpolate_pos_encoding": interpolate_pos_encoding}
        return self._joint_forward(input_ids, attention_mask, position_ids, return_loss, vision_inputs, kwargs)

    def get_image_features(
        self, pixel_values: torch.Tensor | None = None, interpolate_pos_encoding: bool = False, **kwargs: Any
    ) -> torch.Tensor:
        """Unnormalised image embeddings (B, D): the vision tower's ``pooler_output``."""
        kwargs.pop("return_dict", None)
        return self.vision_model(
            pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        ).pooler_output


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: Any) -> torch.Tensor:
    """transformers' problem_type logic: MSE (1 label), cross-entropy (integer labels), else BCE-with-logits."""
    num_labels = config.num_labels
    problem_type = config.problem_type
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
        config.problem_type = problem_type
    labels = labels.to(logits.device)
    if problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if problem_type == "single_label_classification":
        labels = labels.view(-1)
        if not tracing():
            valid = labels[labels != -100]
            if bool(((valid < 0) | (valid >= num_labels)).any()):
                raise ValueError(
                    f"labels must be in [0, {num_labels}) (or -100 to ignore), got {valid.unique().tolist()[:5]}"
                )
        return F.cross_entropy(logits.view(-1, num_labels).float(), labels, ignore_index=-100)
    if labels.shape != logits.shape:
        raise ValueError(f"multi-label targets must have shape {tuple(logits.shape)}, got {tuple(labels.shape)}")
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class SiglipForImageClassification(PreTrainedModel):
    """Vision tower + linear classifier on the mean of all patch tokens (the MAP head is kept but unused)."""

    config_class = SiglipConfig
    head_prefixes = ("classifier.",)
    main_input_name = "pixel_values"
    input_embeddings = "vision_model.embeddings.patch_embedding"
    vision_model_class: ClassVar[type[SiglipVisionModel]] = SiglipVisionModel

    def __init__(self, config: SiglipConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vision_model = self.vision_model_class(config.vision_config)
        hidden = config.vision_config.hidden_size
        self.classifier = nn.Linear(hidden, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.reset_classifier()

    def reset_classifier(self) -> None:
        """A fresh head: normal(std = D**-0.5 * initializer_factor), zero bias.

        The two earlier draws are overwritten; they are there so that the random stream is consumed exactly as
        transformers consumes it (generic init, then LeCun normal, then this normal), so that after
        ``torch.manual_seed(s)`` a head created by ``from_pretrained`` on a base checkpoint is the same tensor in
        both libraries (the seed document's classification example prints a prediction made by such a head).
        """
        if isinstance(self.classifier, nn.Linear):
            weight = self.classifier.weight
            nn.init.normal_(weight, std=self.config.initializer_factor)
            lecun_normal_(weight)
            nn.init.normal_(weight, std=self.config.vision_config.hidden_size**-0.5 * self.config.initializer_factor)
            nn.init.zeros_(self.classifier.bias)

    def _pool(self, last_hidden_state: torch.Tensor, **_: Any) -> torch.Tensor:
        return last_hidden_state.mean(dim=1)  # (B, N, D) -> (B, D)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Any,
    ) -> ImageClassifierOutput | tuple:
        vision_inputs = {"pixel_values": pixel_values, "interpolate_pos_encoding": interpolate_pos_encoding}
        return self._classify(vision_inputs, labels, kwargs)

    def _classify(
        self, vision_inputs: dict[str, Any], labels: torch.Tensor | None, kwargs: dict[str, Any]
    ) -> ImageClassifierOutput | tuple:
        output_attentions, output_hidden_states, return_dict = _check_output_flags(kwargs, type(self).__name__)
        out = self.vision_model(
            **vision_inputs, output_attentions=output_attentions, output_hidden_states=output_hidden_states
        )
        logits = self.classifier(self._pool(out.last_hidden_state, **vision_inputs))
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        result = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return result if return_dict else result.to_tuple()
