"""Image loading and the FixRes / NaFlex image processors against transformers' PIL processors.

Every parity check compares with ``SiglipImageProcessorPil`` / ``Siglip2ImageProcessorPil`` from transformers 5 on
the same input and asserts bitwise-equal tensors (the brief allows 1e-6; we match exactly). Images are generated
(gradients, noise and drawn shapes); files are written to tmp_path; URLs are served by a local http.server.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import io
import json
import socket
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, features

from siglip.auto import AutoImageProcessor
from siglip.files import CheckpointError
from siglip.image_io import ImageLoadError, load_image
from siglip.image_processing import Siglip2ImageProcessor, SiglipImageProcessor, get_image_size_for_max_num_patches

transformers = pytest.importorskip("transformers")
from transformers import Siglip2ImageProcessorPil, SiglipImageProcessorPil  # noqa: E402
from transformers.image_transforms import convert_to_rgb  # noqa: E402
from transformers.image_utils import load_image as hf_load_image  # noqa: E402
from transformers.models.siglip2.image_processing_pil_siglip2 import (  # noqa: E402
    get_image_size_for_max_num_patches as hf_size_search,
)

# SigLIP v1 (bicubic, 224) and SigLIP2 FixRes (bilinear, 256) settings, as in the hub configs.
FIXRES_CONFIGS = {
    "siglip": {"size": {"height": 224, "width": 224}, "resample": 3},
    "siglip2-fixres": {"size": {"height": 256, "width": 256}, "resample": 2},
}


# ------------------------------------------------------------------------------------------------------------
# Generated images and helpers
# ------------------------------------------------------------------------------------------------------------


def drawn(height: int, width: int, seed: int = 0, alpha: bool = False) -> Image.Image:
    """Gradient + noise + a few filled shapes; with ``alpha``, an RGBA image with opaque, clear and partial areas."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    base = np.stack(np.broadcast_arrays(x, y, (x + y) / 2), axis=-1)  # (H, W, 3)
    noise = rng.integers(-40, 41, size=(height, width, 1), dtype=np.int16)
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    if alpha:
        a = np.clip(rng.integers(0, 256, size=(height, width, 1), dtype=np.int16) + (x[..., None] - 128), 0, 255)
        pixels = np.concatenate([pixels, a.astype(np.uint8)], axis=-1)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, x1 = sorted(rng.integers(0, width, 2).tolist())
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        colour = tuple(rng.integers(0, 256, 4 if alpha else 3).tolist())
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)((x0, y0, x1, y1), fill=colour)
    return image


def mode_image(mode: str, height: int = 37, width: int = 53) -> Image.Image:
    """A generated image in a PIL mode; "P+transparency" is a palette image with a transparent index."""
    rgba = drawn(height, width, seed=1, alpha=True)
    grey = np.asarray(rgba.convert("L"))
    if mode == "P":
        return rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    if mode == "P+transparency":
        image = rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        image.info["transparency"] = int(np.asarray(image)[0, 0])
        return image
    if mode == "I;16":
        return Image.fromarray(grey.astype(np.uint16) * 257)  # full 16-bit range
    if mode == "I":
        return Image.fromarray(grey.astype(np.int32) * 3 - 100)  # values below 0 and above 255
    if mode == "F":
        return Image.fromarray(grey.astype(np.float32) / 2.5)
    return rgba.convert(mode)


ALL_MODES = ["RGB", "RGBA", "LA", "L", "P", "P+transparency", "1", "I;16", "I", "F", "CMYK"]


def assert_same(ours, theirs) -> None:
    """Same keys, dtypes, shapes and values (bitwise; reports the max difference otherwise)."""
    assert set(ours.keys()) == set(theirs.keys())
    for key in theirs:
        a, b = ours[key], theirs[key]
        assert a.dtype == b.dtype and a.shape == b.shape, (key, a.dtype, b.dtype, a.shape, b.shape)
        if not torch.equal(a, b):
            diff = (a.double() - b.double()).abs().max().item()
            assert diff <= 1e-6, f"{key}: max abs difference {diff}"
            pytest.fail(f"{key}: not bitwise equal (max abs difference {diff})")


@pytest.fixture(scope="module")
def hf():
    """Default transformers PIL processors: (FixRes, NaFlex)."""
    return SiglipImageProcessorPil(), Siglip2ImageProcessorPil()


@pytest.fixture(scope="module")
def ours():
    return SiglipImageProcessor(), Siglip2ImageProcessor()


