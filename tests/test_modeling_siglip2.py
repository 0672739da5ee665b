"""Parity of the SigLIP2 models with transformers (the oracle), NaFlex and FixRes.

Every checkpoint is a random-weight model built and saved by transformers; siglip loads it from disk and both run
the same inputs. NaFlex inputs are random patchified tensors with their mask and spatial shapes (no image
processor involved). fp32 tolerance: every element within ``RTOL * (max|ref| + |ref|)``, i.e. a relative error of
1e-5 measured against the largest reference value. Attention maps are compared on every row, padded query rows
included: with a key-only mask they are well defined in transformers too (they attend to the real patches).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
from transformers.models.siglip2.modeling_siglip2 import Siglip2VisionEmbeddings as RefSiglip2VisionEmbeddings  # noqa: E402

from siglip import modeling_siglip2  # noqa: E402
from siglip.auto import AutoModel, AutoModelForImageClassification  # noqa: E402
from siglip.modeling_siglip import (  # noqa: E402
    SiglipForImageClassification,
    SiglipModel,
    SiglipTextModel,
    SiglipVisionModel,
)
from siglip.modeling_siglip2 import (  # noqa: E402
    Siglip2ForImageClassification,
    Siglip2Model,
    Siglip2TextModel,
    Siglip2VisionModel,
)

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

RTOL = 1e-5  # fp32 against fp32
BF16_TOL = 2e-2  # bf16 against transformers bf16


def tower(hidden: int, intermediate: int, layers: int, heads: int, **extra) -> dict:
    """A tower config dict: the four sizes plus any other field."""
    return dict(
        hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers, num_attention_heads=heads, **extra
    )


# Tiny odd sizes: heads not a power of two, text projection (30) != text hidden (24), patch 3 (27 values/patch).
TEXT = tower(24, 37, 2, 3, vocab_size=99, max_position_embeddings=12, projection_size=30)
VISION = tower(30, 44, 2, 5, patch_size=3)
PATCH_DIM = 3 * 3 * 3

MIXED = [(1, 256), (16, 16), (7, 32), (3, 5), (1, 1)]
# case id -> (position table size num_patches, image grids (h, w), padded length N, text attention mask?)
CASES = {
    "grid8x8-N256": (64, MIXED, 256, False),
    "grid16x16-N256": (256, MIXED, 256, False),
    "grid16x16-N300": (256, [(16, 16), (7, 32), (3, 5), (1, 1), (12, 25), (17, 17)], 300, True),
    "grid24x24-N1024": (576, [(32, 32), (20, 51), (7, 32), (1, 1)], 1024, False),
}


# ------------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------------


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere (LayerNorm gains near 1, non-zero biases and logit scale/bias) so no part is trivial.

    Uniform with std 1/sqrt(fan_in): fast enough for a 256000-token table.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            a = math.sqrt(3.0 / p.shape[-1]) if p.dim() >= 2 else 0.3
            p.uniform_(-a, a, generator=g)
            if "norm" in name and name.endswith("weight"):
                p.add_(1.0)
        if hasattr(model, "logit_scale"):
            model.logit_scale.fill_(math.log(10.0))
            model.logit_bias.fill_(-2.5)


def naflex_config(num_patches: int = 64, vision_use_head: bool = True, **kwargs) -> transformers.Siglip2Config:
    vision = dict(VISION, num_patches=num_patches, vision_use_head=vision_use_head)
    return transformers.Siglip2Config(text_config=dict(TEXT), vision_config=vision, **kwargs)


def save_random(model: torch.nn.Module, path) -> str:
    randomize_(model)
    model.save_pretrained(path)
    return str(path)


def naflex_inputs(shapes, max_patches: int, mask_dtype=torch.int32, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random patch rows for each (h, w) grid, zero padding up to ``max_patches``, the prefix mask and shapes.

    Image i's rows do not depend on ``max_patches``, so two calls differing only in padding hold the same images.
    """
    g = torch.Generator().manual_seed(seed)
    pixel_values = torch.zeros(len(shapes), max_patches, PATCH_DIM)
    mask = torch.zeros(len(shapes), max_patches, dtype=mask_dtype)
    for i, (h, w) in enumerate(shapes):
        pixel_values[i, : h * w] = torch.randn(h * w, PATCH_DIM, generator=g)
        mask[i, : h * w] = 1
    return {
        "pixel_values": pixel_values,
        "pixel_attention_mask": mask,
        "spatial_shapes": torch.tensor(shapes, dtype=torch.long),
    }


