"""SigLIP2 NaFlex: the variable-resolution vision tower and the classes built on it.

This module owns only what NaFlex changes with respect to ``modeling_siglip``: the linear patch embedding on
pre-patchified pixels, the learned position grid resized to each image's patch grid, the checks on the three
vision inputs, and the masked mean of the classifier. The encoder, the attention-pooling head, the text tower,
the joint logits and the losses are SigLIP's and are imported from there. SigLIP2 *FixRes* checkpoints are
``model_type`` "siglip" and run through ``modeling_siglip`` unchanged.

Vision inputs (what ``Siglip2ImageProcessor`` returns):
    pixel_values (B, N, C*p*p): each image cut into p x p patches in row-major order, each patch flattened as
        (row in patch, column in patch, channel); rows past the image's h*w patches are padding (zeros).
    pixel_attention_mask (B, N): 1 for the h*w real patches (the first ones), 0 for padding.
    spatial_shapes (B, 2): (h, w), the image's grid in patches.

Shapes: B batch, N padded patch count (``max_num_patches``), D hidden size, s x s the learned position grid
(``num_patches = s*s``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import Siglip2Config, Siglip2TextConfig, Siglip2VisionConfig
from .modeling_siglip import (
    SiglipForImageClassification,
    SiglipModel,
    SiglipOutput,
    SiglipTextModel,
    SiglipVisionModel,
    _check_output_flags,
    _embedding,
    check_pixel_values,
    lecun_normal_,
    tracing,
)
from .modeling_utils import BaseModelOutputWithPooling, ImageClassifierOutput

# ------------------------------------------------------------------------------------------------------------
# Embeddings
# ------------------------------------------------------------------------------------------------------------


def resize_position_grid(grid: torch.Tensor, spatial_shapes: torch.Tensor, max_length: int) -> torch.Tensor:
    """Per-image position embeddings: the (s, s, D) grid resized to each (h, w), padded to ``max_length`` rows.

    Reproduces ``Siglip2VisionEmbeddings.resize_positional_embeddings`` (transformers 5.24 ``modeling_siglip2.py``):
    bilinear interpolation with antialias and ``align_corners=False`` (antialias matters when a side shrinks below
    s), rows [h*w:] repeating row 0. The interpolation weights are computed here rather than by
    ``F.interpolate(antialias=True)``, whose CPU kernel is wrong when one output side is 1 and the other exceeds s
    (a 3x700 px image, grid (234, 1), got position embeddings off by O(1)). Resizing is linear and separable: output
    row n of image b, at grid cell (r, c) = divmod(n, w_b), is ``sum_ij Wr[r, i] Wc[c, j] grid[i, j]`` with
    PIL's triangle-filter weights along each axis. The whole batch is one (B, N, s*s) @ (s*s, D) product in
    float32 (as transformers, on every device), with no per-shape Python loop and no host synchronisation, so it
    compiles and exports.

    Args:
        grid: (s, s, D) learned position table viewed as a grid.
        spatial_shapes: (B, 2) integer (h, w) per image, with 0 < h*w <= max_length.
        max_length: N, the padded patch count.

    Returns:
        (B, N, D) in the grid's dtype.
    """
    s = grid.shape[0]
    device = spatial_shapes.device
    shapes = spatial_shapes.to(torch.int64)
    n = torch.arange(max_length, device=device)[None, :]  # (1, N)
    width = shapes[:, 1:]  # (B, 1)
    real = n < shapes.prod(-1, keepdim=True)  # (B, N): the first h*w rows are the image's cells
    cell = torch.stack([n // width, n % width], dim=-1) * real[..., None]  # (B, N, 2) (r, c); padding -> (0, 0)
    # Triangle filter along each axis (PIL / torch antialias): centre of output cell k in input coordinates is
    # (k + 0.5) * scale, and the filter widens to `scale` input cells when shrinking.
    scale = s / shapes.to(torch.float32)  # (B, 2) input cells per output cell, rows and columns
    support = scale.clamp(min=1.0)[:, None, :, None]  # (B, 1, 2, 1)
    center = (cell.to(torch.float32) + 0.5) * scale[:, None, :]  # (B, N, 2)
    source = torch.arange(s, device=device, dtype=torch.float32) + 0.5  # (s,) input cell centres
    weights = (1.0 - (source - center[..., None]).abs() / support).clamp(min=0.0)  # (B, N, 2, s)
    weights = weights / weights.sum(-1, keepdim=True)
    weights = (weights[..., 0, :, None] * weights[..., 1, None, :]).flatten(-2)  # (B, N, s*s): row x column
    flat = grid.reshape(s * s, grid.shape[-1]).float()  # (s*s, D)
    return (weights.to(flat.device) @ flat).to(grid.dtype)  # (B, N, D)


class Siglip2VisionEmbeddings(nn.Module):
    """Linear patch embedding plus the learned position grid resized to each image (no CLS token)."""

    def __init__(self, config: Siglip2VisionConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.patch_size = config.patch_size
        self.patch_embedding = nn.Linear(config.num_channels * self.patch_size**2, self.embed_dim)
        self.num_patches = config.num_patches
        self.position_embedding_size = int(round(self.num_patches**0.5))  # s; the config checks s*s == num_patches
        self.position_embedding = _embedding(self.num_patches, self.embed_dim)

    def reset_parameters_siglip(self) -> None:
        nn.init.normal_(self.position_embedding.weight, std=self.embed_dim**-0.5)
        lecun_normal_(self.patch_embedding.weight)
        nn.init.zeros_(self.patch_embedding.bias)

    def forward(self, pixel_values: torch.Tensor, spatial_shapes: torch.Tensor) -> torch.Tensor:
        """(B, N, C*p*p) patches and (B, 2) grid shapes -> (B, N, D) embeddings."""
        weight = self.patch_embedding.weight
        patch_embeds = self.patch_embedding(pixel_values.to(dtype=weight.dtype))  # (B, N, D)
        s = self.position_embedding_size
        grid = self.position_embedding.weight.reshape(s, s, self.embed_dim)  # row r, column c = index r*s + c
        return patch_embeds + resize_position_grid(grid, spatial_shapes, pixel_values.shape[1])


def check_naflex_inputs(
    pixel_values: Any,
    pixel_attention_mask: torch.Tensor | None,
    spatial_shapes: Any,
    config: Siglip2VisionConfig,
    owner: str,
) -> torch.Tensor:
    """Raise a ValueError naming the problem when the three NaFlex inputs don't describe one padded batch.

    ``pixel_attention_mask`` may be None only when no image is padded (every h*w == N); otherwise each mask row
    must be h*w ones followed by zeros, since position embeddings are laid out on the first h*w rows. Types and
    shapes are always checked; values only when running eagerly (``tracing()``: a graph can't branch on them).

    Returns:
        ``spatial_shapes`` as a (B, 2) integer tensor.
    """
    check_pixel_values(pixel_values, owner, config.num_channels, ndim=3)
    B, N, patch_dim = pixel_values.shape
    C, p = config.num_channels, config.patch_size
    if patch_dim != C * p * p:
        raise ValueError(
            f"{owner}: pixel_values has {patch_dim} values per patch but the model expects "
            f"num_channels*patch_size**2 = {C}*{p}*{p} = {C * p * p}"
        )
    if spatial_shapes is None:
        raise ValueError(f"{owner} needs spatial_shapes, the (height, width) of each image in patches, shape (B, 2)")
    spatial_shapes = torch.as_tensor(spatial_shapes)
    if spatial_shapes.shape != (B, 2) or spatial_shapes.is_floating_point() or spatial_shapes.dtype == torch.bool:
        raise ValueError(
            f"{owner}: spatial_shapes must be an integer tensor of shape ({B}, 2), "
            f"got {spatial_shapes.dtype} {tuple(spatial_shapes.shape)}"
        )
    if pixel_attention_mask is not None and (
        not isinstance(pixel_attention_mask, torch.Tensor) or pixel_attention_mask.shape != (B, N)
    ):
        shape = tuple(pixel_attention_mask.shape) if isinstance(pixel_attention_mask, torch.Tensor) else None
        raise ValueError(f"{owner}: pixel_attention_mask must have shape ({B}, {N}) like pixel_values, got {shape}")
    if not tracing():
        _check_naflex_values(pixel_attention_mask, spatial_shapes, N, owner)
    return spatial_shapes


def _check_naflex_values(mask: torch.Tensor | None, spatial_shapes: torch.Tensor, N: int, owner: str) -> None:
    """The value half of ``check_naflex_inputs``: grids fit N, and the mask is each grid's h*w-long prefix."""
    lengths = spatial_shapes[:, 0] * spatial_shapes[:, 1]  # (B,) real patches per image
    bad = ((spatial_shapes <= 0).any(-1) | (lengths > N)).nonzero().flatten().tolist()
    if bad:
        h, w = spatial_shapes[bad[0]].tolist()
        raise ValueError(
            f"{owner}: spatial_shapes[{bad[0]}] = ({h}, {w}) must have h > 0, w > 0 and h*w <= {N} "
            f"(the padded patch count of pixel_values)"
        )
    if mask is None:
        if bool((lengths != N).any()):
            raise ValueError(
                f"{owner}: pixel_attention_mask is required when images are padded (some h*w < {N}); "
                f"pass the mask the image processor returned"
            )
        return
    lengths = lengths.to(mask.device)
    counts = (mask != 0).sum(-1)  # (B,)
    row = int((counts != lengths).int().argmax())
    if counts[row] != lengths[row]:
        raise ValueError(
            f"{owner}: spatial_shapes[{row}] = {tuple(spatial_shapes[row].tolist())} gives {int(lengths[row])} "
            f"patches but pixel_attention_mask[{row}] has {int(counts[row])} ones"
        )
    prefix = torch.arange(N, device=mask.device)[None, :] < lengths[:, None]  # (B, N)
    if not bool((mask == prefix.to(mask.dtype)).all()):
        raise ValueError(f"{owner}: each pixel_attention_mask row must be h*w ones followed by zeros")


# ------------------------------------------------------------------------------------------------------------
# Towers
# ------------------------------------------------------------------------------------------------------------


class Siglip2TextModel(SiglipTextModel):
    """The SigLIP2 text tower: SigLIP's, unchanged (transformers ``Siglip2TextModel``); real vocab 256000."""

    config_class = Siglip2TextConfig


class Siglip2VisionModel(SiglipVisionModel):
    """The NaFlex vision tower (transformers ``Siglip2VisionModel``).

    SigLIP's encoder, post LayerNorm and MAP head on ``Siglip2VisionEmbeddings``; ``pixel_attention_mask`` masks
    padded patches as keys in every encoder layer and in the pooling head. Padded rows of ``last_hidden_state``
    are computed (they attend to the real patches) but carry no meaning.
    """

    config_class = Siglip2VisionConfig
    embeddings_class = Siglip2VisionEmbeddings

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling | tuple:
        """(B, N, C*p*p) patches, (B, N) mask and (B, 2) grid shapes -> last_hidden_state (B, N, D), pooler (B, D)."""
        name = type(self).__name__
        flags = _check_output_flags(kwargs, name)
        spatial_shapes = check_naflex_inputs(pixel_values, pixel_attention_mask, spatial_shapes, self.config, name)
        hidden_states = self.embeddings(pixel_values, spatial_shapes)
        return self._encode(hidden_states, pixel_attention_mask, *flags)


# ------------------------------------------------------------------------------------------------------------
# Joint model and classifier
# ------------------------------------------------------------------------------------------------------------


class Siglip2Model(SiglipModel):
    """SigLIP2 NaFlex: text tower, NaFlex vision tower, ``logit_scale`` / ``logit_bias`` (``Siglip2Model``).

    ``logits_per_text = normalize(text) @ normalize(image).T * exp(logit_scale) + logit_bias``, sigmoid scores.
    """

    config_class = Siglip2Config
    text_model_class = Siglip2TextModel
    vision_model_class = Siglip2VisionModel

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **kwargs: Any,
    ) -> SiglipOutput | tuple:
        """Either modality may be omitted: the other's fields are then None (transformers raises instead)."""
        vision_inputs = None
        if pixel_values is not None:
            vision_inputs = _vision_inputs(pixel_values, pixel_attention_mask, spatial_shapes)
        return self._joint_forward(input_ids, attention_mask, position_ids, return_loss, vision_inputs, kwargs)

    def get_image_features(
        self,
        pixel_values: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Unnormalised image embeddings (B, D): the vision tower's ``pooler_output``."""
        kwargs.pop("return_dict", None)
        vision_inputs = _vision_inputs(pixel_values, pixel_attention_mask, spatial_shapes)
        return self.vision_model(**vision_inputs, **kwargs).pooler_output


def _vision_inputs(
    pixel_values: torch.Tensor | None, pixel_attention_mask: torch.Tensor | None, spatial_shapes: torch.Tensor | None
) -> dict[str, Any]:
    return {
        "pixel_values": pixel_values,
        "pixel_attention_mask": pixel_attention_mask,
        "spatial_shapes": spatial_shapes,
    }


class Siglip2ForImageClassification(SiglipForImageClassification):
    """NaFlex vision tower + linear classifier on the mean of the real patches (transformers
    ``Siglip2ForImageClassification``): ``sum(x * mask) / sum(mask)`` over the patch axis.
    """

    config_class = Siglip2Config
    vision_model_class = Siglip2VisionModel

    def _pool(
        self, last_hidden_state: torch.Tensor, pixel_attention_mask: torch.Tensor | None = None, **_: Any
    ) -> torch.Tensor:
        if pixel_attention_mask is None:
            return last_hidden_state.mean(dim=1)  # nothing padded (the tower checked it)
        mask = pixel_attention_mask[..., None].to(last_hidden_state.device)  # (B, N, 1)
        return (last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1)  # (B, N, D) -> (B, D)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> ImageClassifierOutput | tuple:
        """Logits (B, num_labels); with ``labels``, transformers' problem_type loss."""
        return self._classify(_vision_inputs(pixel_values, pixel_attention_mask, spatial_shapes), labels, kwargs)