def both(hf, ours, images, fixres_kwargs=None, naflex_kwargs=None, hf_images=None) -> None:
    """Compare FixRes and NaFlex outputs on ``images`` (transformers gets ``hf_images`` when given)."""
    hf_images = images if hf_images is None else hf_images
    for i, kwargs in enumerate((fixres_kwargs or {}, naflex_kwargs or {})):
        assert_same(ours[i](images, return_tensors="pt", **kwargs), hf[i](hf_images, return_tensors="pt", **kwargs))


# ------------------------------------------------------------------------------------------------------------
# FixRes parity
# ------------------------------------------------------------------------------------------------------------

SIZES = [(1, 1), (2, 3), (17, 31), (224, 224), (480, 640), (1, 2000), (2000, 1), (3000, 4000)]


@pytest.mark.parametrize("config", list(FIXRES_CONFIGS))
@pytest.mark.parametrize("height,width", SIZES)
def test_fixres_matches_transformers_across_sizes(height, width, config):
    image = drawn(height, width, seed=height + width)
    kwargs = FIXRES_CONFIGS[config]
    out = SiglipImageProcessor(**kwargs)(image, return_tensors="pt")
    assert out["pixel_values"].shape == (1, 3, kwargs["size"]["height"], kwargs["size"]["width"])
    assert_same(out, SiglipImageProcessorPil(**kwargs)(image, return_tensors="pt"))


def test_fixres_other_settings_match_transformers():
    image = drawn(90, 70, seed=3)
    for kwargs in [
        {"size": {"height": 48, "width": 96}, "resample": 1},
        {"resample": 0, "image_mean": [0.48, 0.46, 0.41], "image_std": [0.27, 0.26, 0.28]},
        {"do_normalize": False},
        {"do_rescale": False},
        {"do_rescale": False, "do_normalize": False},  # uint8 out, as transformers
        {"rescale_factor": 1 / 127.5, "image_mean": 1.0, "image_std": 1.0},
    ]:
        theirs = SiglipImageProcessorPil()(image, return_tensors="pt", **kwargs)
        assert_same(SiglipImageProcessor()(image, return_tensors="pt", **kwargs), theirs)
        assert_same(SiglipImageProcessor(**kwargs)(image, return_tensors="pt"), theirs)  # set at construction


def test_return_tensors_variants(hf, ours):
    images = [drawn(30, 40, seed=5), drawn(50, 20, seed=6)]
    for i in (0, 1):
        np_ours, np_hf = ours[i](images, return_tensors="np"), hf[i](images, return_tensors="np")
        for key in np_hf:
            assert isinstance(np_ours[key], np.ndarray) and np.array_equal(np_ours[key], np_hf[key])
        list_ours, list_hf = ours[i](images), hf[i](images)
        for key in list_hf:
            assert len(list_ours[key]) == len(list_hf[key]) == 2
            for a, b in zip(list_ours[key], list_hf[key], strict=True):
                assert np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="return_tensors"):
        ours[0](images, return_tensors="tf")


# ------------------------------------------------------------------------------------------------------------
# NaFlex parity
# ------------------------------------------------------------------------------------------------------------

# (H, W) -> target size at max_num_patches 256 and 1024, p = 16 (reference doc section 4.2), plus (1, 1).
WORKED_SIZES = [
    ((224, 224), (256, 256), (512, 512)),
    ((384, 384), (256, 256), (512, 512)),
    ((1024, 1024), (256, 256), (512, 512)),
    ((224, 1024), (112, 512), (240, 1088)),
    ((480, 640), (224, 288), (432, 576)),
    ((300, 500), (192, 320), (384, 640)),
    ((16, 2000), (32, 2048), (48, 5456)),
    ((1, 1), (112, 112), (112, 112)),
]


@pytest.mark.parametrize("source,at_256,at_1024", WORKED_SIZES)
def test_naflex_worked_sizes(source, at_256, at_1024):
    assert get_image_size_for_max_num_patches(*source, 16, 256) == at_256 == hf_size_search(*source, 16, 256)
    assert get_image_size_for_max_num_patches(*source, 16, 1024) == at_1024 == hf_size_search(*source, 16, 1024)


def test_naflex_worked_sizes_through_the_processor():
    image = drawn(480, 640, seed=7)
    out = Siglip2ImageProcessor()(image, return_tensors="pt")
    assert out["spatial_shapes"].tolist() == [[14, 18]]  # 224x288
    assert out["pixel_attention_mask"].sum().item() == 14 * 18
    assert out["pixel_values"].shape == (1, 256, 768)
    assert torch.all(out["pixel_values"][0, 14 * 18 :] == 0)  # padding is zeros