def text_inputs(batch: int, with_mask: bool, vocab: int = TEXT["vocab_size"], length: int = 12, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    inputs = {"input_ids": torch.randint(0, vocab, (batch, length), generator=g)}
    if with_mask:
        mask = torch.ones(batch, length, dtype=torch.long)
        for i in range(batch):
            mask[i, length - i :] = 0  # row i ends with i padding tokens
        inputs["attention_mask"] = mask
    return inputs


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30))


def assert_close(ours: torch.Tensor, ref: torch.Tensor, tol: float = RTOL, where: str = "") -> None:
    """Same shape and dtype, and |ours - ref| <= tol * (max|ref| + |ref|) elementwise."""
    assert ours.shape == ref.shape, f"{where}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    assert ours.dtype == ref.dtype, f"{where}: dtype {ours.dtype} vs {ref.dtype}"
    atol = tol * float(ref.float().abs().max())
    torch.testing.assert_close(ours.float(), ref.float(), rtol=tol, atol=atol, msg=lambda m: f"{where}: {m}")


def assert_outputs_close(ours, ref, tol: float = RTOL, where: str = "out", skip: frozenset = frozenset()) -> None:
    """Walk two outputs (ModelOutput / tuple / tensor) together: same fields in the same order, every tensor close."""
    if isinstance(ref, torch.Tensor):
        assert isinstance(ours, torch.Tensor), f"{where}: {type(ours).__name__} where transformers has a tensor"
        assert_close(ours, ref, tol, where)
    elif isinstance(ref, dict):
        ref_keys = [k for k in ref if k not in skip]
        assert [k for k in ours if k not in skip] == ref_keys, f"{where}: fields {list(ours)} vs {list(ref)}"
        for key in ref_keys:
            assert_outputs_close(ours[key], ref[key], tol, f"{where}.{key}", skip)
    else:
        assert isinstance(ours, tuple) and isinstance(ref, tuple), f"{where}: {type(ours)} vs {type(ref)}"
        assert len(ours) == len(ref), f"{where}: {len(ours)} entries vs {len(ref)}"
        for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
            assert_outputs_close(a, b, tol, f"{where}[{i}]", skip)


@functools.cache
def load_ref(cls_name: str, path: str, impl: str = "sdpa"):
    return getattr(transformers, cls_name).from_pretrained(path, attn_implementation=impl).eval()


@functools.cache
def load_ours(cls: type, path: str, impl: str = "sdpa"):
    return cls.from_pretrained(path, attn_implementation=impl)


@pytest.fixture(scope="module")
def naflex_checkpoint(tmp_path_factory):
    """``get(num_patches, vision_use_head)`` -> folder of a random transformers Siglip2Model (built once)."""
    cache: dict[tuple, str] = {}

    def get(num_patches: int = 64, vision_use_head: bool = True) -> str:
        key = (num_patches, vision_use_head)
        if key not in cache:
            torch.manual_seed(0)
            model = transformers.Siglip2Model(naflex_config(num_patches, vision_use_head))
            cache[key] = save_random(model, tmp_path_factory.mktemp(f"siglip2-{num_patches}-{vision_use_head}"))
        return cache[key]

    return get