@pytest.mark.parametrize("max_num_patches", [64, 256, 1024])
@pytest.mark.parametrize("height,width", [(1, 1), (5, 9), (480, 640), (300, 500), (1, 2000), (2000, 1), (3000, 4000)])
def test_naflex_matches_transformers(height, width, max_num_patches):
    image = drawn(height, width, seed=height * 7 + width)
    ours = Siglip2ImageProcessor(max_num_patches=max_num_patches)(image, return_tensors="pt")
    theirs = Siglip2ImageProcessorPil(max_num_patches=max_num_patches)(image, return_tensors="pt")
    assert_same(ours, theirs)
    assert ours["pixel_values"].shape == (1, max_num_patches, 768)


def test_naflex_per_call_overrides_match_transformers(hf):
    images = [drawn(100, 60, seed=8), drawn(33, 190, seed=9)]
    for kwargs in [
        {"max_num_patches": 64, "patch_size": 8},
        {"patch_size": 14},
        {"max_num_patches": 49, "resample": 3},
    ]:
        ours = Siglip2ImageProcessor()(images, return_tensors="pt", **kwargs)
        assert_same(ours, hf[1](images, return_tensors="pt", **kwargs))
        p = kwargs.get("patch_size", 16)
        assert ours["pixel_values"].shape[-1] == p * p * 3
        rows, cols = ours["spatial_shapes"].T
        assert torch.equal(ours["pixel_attention_mask"].sum(1), (rows * cols).int())


def test_naflex_patch_order_is_row_major_ph_pw_c():
    """Rebuild the image from the patches: (rows, cols, ph, pw, C) -> (H, W, C) must equal the resized image."""
    image = drawn(64, 96, seed=10)
    out = Siglip2ImageProcessor()(image, return_tensors="np", max_num_patches=24, patch_size=16, do_resize=False)
    rows, cols = out["spatial_shapes"][0]
    assert (rows, cols) == (4, 6)
    patches = out["pixel_values"][0, : rows * cols].reshape(rows, cols, 16, 16, 3)
    rebuilt = patches.transpose(0, 2, 1, 3, 4).reshape(64, 96, 3)
    expected = (np.asarray(image).astype(np.float64) / 255).astype(np.float32)
    np.testing.assert_array_equal(rebuilt, (expected - np.float32(0.5)) / np.float32(0.5))


def test_naflex_do_resize_false_needs_patch_multiples():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        Siglip2ImageProcessor()(drawn(20, 32), do_resize=False)
    with pytest.raises(ValueError, match="more than max_num_patches"):
        Siglip2ImageProcessor()(drawn(64, 64), do_resize=False, max_num_patches=8)


# ------------------------------------------------------------------------------------------------------------
# PIL modes
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_pil_mode(mode, hf, ours):
    image = mode_image(mode)
    assert image.mode == mode.split("+")[0]
    # FixRes: transformers handles every mode; we must match it.
    assert_same(ours[0](image, return_tensors="pt"), hf[0](image, return_tensors="pt"))
    # NaFlex: transformers raises on non-RGB modes (or reads YCbCr-like bands as RGB); we convert first, exactly
    # as its own convert_to_rgb (used by FixRes) does, so we must equal it on the converted image.
    converted = convert_to_rgb(image, return_numpy=True)
    assert_same(ours[1](image, return_tensors="pt"), hf[1](converted, return_tensors="pt"))
    if mode in ("RGBA", "LA", "L", "P", "CMYK"):
        with pytest.raises(ValueError):
            hf[1](image, return_tensors="pt")


def test_alpha_is_composited_on_white(ours):
    clear = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    for processor in ours:
        out = processor(clear, return_tensors="pt")
        values = out["pixel_values"][0]
        if "pixel_attention_mask" in out:
            values = values[out["pixel_attention_mask"][0].bool()]
        assert torch.all(values == 1.0)  # white: (1 - 0.5) / 0.5


def test_three_band_modes_are_converted_for_naflex(ours):
    hsv = drawn(40, 40, seed=11).convert("HSV")
    out = ours[1](hsv, return_tensors="pt")
    assert_same(out, Siglip2ImageProcessorPil()(hsv.convert("RGB"), return_tensors="pt"))


def test_zero_sized_images_are_rejected(ours):
    for image in (Image.new("RGB", (0, 5)), np.zeros((0, 4, 3), np.uint8)):
        for processor in ours:
            with pytest.raises(ValueError, match="zero dimension"):
                processor(image)


# ------------------------------------------------------------------------------------------------------------
# Arrays and tensors
# ------------------------------------------------------------------------------------------------------------


def _arrays() -> dict[str, np.ndarray | torch.Tensor]:
    hwc = np.asarray(drawn(40, 60, seed=12))
    rgba = np.asarray(drawn(40, 60, seed=13, alpha=True))
    return {
        "hwc uint8": hwc,
        "chw uint8": hwc.transpose(2, 0, 1),
        "hwc float32 [0,1]": hwc.astype(np.float32) / 255,
        "chw float64 [0,1]": (hwc / 255).transpose(2, 0, 1),
        "hwc float64 whole numbers": hwc.astype(np.float64),
        "hwc 1 channel": hwc[:, :, :1],
        "chw 1 channel": hwc[:, :, 0][None],
        "hwc rgba uint8": rgba,
        "hwc rgba float32": rgba.astype(np.float32) / 255,
        "torch chw uint8": torch.from_numpy(hwc.transpose(2, 0, 1).copy()),
        "torch hwc float32": torch.from_numpy(hwc.astype(np.float32) / 255),
        "batch nhwc uint8": np.stack([hwc, hwc[::-1]]),
        "torch batch nchw float32": torch.from_numpy(np.stack([hwc, hwc[:, ::-1]]).transpose(0, 3, 1, 2) / 255).float(),
    }


@pytest.mark.parametrize("name", list(_arrays()))
def test_arrays_and_tensors_match_transformers(name, hf, ours):
    array = _arrays()[name]
    hf_array = array
    for i, processor in enumerate(ours):
        if i == 1 and array.shape[-1] != 3 and array.shape[-3] != 3:
            # transformers' NaFlex does not convert grey / RGBA arrays; compare on its own conversion
            hf_array = convert_to_rgb(array.numpy() if isinstance(array, torch.Tensor) else array, return_numpy=True)
        for kwargs in ({}, {"do_rescale": False}, {"do_resize": False}):
            if i == 1 and kwargs.get("do_resize") is False:
                continue  # 40x60 is not a multiple of the patch size
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the [0, 1] float warning has its own test
                out = processor(array, return_tensors="pt", **kwargs)
            assert_same(out, hf[i](hf_array, return_tensors="pt", **kwargs))


def test_float_inputs_in_unit_range_need_do_rescale_false(ours):
    """transformers' trap, kept for parity: [0, 1] floats are rescaled twice unless do_rescale=False."""
    image = np.asarray(drawn(40, 60, seed=14))
    as_float = image.astype(np.float32) / 255
    with pytest.warns(UserWarning, match="do_rescale=False"):
        doubled = ours[0](as_float, return_tensors="pt")["pixel_values"]
    assert doubled.max() < -0.98  # everything near -1
    # with do_rescale=False the float input is within one uint8 step of the uint8 input (truncation, not rounding)
    fixed = ours[0](as_float, return_tensors="pt", do_rescale=False)["pixel_values"]
    reference = ours[0](image, return_tensors="pt")["pixel_values"]
    assert (fixed - reference).abs().max() <= 2 / 255 + 1e-6


def test_ambiguous_layout_and_input_data_format(hf, ours):
    tiny = np.asarray(drawn(4, 4, seed=15))  # (4, 4, 3): read as channels-first (4 channels) by default
    for kwargs in ({}, {"input_data_format": "channels_last"}):
        assert_same(ours[0](tiny, return_tensors="pt", **kwargs), hf[0](tiny, return_tensors="pt", **kwargs))
    as_chw = ours[0](tiny, return_tensors="pt")["pixel_values"]
    assert not torch.equal(
        as_chw, ours[0](tiny, return_tensors="pt", input_data_format="channels_last")["pixel_values"]
    )
    with pytest.raises(ValueError, match="input_data_format"):
        ours[0](tiny, input_data_format="sideways")
    with pytest.raises(ValueError, match="can't tell where the channels are"):
        ours[0](np.zeros((5, 6, 7), np.uint8))


def test_two_dimensional_arrays_are_greyscale(ours):
    grey = np.asarray(drawn(30, 50, seed=16).convert("L"))
    for processor in ours:
        assert_same(processor(grey, return_tensors="pt"), processor(grey[:, :, None], return_tensors="pt"))


def test_lists_nested_lists_and_mixed_inputs(hf, ours, tmp_path):
    path = tmp_path / "a.png"
    drawn(50, 70, seed=17).save(path)
    pil, array = drawn(64, 32, seed=18), np.asarray(drawn(20, 90, seed=19))
    for images, hf_images in [
        ([pil, array, str(path)], None),
        ([[pil, array], [str(path)]], None),
        ((pil, path), (pil, str(path))),  # a Path object: transformers only takes str
    ]:
        both(hf, ours, images, hf_images=hf_images)
    with pytest.raises(ValueError, match="empty"):
        ours[0]([])
    with pytest.raises(TypeError, match="unsupported image type"):
        ours[0]([pil, 3])