# ------------------------------------------------------------------------------------------------------------
# NaFlex: joint model and towers against transformers
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("case", list(CASES))
def test_siglip2_model_matches_transformers(naflex_checkpoint, case, impl):
    """Every output of Siglip2Model: logits, embeddings, loss, both towers' states and all attention maps.

    siglip computes attention maps the eager way whatever the implementation (transformers returns them only
    under eager), so the maps come from a second call, compared with transformers' eager run.
    """
    num_patches, shapes, max_patches, text_mask = CASES[case]
    path = naflex_checkpoint(num_patches)
    ours, ref = load_ours(Siglip2Model, path, impl), load_ref("Siglip2Model", path, impl)
    inputs = {**naflex_inputs(shapes, max_patches), **text_inputs(len(shapes), text_mask)}
    with torch.no_grad():
        out = ours(**inputs, return_loss=True, output_hidden_states=True)
        expected = ref(**inputs, return_loss=True, output_hidden_states=True)
        with_maps = ours(**inputs, output_attentions=True)
        expected_maps = load_ref("Siglip2Model", path, "eager")(**inputs, output_attentions=True)
    assert out.loss is not None and out.logits_per_image.shape == (len(shapes), len(shapes))
    assert_outputs_close(out, expected)
    assert_outputs_close(with_maps, expected_maps)
    vision_maps = with_maps.vision_model_output.attentions
    assert len(vision_maps) == VISION["num_hidden_layers"]
    assert vision_maps[0].shape == (len(shapes), VISION["num_attention_heads"], max_patches, max_patches)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_extra_padding_leaves_valid_outputs_unchanged(naflex_checkpoint, impl):
    """The same images padded to 256, 300 and 401 patches: pooled, logits and the real rows do not move."""
    model = load_ours(Siglip2Model, naflex_checkpoint(64), impl)
    text = text_inputs(len(MIXED), False)
    outs, maps = {}, {}
    with torch.no_grad():
        for n in (256, 300, 401):
            outs[n] = model(**naflex_inputs(MIXED, n), **text, output_hidden_states=True)
            maps[n] = model.vision_model(**naflex_inputs(MIXED, n), output_attentions=True).attentions  # eager math
    base = outs[256].vision_model_output
    for n in (300, 401):
        out, vision = outs[n], outs[n].vision_model_output
        assert_close(out.logits_per_image, outs[256].logits_per_image, where=f"N={n} logits")
        assert_close(out.image_embeds, outs[256].image_embeds, where=f"N={n} image_embeds")
        assert_close(vision.pooler_output, base.pooler_output, where=f"N={n} pooler_output")
        for i, (h, w) in enumerate(MIXED):
            k = h * w  # image i's real rows
            assert_close(vision.last_hidden_state[i, :k], base.last_hidden_state[i, :k], where=f"N={n} image {i}")
            for layer, (a, b) in enumerate(zip(vision.hidden_states, base.hidden_states, strict=True)):
                assert_close(a[i, :k], b[i, :k], where=f"N={n} image {i} hidden_states[{layer}]")
            for layer, (a, b) in enumerate(zip(maps[n], maps[256], strict=True)):
                assert_close(a[i, :, :k, :k], b[i, :, :k, :k], where=f"N={n} image {i} attentions[{layer}]")
                assert torch.all(a[i, :, :, k:] == 0), "padded patches must get exactly zero attention"


def test_text_tower_matches_transformers(naflex_checkpoint):
    path = naflex_checkpoint(64)
    ours = Siglip2TextModel.from_pretrained(path, attn_implementation="eager")
    ref = transformers.Siglip2TextModel.from_pretrained(path, attn_implementation="eager").eval()
    for with_mask in (False, True):
        inputs = text_inputs(4, with_mask)
        with torch.no_grad():
            out = ours(**inputs, output_hidden_states=True, output_attentions=True)
            expected = ref(**inputs, output_hidden_states=True, output_attentions=True)
        assert out.pooler_output.shape == (4, TEXT["projection_size"])
        assert_outputs_close(out, expected)


@pytest.mark.parametrize("tower", ["vision", "text"])
def test_towers_load_their_part_of_a_joint_checkpoint(naflex_checkpoint, tower):
    path = naflex_checkpoint(256)
    joint = load_ref("Siglip2Model", path)
    if tower == "vision":
        model, inputs, part = Siglip2VisionModel.from_pretrained(path), naflex_inputs(MIXED, 256), joint.vision_model
    else:
        model, inputs, part = Siglip2TextModel.from_pretrained(path), text_inputs(3, False), joint.text_model
    assert model.config_class.model_type.startswith("siglip2_")
    with torch.no_grad():
        assert_outputs_close(model(**inputs, output_hidden_states=True), part(**inputs, output_hidden_states=True))


def test_auto_model_dispatches_siglip2(naflex_checkpoint):
    path = naflex_checkpoint(64)
    assert type(AutoModel.from_pretrained(path)) is Siglip2Model
    assert type(AutoModelForImageClassification.from_pretrained(path, num_labels=3)) is Siglip2ForImageClassification


def test_features_and_single_modality_forward(naflex_checkpoint):
    """get_*_features return the (B, dim) pooled tensors; forward with one modality leaves the other None."""
    path = naflex_checkpoint(64)
    ours, ref = load_ours(Siglip2Model, path), load_ref("Siglip2Model", path)
    images, text = naflex_inputs(MIXED, 256), text_inputs(3, False)
    with torch.no_grad():
        image_features = ours.get_image_features(**images)
        text_features = ours.get_text_features(**text)
        assert_close(image_features, ref.get_image_features(**images).pooler_output, where="get_image_features")
        assert_close(text_features, ref.get_text_features(**text).pooler_output, where="get_text_features")
        only_images = ours(**images)
        only_text = ours(**text)
    assert image_features.shape == (len(MIXED), VISION["hidden_size"])
    assert text_features.shape == (3, TEXT["projection_size"])
    assert only_images.logits_per_image is None and only_images.text_embeds is None
    assert only_images.text_model_output is None
    assert_close(only_images.image_embeds, F.normalize(image_features, dim=-1), where="image-only image_embeds")
    assert only_text.image_embeds is None and only_text.vision_model_output is None
    assert_close(only_text.text_embeds, F.normalize(text_features, dim=-1), where="text-only text_embeds")
    with pytest.raises(ValueError, match="return_loss"):
        ours(**images, return_loss=True)


def test_return_dict_false_gives_transformers_tuples(naflex_checkpoint):
    path = naflex_checkpoint(64)
    images, text = naflex_inputs(MIXED, 256), text_inputs(len(MIXED), False)
    ours, ref = load_ours(Siglip2Model, path), load_ref("Siglip2Model", path)
    with torch.no_grad():
        assert_outputs_close(
            ours(**images, **text, return_loss=True, return_dict=False),
            ref(**images, **text, return_loss=True, return_dict=False),
        )
        tower = ours.vision_model(**images, output_hidden_states=True, return_dict=False)
        assert_outputs_close(tower, ref.vision_model(**images, output_hidden_states=True, return_dict=False))
    assert isinstance(tower, tuple) and len(tower) == 3  # last_hidden_state, pooler_output, hidden_states


def test_no_mask_is_accepted_when_nothing_is_padded(naflex_checkpoint):
    path = naflex_checkpoint(64)
    ours, ref = load_ours(Siglip2VisionModel, path), load_ref("Siglip2VisionModel", path)
    full = naflex_inputs([(16, 16), (8, 32), (1, 256)], 256)
    no_mask = {**full, "pixel_attention_mask": None}
    with torch.no_grad():
        out = ours(**no_mask)
        assert_outputs_close(out, ref(**no_mask))
        assert_outputs_close(out, ours(**full))


def test_vision_tower_without_head(naflex_checkpoint):
    """vision_use_head=False (VLM towers): no pooler_output, the rest as transformers; the joint model refuses."""
    path = naflex_checkpoint(64, vision_use_head=False)
    images = naflex_inputs(MIXED, 256)
    model = Siglip2VisionModel.from_pretrained(path)
    assert not hasattr(model, "head")
    with torch.no_grad():
        out = model(**images, output_hidden_states=True)
        assert_outputs_close(out, load_ref("Siglip2VisionModel", path)(**images, output_hidden_states=True))
    assert out.pooler_output is None
    with pytest.raises(ValueError, match="vision_use_head"):
        Siglip2Model.from_pretrained(path)(**images)