def test_unknown_call_option_is_an_error(ours):
    with pytest.raises(TypeError, match="max_num_patches"):
        ours[0](drawn(8, 8), max_num_patches=64)
    with pytest.raises(ValueError, match="'size'"):
        ours[0](drawn(8, 8), size=224)


# ------------------------------------------------------------------------------------------------------------
# Files, EXIF, base64
# ------------------------------------------------------------------------------------------------------------


def _files(folder: Path) -> list[Path]:
    rgb, rgba = drawn(61, 83, seed=20), drawn(61, 83, seed=21, alpha=True)
    files = {
        "rgb.jpg": (rgb, {"quality": 90}),
        "grey.jpg": (rgb.convert("L"), {}),
        "cmyk.jpg": (rgb.convert("CMYK"), {}),
        "rgb.png": (rgb, {}),
        "rgba.png": (rgba, {}),
        "la.png": (rgba.convert("LA"), {}),
        "p_transparent.png": (mode_image("P+transparency", 61, 83), {}),
        "i16.png": (mode_image("I;16", 61, 83), {}),
        "one.png": (rgb.convert("1"), {}),
    }
    if features.check("webp"):
        files["rgb.webp"] = (rgb, {"quality": 80})
        files["rgba.webp"] = (rgba, {"lossless": True})
    for name, (image, options) in files.items():
        image.save(folder / name, **options)
    return [folder / name for name in files]


def test_files_match_transformers(hf, ours, tmp_path):
    paths = [str(p) for p in _files(tmp_path)]
    for path in paths:
        assert_same(ours[0](path, return_tensors="pt"), hf[0](path, return_tensors="pt"))
    assert_same(ours[0](paths, return_tensors="pt"), hf[0](paths, return_tensors="pt"))  # decoded in the thread pool
    # NaFlex: transformers skips convert_to_rgb, which matters for p_transparent.png: load_image's convert("RGB")
    # keeps the transparent colour in info["transparency"], and convert_to_rgb composites it onto white.
    converted = [convert_to_rgb(hf_load_image(p), return_numpy=True) for p in paths]
    assert_same(ours[1](paths, return_tensors="pt"), hf[1](converted, return_tensors="pt"))


def test_exif_orientation_is_applied_like_transformers(hf, ours, tmp_path):
    image = drawn(40, 70, seed=22)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    loaded = load_image(path)
    assert loaded.size == (40, 70)  # (width, height): transposed
    assert np.array_equal(np.asarray(loaded), np.asarray(hf_load_image(str(path))))
    assert 0x0112 not in loaded.getexif()
    both(hf, ours, str(path))
    # an opened image is used as given, as transformers does (no EXIF transpose)
    with Image.open(path) as opened:
        both(hf, ours, opened)


def test_load_image_pil_and_type_errors():
    image = drawn(10, 12, alpha=True)
    loaded = load_image(image)
    assert loaded.mode == "RGB" and image.mode == "RGBA"  # the caller's image is untouched
    assert np.array_equal(np.asarray(loaded), np.asarray(hf_load_image(image)))
    with pytest.raises(TypeError, match="image processor directly"):
        load_image(np.zeros((4, 4, 3), np.uint8))


def test_data_uri_and_base64(tmp_path):
    path = tmp_path / "small.png"
    drawn(9, 11, seed=23).save(path)
    encoded = base64.b64encode(path.read_bytes()).decode()
    expected = np.asarray(load_image(path))
    for source in (f"data:image/png;base64,{encoded}", encoded):
        assert np.array_equal(np.asarray(load_image(source)), expected)
        assert np.array_equal(np.asarray(load_image(source)), np.asarray(hf_load_image(source)))


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    drawn(64, 64, seed=24).save(buffer, "JPEG")
    return buffer.getvalue()