def test_gradients_match_transformers(naflex_checkpoint):
    """Training parity: the sigmoid loss's gradient on every parameter, the position grid included."""
    path = naflex_checkpoint(64)
    ours = Siglip2Model.from_pretrained(path)
    ref = transformers.Siglip2Model.from_pretrained(path)
    inputs = {**naflex_inputs(MIXED, 256), **text_inputs(len(MIXED), False)}
    ours(**inputs, return_loss=True).loss.backward()
    ref(**inputs, return_loss=True).loss.backward()
    ref_grads = {name: p.grad for name, p in ref.named_parameters()}
    ours_grads = {name: p.grad for name, p in ours.named_parameters()}
    assert ours_grads.keys() == ref_grads.keys()
    assert float(ours_grads["vision_model.embeddings.position_embedding.weight"].abs().max()) > 0
    for name, grad in ours_grads.items():
        assert_close(grad, ref_grads[name], where=f"grad {name}")


# ------------------------------------------------------------------------------------------------------------
# Position grid resize
# ------------------------------------------------------------------------------------------------------------


def _resize_cases(grid_side: int) -> list[list[tuple[int, int]]]:
    """Batches of grids: every (h, w) with h*w <= grid_side**2, thin (1, N) / (N, 1) grids up to 1024, odd budgets."""
    every = [(h, w) for h in range(1, 65) for w in range(1, 65) if h * w <= grid_side**2]
    thin = [(1, n) for n in (1, 2, 3, 7, 8, 9, 63, 64, 65, 234, 700, 1023, 1024)]
    thin += [(n, 1) for n in (2, 5, 16, 17, 234, 701, 1024)]
    odd = [(3, 341), (341, 3), (31, 33), (13, 78), (45, 22), (2, 511), (32, 32), (1, 1)]
    return [every, thin, odd]


@pytest.mark.parametrize("grid_side", [8, 16])
def test_position_resize_matches_transformers(grid_side):
    """Every small grid, thin grids and odd budgets: values and gradients within 1e-6 of transformers (fp32).

    Thin grids are the case PyTorch's CPU antialias kernel gets wrong (one output side 1, the other larger than
    the table); transformers computes the separable weights itself, and so do we.
    """
    for shapes in _resize_cases(grid_side):
        n = max(h * w for h, w in shapes)
        spatial_shapes = torch.tensor(shapes)
        g = torch.Generator().manual_seed(n)
        grid = torch.randn(grid_side, grid_side, 30, generator=g)
        grid_ours, grid_ref = grid.clone().requires_grad_(), grid.clone().requires_grad_()
        resized = modeling_siglip2.resize_position_grid(grid_ours, spatial_shapes, n)
        expected = RefSiglip2VisionEmbeddings.resize_positional_embeddings(grid_ref, spatial_shapes, n)
        assert resized.shape == expected.shape == (len(shapes), n, 30)
        torch.testing.assert_close(resized, expected, rtol=0, atol=1e-6)
        upstream = torch.randn(resized.shape, generator=g)
        (resized * upstream).sum().backward()
        (expected * upstream).sum().backward()
        torch.testing.assert_close(grid_ours.grad, grid_ref.grad, rtol=0, atol=1e-6 * float(grid_ref.grad.abs().max()))


def test_position_resize_equals_separable_interpolation():
    """An oracle independent of transformers: resizing rows, then columns, with PyTorch's antialiased bilinear
    kernel on grids where both output sides are >= 2 (where that kernel is right), equals our one-step result;
    and rows past h*w repeat row 0."""
    grid = torch.randn(16, 16, 12, generator=torch.Generator().manual_seed(0))
    image = grid.permute(2, 0, 1)[None]  # (1, D, s, s)
    for h, w in [(2, 2), (3, 5), (7, 32), (20, 3), (16, 16), (40, 9)]:
        rows = F.interpolate(image, size=(h, 16), mode="bilinear", align_corners=False, antialias=True)
        both = F.interpolate(rows, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        expected = both[0].reshape(12, h * w).t()
        resized = modeling_siglip2.resize_position_grid(grid, torch.tensor([[h, w]]), h * w + 5)[0]
        torch.testing.assert_close(resized[: h * w], expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(resized[h * w :], resized[:1].expand(5, -1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_position_resize_low_precision_is_computed_in_float32(dtype):
    """Half-precision grids are resized in float32 and cast back, as transformers does on every device."""
    shapes = torch.tensor([(16, 16), (7, 32), (1, 234), (234, 1)])
    grid = torch.randn(8, 8, 30, generator=torch.Generator().manual_seed(0)).to(dtype)
    resized = modeling_siglip2.resize_position_grid(grid, shapes, 256)
    expected = RefSiglip2VisionEmbeddings.resize_positional_embeddings(grid, shapes, 256)
    assert resized.dtype == dtype
    exact = modeling_siglip2.resize_position_grid(grid.float(), shapes, 256).to(dtype)
    assert torch.equal(resized, exact)
    torch.testing.assert_close(resized.float(), expected.float(), rtol=0, atol=1e-2)


def test_thin_image_features_match_transformers(naflex_checkpoint):
    """The issue's case end to end: a 3x700 px image is a (1, 234)-ish patch grid; its embedding matches."""
    path = naflex_checkpoint(64)
    ours, ref = load_ours(Siglip2Model, path), load_ref("Siglip2Model", path)
    images = naflex_inputs([(1, 234), (234, 1), (2, 100)], 256)
    with torch.no_grad():
        assert_close(
            ours.get_image_features(**images), ref.get_image_features(**images).pooler_output, where="thin images"
        )


# ------------------------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------------------------


def _bad_inputs(change: str) -> dict:
    inputs = naflex_inputs([(3, 5), (2, 2)], 16)
    pv, mask, ss = inputs["pixel_values"], inputs["pixel_attention_mask"], inputs["spatial_shapes"]
    if change == "4d":
        inputs["pixel_values"] = pv.reshape(2, 16, 3, 9)
    elif change == "patch_dim":
        inputs["pixel_values"] = pv[..., :-1]
    elif change == "nan":
        pv[0, 0, 0] = float("nan")
    elif change == "inf":
        pv[1, 2, 3] = float("inf")
    elif change == "mask_shape":
        inputs["pixel_attention_mask"] = mask[:, :-1]
    elif change == "shapes_shape":
        inputs["spatial_shapes"] = ss[:1]
    elif change == "shapes_float":
        inputs["spatial_shapes"] = ss.float()
    elif change == "too_many":
        inputs["spatial_shapes"] = torch.tensor([[3, 5], [4, 5]])
    elif change == "zero":
        inputs["spatial_shapes"] = torch.tensor([[3, 5], [0, 4]])
    elif change == "negative":
        inputs["spatial_shapes"] = torch.tensor([[-3, -5], [2, 2]])
    elif change == "count":
        inputs["spatial_shapes"] = torch.tensor([[3, 5], [1, 3]])
    elif change == "not_prefix":
        mask[1] = 0
        mask[1, 4:8] = 1
    elif change == "no_mask":
        inputs["pixel_attention_mask"] = None
    elif change == "no_shapes":
        inputs["spatial_shapes"] = None
    elif change == "no_pixels":
        inputs["pixel_values"] = None
    return inputs


@pytest.mark.parametrize(
    "change, message",
    [
        ("4d", r"pixel_values must have shape \(batch, patches, channels\*patch\*patch\)"),
        ("patch_dim", r"26 values per patch but the model expects .* = 27"),
        ("nan", "NaN or infinite"),
        ("inf", "NaN or infinite"),
        ("mask_shape", r"pixel_attention_mask must have shape \(2, 16\)"),
        ("shapes_shape", r"spatial_shapes must be an integer tensor of shape \(2, 2\)"),
        ("shapes_float", r"spatial_shapes must be an integer tensor"),
        ("too_many", r"spatial_shapes\[1\] = \(4, 5\) must have h > 0, w > 0 and h\*w <= 16"),
        ("zero", r"spatial_shapes\[1\] = \(0, 4\)"),
        ("negative", r"spatial_shapes\[0\] = \(-3, -5\)"),
        ("count", r"spatial_shapes\[1\] = \(1, 3\) gives 3 patches but pixel_attention_mask\[1\] has 4 ones"),
        ("not_prefix", "h\\*w ones followed by zeros"),
        ("no_mask", "pixel_attention_mask is required"),
        ("no_shapes", "needs spatial_shapes"),
        ("no_pixels", "needs pixel_values"),
    ],
)
def test_bad_inputs_raise_clear_errors(naflex_checkpoint, change, message):
    model = load_ours(Siglip2VisionModel, naflex_checkpoint(64))
    with pytest.raises(ValueError, match=message):
        model(**_bad_inputs(change))


# ------------------------------------------------------------------------------------------------------------
# bf16, saving, classifier
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_bf16_matches_transformers_bf16(naflex_checkpoint, impl):
    path = naflex_checkpoint(256)
    ours = Siglip2Model.from_pretrained(path, dtype=torch.bfloat16, attn_implementation=impl)
    ref = transformers.Siglip2Model.from_pretrained(path, dtype=torch.bfloat16, attn_implementation=impl).eval()
    ref_fp32 = load_ref("Siglip2Model", path, impl)
    inputs = {**naflex_inputs(MIXED, 256), **text_inputs(len(MIXED), False)}
    with torch.no_grad():
        out, expected, exact = ours(**inputs), ref(**inputs), ref_fp32(**inputs)
    assert out.logits_per_image.dtype == torch.bfloat16
    assert_outputs_close(out, expected, tol=BF16_TOL)
    for field in ("logits_per_text", "image_embeds", "text_embeds"):
        assert relative_error(out[field], exact[field]) < 5e-2, field


@pytest.mark.parametrize("cls", [Siglip2Model, Siglip2VisionModel, Siglip2TextModel, Siglip2ForImageClassification])
def test_siglip_checkpoint_loads_in_transformers(naflex_checkpoint, tmp_path, cls):
    """siglip saves -> transformers loads with no missing or unexpected keys -> same outputs."""
    kwargs = {"num_labels": 3} if cls is Siglip2ForImageClassification else {}
    ours = cls.from_pretrained(naflex_checkpoint(64), **kwargs)
    ours.save_pretrained(tmp_path)
    ref, info = getattr(transformers, cls.__name__).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    inputs = {}
    if cls is not Siglip2TextModel:
        inputs.update(naflex_inputs(MIXED, 256))
    if cls in (Siglip2Model, Siglip2TextModel):
        inputs.update(text_inputs(len(MIXED), False))
    with torch.no_grad():
        assert_outputs_close(ours(**inputs, output_hidden_states=True), ref.eval()(**inputs, output_hidden_states=True))


@pytest.mark.parametrize("problem", ["single_label", "multi_label", "regression"])
@pytest.mark.parametrize("vision_use_head", [True, False])
def test_image_classifier_matches_transformers(tmp_path, problem, vision_use_head):
    """Masked-mean logits and transformers' problem_type loss; also with extra padding, which must not matter."""
    num_labels = {"single_label": 4, "multi_label": 4, "regression": 1}[problem]
    torch.manual_seed(0)
    config = naflex_config(64, vision_use_head, num_labels=num_labels)
    path = save_random(transformers.Siglip2ForImageClassification(config), tmp_path)
    ours = Siglip2ForImageClassification.from_pretrained(path, attn_implementation="eager")
    ref = transformers.Siglip2ForImageClassification.from_pretrained(path, attn_implementation="eager").eval()
    B = len(MIXED)
    g = torch.Generator().manual_seed(3)
    labels = {
        "single_label": torch.randint(0, num_labels, (B,), generator=g),
        "multi_label": torch.randint(0, 2, (B, num_labels), generator=g).float(),
        "regression": torch.randn(B, generator=g),
    }[problem]
    inputs = naflex_inputs(MIXED, 256)
    with torch.no_grad():
        out = ours(**inputs, labels=labels, output_hidden_states=True, output_attentions=True)
        expected = ref(**inputs, labels=labels, output_hidden_states=True, output_attentions=True)
        padded = ours(**naflex_inputs(MIXED, 320, mask_dtype=torch.bool), labels=labels)
    assert out.logits.shape == (B, num_labels)
    assert_outputs_close(out, expected)
    assert_close(padded.logits, out.logits, where="logits with more padding and a bool mask")
    assert_close(padded.loss, out.loss, where="loss with more padding and a bool mask")


# ------------------------------------------------------------------------------------------------------------
# SigLIP2 FixRes checkpoints (model_type "siglip") through the SigLIP classes
# ------------------------------------------------------------------------------------------------------------


def _fixres_inputs(image_size: int, vocab_size: int, batch: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, vocab_size, (batch, 64), generator=g)
    ids[0, -1] = vocab_size - 1  # the top of the 256000-token table
    return {"input_ids": ids, "pixel_values": torch.randn(batch, 3, image_size, image_size, generator=g)}


@pytest.mark.parametrize("image_size", [224, 256, 384, 512])
def test_fixres_siglip2_checkpoint_runs_through_siglip_classes(tmp_path, image_size):
    """vocab 256000, patch 16 at the released resolutions; tiny widths; joint model, towers and classifier."""
    text = tower(24, 40, 1, 3, vocab_size=256000, projection_size=30)
    vision = dict(VISION, num_hidden_layers=1, patch_size=16, image_size=image_size)
    torch.manual_seed(0)
    config = transformers.SiglipConfig(text_config=text, vision_config=vision)
    path = save_random(transformers.SiglipModel(config), tmp_path)
    ours = AutoModel.from_pretrained(path, attn_implementation="eager")
    ref = transformers.SiglipModel.from_pretrained(path, attn_implementation="eager").eval()
    assert type(ours) is SiglipModel
    inputs = _fixres_inputs(image_size, 256000)
    with torch.no_grad():
        out = ours(**inputs, return_loss=True, output_hidden_states=True, output_attentions=True)
        assert_outputs_close(out, ref(**inputs, return_loss=True, output_hidden_states=True, output_attentions=True))
        assert out.vision_model_output.last_hidden_state.shape[1] == (image_size // 16) ** 2
        vision = SiglipVisionModel.from_pretrained(path)(pixel_values=inputs["pixel_values"])
        assert_outputs_close(vision, ref.vision_model(pixel_values=inputs["pixel_values"]))
        text_out = SiglipTextModel.from_pretrained(path)(input_ids=inputs["input_ids"])
        assert_outputs_close(text_out, ref.text_model(input_ids=inputs["input_ids"]))
        classifier = SiglipForImageClassification.from_pretrained(path, num_labels=5)
        ref_classifier = transformers.SiglipForImageClassification.from_pretrained(path, num_labels=5).eval()
        ref_classifier.classifier.load_state_dict(classifier.classifier.state_dict())  # both heads start random
        labels = torch.tensor([1, 4])
        assert_outputs_close(
            classifier(pixel_values=inputs["pixel_values"], labels=labels),
            ref_classifier(pixel_values=inputs["pixel_values"], labels=labels),
        )


def test_giant_opt_fixres_at_real_layer_sizes(tmp_path):
    """siglip2-giant-opt-patch16-256 layer sizes with one layer per tower: text 1152 -> projection 1536."""
    text = tower(1152, 4304, 1, 16, vocab_size=256000, projection_size=1536)  # so400m-sized text tower
    vision = tower(1536, 6144, 1, 16, patch_size=16, image_size=256)  # giant: 40 layers in the real checkpoint
    config = transformers.SiglipConfig(text_config=text, vision_config=vision)
    from transformers import initialization  # a submodule: not loaded by `import transformers` alone

    with initialization.no_init_weights():  # randomize_ fills every weight; skip the slow default init
        ref = transformers.SiglipModel(config).eval()
    path = save_random(ref, tmp_path)
    ours = SiglipModel.from_pretrained(path)
    assert ours.text_model.head.weight.shape == (1536, 1152)
    inputs = _fixres_inputs(256, 256000)
    with torch.no_grad():
        out = ours(**inputs, output_hidden_states=True)
        expected = ref(**inputs, output_hidden_states=True)
    assert out.text_embeds.shape == out.image_embeds.shape == (2, 1536)
    assert_outputs_close(out, expected)