BAD_FILES = {
    "truncated.jpg": (lambda: _jpeg_bytes()[: len(_jpeg_bytes()) // 2], "truncated or corrupt"),
    "empty.jpg": (lambda: b"", "empty file"),
    "text.jpg": (lambda: b"this is not an image, just text\n" * 3, "not an image"),
    "zero_width.png": (lambda: _png_header(0, 5), "zero dimension"),
    "cut_header.png": (lambda: _png_header(5, 5)[:20], "truncated"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_files_raise_a_clear_error(name, tmp_path, ours):
    make, problem = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(ImageLoadError, match=problem) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert info.value.__context__ is None or info.value.__suppress_context__  # no PIL traceback chained
    for processor in ours:  # through the thread pool, the same error
        with pytest.raises(ImageLoadError, match=problem):
            processor([str(path), drawn(8, 8)])


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels is over twice the limit
    with pytest.raises(ImageLoadError, match="decompression bomb") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_missing_paths_and_folders(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file") as info:
        load_image(tmp_path / "missing.jpg")
    assert "missing.jpg" in str(info.value)
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(tmp_path)


# ------------------------------------------------------------------------------------------------------------
# URLs
# ------------------------------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


@contextlib.contextmanager
def serve(folder: Path, lifetime: float = 60.0):
    """Serve ``folder`` on 127.0.0.1 from a thread; stops on exit, or by itself after ``lifetime`` seconds."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=folder))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    stopper = threading.Timer(lifetime, server.shutdown)
    stopper.daemon = True
    stopper.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stopper.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_urls_load_like_files(tmp_path, hf, ours):
    paths = _files(tmp_path)[:4]
    with serve(tmp_path) as root:
        urls = [f"{root}/{p.name}" for p in paths]
        for url, path in zip(urls, paths, strict=True):
            assert np.array_equal(np.asarray(load_image(url)), np.asarray(load_image(path)))
        both(hf, ours, urls, hf_images=[str(p) for p in paths])
        with pytest.raises(ImageLoadError, match="HTTP 404") as info:
            load_image(f"{root}/nothing-here.jpg")
        assert f"{root}/nothing-here.jpg" in str(info.value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_and_offline_urls(monkeypatch):
    url = f"http://127.0.0.1:{_free_port()}/cat.jpg"  # nothing listens there
    with pytest.raises(ImageLoadError, match="connection refused") as info:
        load_image(url, timeout=5)
    assert url in str(info.value) and "\n" not in str(info.value)

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # what an offline machine answers
    with pytest.raises(ImageLoadError, match="are you offline") as info:
        load_image("https://example.com/cat.jpg")
    assert "https://example.com/cat.jpg" in str(info.value)


def test_url_timeout():
    with socket.socket() as listener:  # accepts connections but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/slow.jpg"
        with pytest.raises(ImageLoadError, match=r"no answer within 0\.3 s"):
            load_image(url, timeout=0.3)


# ------------------------------------------------------------------------------------------------------------
# Config files
# ------------------------------------------------------------------------------------------------------------


def test_default_config_equals_transformers(hf, ours):
    for theirs, mine in zip(hf, ours, strict=True):
        expected = json.loads(theirs.to_json_string())
        got = mine.to_dict()
        # transformers omits do_convert_rgb=None for NaFlex; we convert by default and say so
        expected.setdefault("do_convert_rgb", True)
        assert got == expected


@pytest.mark.parametrize(
    "cls,hf_cls,kwargs",
    [
        (SiglipImageProcessor, SiglipImageProcessorPil, {"size": {"height": 64, "width": 48}, "resample": 2}),
        (Siglip2ImageProcessor, Siglip2ImageProcessorPil, {"max_num_patches": 64, "patch_size": 8, "resample": 3}),
    ],
)
def test_save_pretrained_round_trip_through_transformers(cls, hf_cls, kwargs, tmp_path):
    processor = cls(image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.25], **kwargs)
    processor.save_pretrained(tmp_path)
    theirs = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    assert type(theirs) is hf_cls
    images = [drawn(50, 80, seed=25), drawn(90, 30, seed=26, alpha=True)]
    assert_same(processor(images, return_tensors="pt"), theirs(images, return_tensors="pt"))
    again = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(again) is cls and again.to_dict() == processor.to_dict()
    # and transformers' own save loads into ours
    theirs.save_pretrained(tmp_path / "hf")
    reloaded = AutoImageProcessor.from_pretrained(tmp_path / "hf")
    assert_same(reloaded(images, return_tensors="pt"), theirs(images, return_tensors="pt"))


def _write(folder: Path, name: str, data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


_HUB_SHARED = {
    "do_convert_rgb": None,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
}
# shaped like the hub preprocessor_config.json of SigLIP2 FixRes and NaFlex checkpoints (reference doc, section 4)
HUB_FIXRES = {
    **_HUB_SHARED,
    "image_processor_type": "SiglipImageProcessor",
    "processor_class": "SiglipProcessor",
    "size": {"height": 384, "width": 384},
}
HUB_NAFLEX = {
    **_HUB_SHARED,
    "image_processor_type": "Siglip2ImageProcessorFast",
    "max_num_patches": 256,
    "patch_size": 16,
    "processor_class": "Siglip2Processor",
}


@pytest.mark.parametrize("layout", ["preprocessor_config.json", "processor_config.json"])
@pytest.mark.parametrize("config,cls", [(HUB_FIXRES, SiglipImageProcessor), (HUB_NAFLEX, Siglip2ImageProcessor)])
def test_both_folder_layouts(layout, config, cls, tmp_path):
    data = config if layout == "preprocessor_config.json" else {"image_processor": config, "processor_class": "x"}
    _write(tmp_path, layout, data)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(processor) is cls
    assert cls.from_pretrained(tmp_path).to_dict() == processor.to_dict()
    theirs = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    image = drawn(70, 110, seed=27)
    assert_same(processor(image, return_tensors="pt"), theirs(image, return_tensors="pt"))


def test_nested_config_wins_like_transformers(tmp_path):
    _write(tmp_path, "preprocessor_config.json", {**HUB_NAFLEX, "max_num_patches": 64})
    _write(tmp_path, "processor_config.json", {"image_processor": {**HUB_NAFLEX, "max_num_patches": 144}})
    assert AutoImageProcessor.from_pretrained(tmp_path).max_num_patches == 144
    assert transformers.AutoImageProcessor.from_pretrained(tmp_path).max_num_patches == 144
    # a processor_config.json without the nested entry falls back to preprocessor_config.json
    _write(tmp_path, "processor_config.json", {"processor_class": "Siglip2Processor"})
    assert AutoImageProcessor.from_pretrained(tmp_path).max_num_patches == 64


def test_unknown_keys_are_kept_and_written_back(tmp_path):
    _write(tmp_path / "in", "preprocessor_config.json", {**HUB_FIXRES, "foo": [1, 2], "crop_pct": 0.9})
    processor = AutoImageProcessor.from_pretrained(tmp_path / "in")
    processor.save_pretrained(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert saved["foo"] == [1, 2] and saved["crop_pct"] == 0.9 and saved["processor_class"] == "SiglipProcessor"
    assert saved["do_convert_rgb"] is True and saved["size"] == {"height": 384, "width": 384}


@pytest.mark.parametrize("kind", ["SiglipImageProcessorFast", "SiglipImageProcessorPil", "Siglip2ImageProcessorPil"])
def test_image_processor_type_variants(kind, tmp_path):
    _write(tmp_path, "preprocessor_config.json", {"image_processor_type": kind})
    expected = Siglip2ImageProcessor if kind.startswith("Siglip2") else SiglipImageProcessor
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is expected


def test_missing_type_falls_back_to_model_type(tmp_path):
    config = {k: v for k, v in HUB_NAFLEX.items() if k != "image_processor_type"}
    _write(tmp_path, "preprocessor_config.json", config)
    with pytest.raises(CheckpointError, match="image_processor_type"):
        AutoImageProcessor.from_pretrained(tmp_path)
    _write(tmp_path, "config.json", {"model_type": "siglip2"})
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is Siglip2ImageProcessor


def test_hub_ids_go_through_resolve_folder(tmp_path, monkeypatch):
    import siglip.files as module

    _write(tmp_path, "preprocessor_config.json", HUB_NAFLEX)
    calls = []

    def fake_resolve(name, **kwargs):
        calls.append((name, kwargs))
        return tmp_path

    monkeypatch.setattr(module, "resolve_folder", fake_resolve)
    processor = AutoImageProcessor.from_pretrained(
        "google/siglip2-base-patch16-naflex", revision="abc", max_num_patches=64
    )
    assert type(processor) is Siglip2ImageProcessor and processor.max_num_patches == 64
    # only the JSON files are fetched, and hub options are passed on
    assert calls == [("google/siglip2-base-patch16-naflex", {"patterns": ["*.json"], "revision": "abc"})]


def test_from_pretrained_overrides_and_config_file_path(tmp_path):
    path = _write(tmp_path, "preprocessor_config.json", HUB_FIXRES)
    processor = SiglipImageProcessor.from_pretrained(path, size={"height": 32, "width": 32}, use_fast=True)
    assert processor.size == {"height": 32, "width": 32} and processor.resample == 2
    with pytest.raises(TypeError, match="bogus"):
        SiglipImageProcessor.from_pretrained(tmp_path, bogus=1)


BAD_CONFIGS = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ({**HUB_FIXRES, "size": 224}, "'size'"),
    ({**HUB_FIXRES, "size": {"height": 0, "width": 5}}, "'size.height'"),
    ({**HUB_FIXRES, "resample": 9}, "'resample'"),
    ({**HUB_FIXRES, "do_resize": "yes"}, "'do_resize'"),
    ({**HUB_FIXRES, "image_std": [0.5, 0, 0.5]}, "'image_std'"),
    ({**HUB_FIXRES, "image_processor_type": "CLIPImageProcessor"}, "'image_processor_type'"),
    ({**HUB_NAFLEX, "max_num_patches": 0}, "'max_num_patches'"),
    ({**HUB_NAFLEX, "patch_size": 16.5}, "'patch_size'"),
]


@pytest.mark.parametrize("content,problem", BAD_CONFIGS)
def test_bad_configs_name_file_and_key(content, problem, tmp_path):
    path = _write(tmp_path, "preprocessor_config.json", content)
    with pytest.raises(CheckpointError, match=problem) as info:
        AutoImageProcessor.from_pretrained(tmp_path)
    assert str(path) in str(info.value)


def test_bad_nested_config_and_empty_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no preprocessor_config.json"):
        AutoImageProcessor.from_pretrained(tmp_path)
    path = _write(tmp_path, "processor_config.json", {"image_processor": 3})
    with pytest.raises(CheckpointError, match="'image_processor'") as info:
        AutoImageProcessor.from_pretrained(tmp_path)
    assert str(path) in str(info.value)


def test_attributes_set_after_construction_are_used(hf):
    processor = Siglip2ImageProcessor()
    processor.max_num_patches = 64  # what a processor does with from_pretrained(max_num_patches=...)
    image = drawn(100, 100, seed=28)
    assert_same(processor(image, return_tensors="pt"), hf[1](image, return_tensors="pt", max_num_patches=64))
    processor.max_num_patches = -1
    with pytest.raises(ValueError, match="'max_num_patches'"):
        processor(image)


# ------------------------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    height=st.integers(1, 100_000),
    width=st.integers(1, 100_000),
    patch_size=st.integers(1, 64),
    max_num_patches=st.integers(1, 4096),
)
def test_size_search_properties(height, width, patch_size, max_num_patches):
    target_h, target_w = get_image_size_for_max_num_patches(height, width, patch_size, max_num_patches)
    assert target_h % patch_size == 0 and target_w % patch_size == 0
    assert target_h >= patch_size and target_w >= patch_size
    assert (target_h // patch_size) * (target_w // patch_size) <= max_num_patches
    assert (target_h, target_w) == hf_size_search(height, width, patch_size, max_num_patches)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(height=st.integers(1, 600), width=st.integers(1, 600), seed=st.integers(0, 2**16))
def test_any_small_size_matches_transformers(height, width, seed):
    image = drawn(height, width, seed=seed)
    for ours, theirs in (
        (SiglipImageProcessor(), SiglipImageProcessorPil()),
        (Siglip2ImageProcessor(), Siglip2ImageProcessorPil()),
    ):
        assert_same(ours(image, return_tensors="pt"), theirs(image, return_tensors="pt"))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(height=st.integers(1, 8000), width=st.integers(1, 8000), grey=st.integers(0, 255))
@example(height=8000, width=8000, grey=200)
@example(height=1, width=8000, grey=0)
@example(height=8000, width=1, grey=255)
@example(height=1, width=1, grey=77)
def test_any_size_up_to_8000_is_accepted(height, width, grey):
    image = Image.new("RGB", (width, height), (grey, grey, grey))
    expected = (grey / 255 - 0.5) / 0.5
    fixres = SiglipImageProcessor()(image, return_tensors="pt")["pixel_values"]
    assert fixres.shape == (1, 3, 224, 224)
    assert (fixres - expected).abs().max() <= 1 / 127.5 + 1e-6  # a flat image stays flat (to one uint8 step)
    naflex = Siglip2ImageProcessor()(image, return_tensors="pt")
    rows, cols = naflex["spatial_shapes"][0].tolist()
    assert rows * cols <= 256 and naflex["pixel_attention_mask"].sum() == rows * cols
    assert (naflex["pixel_values"][0, : rows * cols] - expected).abs().max() <= 1 / 127.5 + 1e-6


@pytest.mark.parametrize("index, name", [(0, "SiglipImageProcessorFast"), (1, "Siglip2ImageProcessorFast")])
def test_fast_names_import_like_transformers(index, name, hf):
    """transformers 5.24 keeps the names the seed document uses (``Siglip2ImageProcessorFast``) as aliases of the
    one processor class per model; ours alias the PIL-exact classes and give transformers' pixels."""
    import siglip

    alias = getattr(siglip, name)
    assert alias is getattr(siglip, name.removesuffix("Fast"))
    images = [drawn(61, 90), drawn(300, 20, seed=1)]
    assert_same(alias()(images, return_tensors="pt"), hf[index](images, return_tensors="pt"))
