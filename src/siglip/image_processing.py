"""Image loading and the SigLIP / SigLIP2 image processors.

This module owns:

* ``load_image`` and ``ImageLoadError``: files, http(s) URLs, data URIs / base64 and PIL images, turned into an
  upright RGB ``PIL.Image``, with one-line errors that name the source and the problem;
* input handling shared by both processors: PIL images, numpy arrays and torch tensors (HWC or CHW, uint8 or
  float), paths and URLs, single or in (nested) lists;
* ``SiglipImageProcessor`` (FixRes: squash-resize to ``size``) and ``Siglip2ImageProcessor`` (NaFlex: aspect
  preserving resize to at most ``max_num_patches`` patches, patchify, pad);
* ``get_image_size_for_max_num_patches`` (the NaFlex size search);
* ``AutoImageProcessor`` and the ``preprocessor_config.json`` / ``processor_config.json`` files.

The numbers are those of transformers 5's PIL processors (``SiglipImageProcessorPil``,
``Siglip2ImageProcessorPil``), bit for bit: the same Pillow resize on the same uint8 pixels, then the float64
rescale and float32 normalisation, done through an exact 256-entry lookup table per channel. Decoding and
resizing a list run in a small thread pool (Pillow releases the GIL), which does not change any value.

Choices where transformers gives no answer (all documented at the function they concern):

* Paths and URLs go through ``load_image`` exactly as in transformers: EXIF orientation applied, then
  ``convert("RGB")``, which drops alpha without compositing. Opened PIL images are used as given (no EXIF
  transpose) and, with ``do_convert_rgb``, have alpha composited onto white (transformers 5).
* The NaFlex processor converts every input to RGB the same way (transformers raises on RGBA, LA, L, P, CMYK and
  passes YCbCr / HSV / LAB values through as if they were RGB).
* Float arrays follow transformers' rules unchanged, including its trap: floats in [0, 1] are quantised to uint8
  for the resize and then rescaled by ``rescale_factor`` again unless ``do_rescale=False``; a warning says so.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import io
import json
import math
import os
import re
import socket
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from .batch_feature import BatchFeature
from .config import CONFIG_NAME
from .hub import CheckpointError, read_config_dict, read_json_object, resolve_folder, split_hub_kwargs

IMAGE_PROCESSOR_NAME = "preprocessor_config.json"
PROCESSOR_NAME = "processor_config.json"

# Pillow filters by their config value: NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING.
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}

# Threads for decoding + resizing a list of images; Pillow's decoders and resampler release the GIL.
_NUM_WORKERS = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class ImageLoadError(ValueError):
    """An image that can't be read: the message names the file or URL and says what is wrong with it."""


# ------------------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------------------

_BASE64 = re.compile(r"[A-Za-z0-9+/\s]+={0,2}\s*")


def _download(url: str, timeout: float | None) -> bytes:
    """The body of ``url``; network failures become one-line ``ImageLoadError``s naming the URL."""
    from . import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"siglip/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        raise ImageLoadError(f"could not download {url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, socket.gaierror):
            why = f"the host name does not resolve ({reason.strerror}); are you offline?"
        elif isinstance(reason, TimeoutError):
            why = f"no answer within {timeout} s"
        elif isinstance(reason, OSError) and reason.strerror:
            why = f"{reason.strerror.lower()}; is the network reachable?"
        else:
            why = str(reason)
        raise ImageLoadError(f"could not download {url}: {why}") from None
    except TimeoutError:  # the connection opened but the body did not arrive in time
        raise ImageLoadError(f"could not download {url}: no answer within {timeout} s") from None
    except (OSError, http.client.HTTPException) as e:
        raise ImageLoadError(f"could not download {url}: {type(e).__name__}: {e}") from None


def _decode(source: str | io.BytesIO, name: str) -> Image.Image:
    """Open and fully decode an image file, so that every decoding problem surfaces here, named."""
    try:
        if isinstance(source, str):
            with open(source, "rb") as f:
                image = Image.open(f)
                image.load()  # read the pixels while the file is open; single-frame images then need no file
        else:
            image = Image.open(source)
            image.load()
    except Image.DecompressionBombError as e:
        raise ImageLoadError(
            f"{name}: refused as a possible decompression bomb: {e} If you trust the file, raise "
            "PIL.Image.MAX_IMAGE_PIXELS."
        ) from None
    except Image.UnidentifiedImageError:
        raise ImageLoadError(f"{name}: {_why_unidentified(source)}") from None
    except OSError as e:  # "image file is truncated", "broken data stream", decoder errors
        raise ImageLoadError(f"{name}: truncated or corrupt image data ({e})") from None
    except Exception as e:  # plugins also raise SyntaxError, ValueError, struct.error, ... on bad data
        raise ImageLoadError(f"{name}: could not decode the image ({type(e).__name__}: {e})") from None
    if image.width == 0 or image.height == 0:
        raise ImageLoadError(f"{name}: the image has a zero dimension ({image.width}x{image.height})")
    return image


_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def _why_unidentified(source: str | io.BytesIO) -> str:
    """Why Pillow found no reader: say which format the header claims, and for PNG the size it declares."""
    if isinstance(source, str):
        with open(source, "rb") as f:
            head = f.read(32)
    else:
        head = source.getvalue()[:32]
    kind = "WebP" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else None
    kind = kind or next((k for sig, k in _SIGNATURES.items() if head.startswith(sig)), None)
    if kind is None:
        return "not an image (no known image format signature)"
    if kind == "PNG" and head[12:16] == b"IHDR":
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if width == 0 or height == 0:
            return f"the PNG header declares a zero dimension ({width}x{height})"
    return f"starts like a {kind} file but Pillow can't read its header (corrupt or invalid)"


def _open_source(source: str) -> tuple[str | io.BytesIO, str]:
    """Classify a string as a file, a URL (downloaded later), a data URI or base64; returns (what, name)."""
    if os.path.isfile(source):
        if os.path.getsize(source) == 0:
            raise ImageLoadError(f"{source}: empty file (0 bytes)")
        return source, source
    if source.startswith("data:image/"):
        payload = source.split(",", 1)[-1]
        name = "data URI"
    elif os.path.exists(source):
        raise ImageLoadError(f"{source}: not a regular file")
    elif len(source) >= 64 and _BASE64.fullmatch(source):
        payload, name = source, "base64 string"  # transformers accepts raw base64 too
    else:
        raise ImageLoadError(f"{source}: no such file (nor an http(s) URL, data URI or base64 image)")
    try:
        return io.BytesIO(base64.b64decode(payload)), name
    except (binascii.Error, ValueError) as e:
        raise ImageLoadError(f"{name}: invalid base64 ({e})") from None


def load_image(image: str | os.PathLike | Image.Image, timeout: float | None = 10.0) -> Image.Image:
    """Load an image as an upright RGB ``PIL.Image``, as transformers' ``image_utils.load_image`` does.

    Args:
        image: a file path, an ``http(s)://`` URL, a ``data:image/...;base64,`` URI, a base64 string or a PIL image.
        timeout: seconds to wait for a URL (connection and each read).

    Returns:
        The image after ``ImageOps.exif_transpose`` (the EXIF / XMP orientation tag is applied and removed) and
        ``convert("RGB")``. Like transformers, that conversion drops an alpha band without compositing (pass the
        opened image, ``Image.open(path)``, to a processor to composite it onto white instead); a palette's
        transparent colour survives in ``info["transparency"]``, and the processors composite that colour onto white.
        16-bit and float images are clipped to [0, 255] by that conversion, not rescaled (a warning says so).

    Raises:
        ImageLoadError: the file or URL is missing, unreachable, empty, truncated, not an image, has a zero
            dimension or is bigger than ``PIL.Image.MAX_IMAGE_PIXELS`` allows (decompression bomb).
    """
    if isinstance(image, os.PathLike):
        image = os.fspath(image)
    name = "the image"
    if isinstance(image, str):
        if image.startswith(("http://", "https://")):
            name = image
            image = _decode(io.BytesIO(_download(name, timeout)), name)
        else:
            source, name = _open_source(image)
            image = _decode(source, name)
        try:
            ImageOps.exif_transpose(image, in_place=True)
        except Exception as e:  # a malformed EXIF block
            raise ImageLoadError(f"{name}: unreadable EXIF orientation ({type(e).__name__}: {e})") from None
    elif isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)  # a transposed copy: the caller's image is left alone
    else:
        raise TypeError(
            f"load_image takes a path, URL, base64 string or PIL image, got {type(image).__name__}; numpy arrays "
            "and torch tensors go to the image processor directly"
        )
    _warn_if_clipped(image, name)
    # convert() to the same mode returns a copy; an RGB image needs none
    return image if image.mode == "RGB" else image.convert("RGB")


# ------------------------------------------------------------------------------------------------------------
# Input handling
# ------------------------------------------------------------------------------------------------------------


def _is_image(x: Any) -> bool:
    return isinstance(x, (Image.Image, np.ndarray, torch.Tensor, str, os.PathLike))


def _flatten(images: Any) -> list[Any]:
    """A flat list of single images, following transformers' ``make_flat_list_of_images``.

    A 4-d array or tensor is a batch; 3-d is one image; 2-d is one greyscale image (transformers rejects it).
    Lists may nest one level (a list per sample) and may hold batches.
    """
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim == 4:
            return list(images)
        if images.ndim in (2, 3):
            return [images]
        raise ValueError(f"an image array must have 2, 3 or 4 dimensions, got shape {tuple(images.shape)}")
    if _is_image(images):
        return [images]
    if isinstance(images, (list, tuple)):
        flat = []
        for item in images:
            if isinstance(item, (list, tuple)):
                for sub in item:
                    if not _is_image(sub):
                        raise TypeError(f"unsupported image type in nested list: {type(sub).__name__}")
                    flat.extend(_flatten(sub))
            elif _is_image(item):
                flat.extend(_flatten(item))
            else:
                raise TypeError(f"unsupported image type in list: {type(item).__name__}")
        if not flat:
            raise ValueError("no images given (an empty list)")
        return flat
    raise TypeError(
        f"images must be PIL images, numpy arrays, torch tensors, paths or URLs (or lists of them), got "
        f"{type(images).__name__}"
    )


# 16-bit, 32-bit integer and float modes: convert("RGB") clips their values to [0, 255] instead of rescaling.
_WIDE_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")


def _warn_if_clipped(image: Image.Image, name: str) -> None:
    """Warn when converting ``image`` to 8-bit RGB, as Pillow and transformers do, loses its values.

    16-bit and float values outside [0, 255] are clipped (a full-range 16-bit PNG comes out almost white), and
    floats in [0, 1] are truncated to 0 or 1 (almost black). The conversion is kept for parity; the warning says
    how to get a faithful result.
    """
    if image.mode not in _WIDE_MODES:
        return
    low, high = image.getextrema()
    if low < 0 or high > 255 or (image.mode == "F" and 0 < high <= 1):
        warnings.warn(
            f"{name}: mode {image.mode} with values in [{low}, {high}] is converted to 8-bit RGB as Pillow and "
            "transformers do: clipped to [0, 255], not rescaled. For a faithful result pass a uint8 array (e.g. "
            "values // 257 for 16 bits) or a float array in [0, 1] with do_rescale=False.",
            stacklevel=3,
        )


def _pil_to_rgb(image: Image.Image) -> Image.Image:
    """transformers 5 ``convert_to_rgb``: alpha (an A band or a transparency key) is composited onto white."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _channels_last(array: np.ndarray, data_format: str | None) -> np.ndarray:
    """(H, W, C) view of a 2-d or 3-d array; the layout is inferred as transformers does when not given.

    transformers' rule: a 3-d array whose first dim is 1, 3 or 4 is channels-first, even when its last dim is
    too (so a 4x4 RGB HWC array reads as CHW); pass ``input_data_format="channels_last"`` in that case.
    """
    if array.ndim == 2:
        return array[:, :, None]
    if data_format is None:
        if array.shape[0] in (1, 3, 4):
            data_format = "channels_first"
        elif array.shape[-1] in (1, 3, 4):
            data_format = "channels_last"
        else:
            raise ValueError(
                f"can't tell where the channels are in an image of shape {tuple(array.shape)}: neither the first nor "
                "the last dimension is 1, 3 or 4"
            )
    if data_format == "channels_first":
        return np.moveaxis(array, 0, -1)
    if data_format == "channels_last":
        return array
    raise ValueError(f"input_data_format must be 'channels_first' or 'channels_last', got {data_format!r}")


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    """transformers 5 ``convert_to_rgb`` on an (H, W, C) array: grey is repeated, alpha composited onto white."""
    channels = array.shape[-1]
    if channels == 1:
        return np.repeat(array, 3, axis=-1)
    if channels == 4:
        if np.issubdtype(array.dtype, np.floating) and (array.min() < 0.0 or array.max() > 1.0):
            raise ValueError(
                f"an RGBA float image must hold values in [0, 1] to composite its alpha, got "
                f"[{array.min()}, {array.max()}]"
            )
        white = 255 if np.issubdtype(array.dtype, np.integer) else 1.0
        alpha = array[..., 3:4] / white
        composite = alpha * array[..., :3] + (1 - alpha) * white  # the same float64 ops, so the same rounding
        return np.round(composite).astype(array.dtype) if white == 255 else composite.astype(array.dtype)
    if channels == 3:
        return array
    raise ValueError(f"can't convert an image with {channels} channels to RGB (expected 1, 3 or 4)")


def _to_uint8_for_resize(array: np.ndarray) -> tuple[np.ndarray, bool]:
    """The uint8 pixels Pillow resizes, and whether they were scaled up from [0, 1] floats.

    transformers' ``_rescale_for_pil_conversion`` + ``to_pil_image``: integer-valued arrays in [0, 255] are cast;
    other floats in [0, 1] are multiplied by 255 in float64, cast to float32, then truncated to uint8.
    """
    if array.dtype == np.uint8:
        return array, False
    if np.allclose(array, array.astype(int)):
        if np.all(array >= 0) and np.all(array <= 255):
            return array.astype(np.uint8), False
        raise ValueError(f"image values must lie in [0, 255], got [{array.min()}, {array.max()}]")
    if np.all(array >= 0) and np.all(array <= 1):
        return (array.astype(np.float64) * 255).astype(np.float32).astype(np.uint8), True
    raise ValueError(
        f"float image values must lie in [0, 1] (or be whole numbers in [0, 255]), got [{array.min()}, {array.max()}]"
    )


def _pixel_steps(x: np.ndarray, opts: dict[str, Any]) -> np.ndarray:
    """Rescale then normalise (..., C) values exactly as transformers' numpy ``rescale`` / ``normalize`` do."""
    if opts["do_rescale"]:
        x = (x.astype(np.float64) * opts["rescale_factor"]).astype(np.float32)
    if opts["do_normalize"]:
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)
        channels = x.shape[-1]
        mean, std = (np.array(_per_channel(opts[k], channels, k), dtype=x.dtype) for k in ("image_mean", "image_std"))
        x = (x - mean) / std
    return x


def _per_channel(value: float | tuple[float, ...], channels: int, key: str) -> list[float]:
    if isinstance(value, (int, float)):
        return [value] * channels
    if len(value) != channels:
        raise ValueError(
            f"{key} has {len(value)} values but the image has {channels} channels; keep do_convert_rgb=True for "
            "non-RGB images"
        )
    return list(value)


def _lookup_table(opts: dict[str, Any], channels: int, prescaled: bool) -> np.ndarray:
    """(C, 256) table: entry [c, v] is what rescale + normalise make of uint8 value v in channel c.

    ``prescaled``: the values came from [0, 1] floats, so transformers divides the resized uint8 by 255 (float64,
    then float32) before its own rescale. Every step is elementwise, so the table reproduces it bit for bit.
    """
    values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], channels, axis=1)  # (256, C)
    if prescaled:
        values = (values.astype(np.float64) * (1 / 255)).astype(np.float32)
    return np.ascontiguousarray(_pixel_steps(values, opts).T)


def _apply_table(pixels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 through a (C, 256) table into a new (C, H, W) array."""
    planes = np.ascontiguousarray(pixels.transpose(2, 0, 1))  # contiguous index planes make take() fast
    out = np.empty(planes.shape, dtype=table.dtype)
    for c in range(planes.shape[0]):
        np.take(table[c], planes[c], out=out[c])
    return out


# ------------------------------------------------------------------------------------------------------------
# Processor settings
# ------------------------------------------------------------------------------------------------------------


def _check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{key!r} must be true or false, got {value!r}")
    return bool(value)


def _check_positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{key!r} must be a positive integer, got {value!r}")
    return int(value)


def _check_number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key!r} must be a finite number, got {value!r}")
    return value


def _check_resample(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in RESAMPLE_NAMES:
        choices = ", ".join(f"{k} ({v})" for k, v in RESAMPLE_NAMES.items())
        raise ValueError(f"{key!r} must be a Pillow filter number, one of {choices}; got {value!r}")
    return int(value)


def _check_mean_std(key: str, value: Any) -> float | tuple[float, ...]:
    if isinstance(value, (list, tuple)):
        numbers = tuple(_check_number(key, v) for v in value)
        if not numbers:
            raise ValueError(f"{key!r} must not be empty")
    else:
        numbers = _check_number(key, value)
    if key == "image_std" and 0 in (numbers if isinstance(numbers, tuple) else (numbers,)):
        raise ValueError(f"{key!r} must not contain 0, got {value!r}")
    return numbers


def _check_size(key: str, value: Any) -> dict[str, int]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        value = {"height": value[0], "width": value[1]}
    if not isinstance(value, dict) or set(value) != {"height", "width"}:
        raise ValueError(f"{key!r} must be {{'height': H, 'width': W}} (or an (H, W) pair), got {value!r}")
    return {k: _check_positive_int(f"{key}.{k}", value[k]) for k in ("height", "width")}


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "do_resize": _check_bool,
    "do_rescale": _check_bool,
    "do_normalize": _check_bool,
    "do_convert_rgb": _check_bool,
    "resample": _check_resample,
    "rescale_factor": _check_number,
    "image_mean": _check_mean_std,
    "image_std": _check_mean_std,
    "size": _check_size,
    "patch_size": _check_positive_int,
    "max_num_patches": _check_positive_int,
}

# Per-call options that are not settings.
_CALL_OPTIONS = ("input_data_format",)

# Defaults both processors share (transformers' class attributes; mean = std = 0.5 is IMAGENET_STANDARD).
_SHARED_DEFAULTS = {
    "do_resize": True,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": (0.5, 0.5, 0.5),
    "image_std": (0.5, 0.5, 0.5),
    "do_convert_rgb": True,
}


class _ImageProcessorBase:
    """Settings, config files and the per-image pipeline shared by the FixRes and NaFlex processors."""

    image_processor_type: str = ""
    model_input_names: list[str] = ["pixel_values"]
    # setting -> default; ``None`` in a config or a call means "the default", as in transformers
    defaults: dict[str, Any] = {}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("image_processor_type", None)
        settings = self._resolve(self.defaults, {k: kwargs.pop(k) for k in list(kwargs) if k in self.defaults})
        for key, value in settings.items():
            setattr(self, key, value)
        # Keys we don't use (processor_class, a NaFlex "size", anything newer) are kept and written back.
        self.extra: dict[str, Any] = kwargs

    @classmethod
    def _resolve(cls, base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
        settings = dict(base)
        for key, value in overrides.items():
            settings[key] = cls.defaults[key] if value is None else value
        return {key: _CHECKS[key](key, value) for key, value in settings.items()}

    def _call_settings(self, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = [k for k in overrides if k not in self.defaults and k not in _CALL_OPTIONS]
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown option(s) {', '.join(map(repr, unknown))}; it takes "
                f"{', '.join(sorted(self.defaults))} and input_data_format"
            )
        # read the attributes at call time: a processor may have set them (processor.max_num_patches = 512)
        current = {key: getattr(self, key) for key in self.defaults}
        options = {k: overrides.pop(k) for k in _CALL_OPTIONS if k in overrides}
        return {**self._resolve(current, overrides), "input_data_format": options.get("input_data_format")}

    # -- one image ---------------------------------------------------------------------------------------------
    def _resized_pixels(
        self, image: Any, opts: dict[str, Any], target_size: Callable[[int, int], tuple[int, int]], index: int
    ) -> np.ndarray:
        """One input as processed (C, H, W) values: load, convert, resize to ``target_size(h, w)``, rescale, normalise.

        Mirrors transformers' ``PilBackend.process_image`` + ``_preprocess`` (image_processing_backends.py), but
        resizes a PIL image directly when its pixels would round-trip through numpy unchanged.
        """
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image)  # what transformers' fetch_images does with strings
        if isinstance(image, Image.Image):
            if image.width == 0 or image.height == 0:
                raise ValueError(f"image {index} has a zero dimension ({image.width}x{image.height})")
            if opts["do_convert_rgb"]:
                _warn_if_clipped(image, f"image {index}")
                image = _pil_to_rgb(image)
            if image.mode in ("RGB", "RGBA", "L", "LA"):
                if opts["do_resize"]:
                    height, width = target_size(image.height, image.width)
                    image = image.resize((width, height), resample=opts["resample"], reducing_gap=None)
                pixels = np.asarray(image)
                return self._values(pixels[:, :, None] if pixels.ndim == 2 else pixels, opts, False)
            pixels, data_format = np.asarray(image), "channels_last"  # P, I, F, 1, CMYK, ... left unconverted
        elif isinstance(image, torch.Tensor):
            tensor = image.detach().cpu()
            pixels = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
            data_format = opts["input_data_format"]
        else:
            pixels, data_format = image, opts["input_data_format"]
        pixels = _channels_last(pixels, data_format)
        if 0 in pixels.shape:
            raise ValueError(f"image {index} has a zero dimension (shape {tuple(pixels.shape)})")
        if opts["do_convert_rgb"]:
            pixels = _array_to_rgb(pixels)
        if not opts["do_resize"]:
            if pixels.dtype == np.uint8:
                return self._values(pixels, opts, False)
            return np.ascontiguousarray(_pixel_steps(pixels, opts).transpose(2, 0, 1))
        pixels, prescaled = _to_uint8_for_resize(pixels)
        if prescaled and opts["do_rescale"]:
            warnings.warn(
                "image values look already scaled to [0, 1]; transformers (and so this processor) rescales them "
                "again. Pass do_rescale=False for such inputs.",
                stacklevel=2,
            )
        height, width = target_size(pixels.shape[0], pixels.shape[1])
        grey = pixels.shape[-1] == 1
        resized = Image.fromarray(np.ascontiguousarray(pixels[:, :, 0] if grey else pixels))
        resized = np.asarray(resized.resize((width, height), resample=opts["resample"], reducing_gap=None))
        return self._values(resized[:, :, None] if grey else resized, opts, prescaled)

    @staticmethod
    def _values(pixels: np.ndarray, opts: dict[str, Any], prescaled: bool) -> np.ndarray:
        """(H, W, C) uint8 after the resize -> (C, H, W) output values."""
        if not (opts["do_rescale"] or opts["do_normalize"] or prescaled):
            return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # transformers then returns uint8 too
        return _apply_table(pixels, _lookup_table(opts, pixels.shape[-1], prescaled))

    @staticmethod
    def _map(function: Callable[[int, Any], Any], images: list[Any]) -> list[Any]:
        workers = min(_NUM_WORKERS, len(images))
        if workers <= 1:
            return [function(i, image) for i, image in enumerate(images)]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(function, range(len(images)), images))

    # -- config ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The ``preprocessor_config.json`` content: settings, kept unknown keys and ``image_processor_type``."""
        out = dict(self.extra)
        for key in self.defaults:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else dict(value) if isinstance(value, dict) else value
        out["image_processor_type"] = self.image_processor_type
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``preprocessor_config.json`` (transformers reads it back); returns its path."""
        folder = Path(save_directory)
        if folder.is_file():
            raise ValueError(f"{folder} is a file; save_pretrained needs a folder")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / IMAGE_PROCESSOR_NAME
        path.write_text(self.to_json_string(), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, config: dict[str, Any], **overrides: Any) -> _ImageProcessorBase:
        """Build from a config dict; ``overrides`` replace settings (unknown names raise ``TypeError``)."""
        unknown = [k for k in overrides if k not in cls.defaults]
        if unknown:
            raise TypeError(f"{cls.__name__} has no setting(s) {', '.join(map(repr, unknown))}")
        return cls(**{**config, **overrides})

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> _ImageProcessorBase:
        """Load from a folder, a hub id or a config file; other ``kwargs`` override settings.

        Reads ``processor_config.json``'s ``"image_processor"`` entry when present (transformers 5 layout), else
        ``preprocessor_config.json``, as transformers' ``ImageProcessingMixin.get_image_processor_dict`` does.
        Hub options (revision, cache_dir, token, local_files_only, force_download, subfolder) are passed on.
        """
        kwargs.pop("use_fast", None)  # accepted for transformers compatibility: there is one implementation
        config, path = read_image_processor_config(name_or_path, **split_hub_kwargs(kwargs))
        return _build(cls, config, path, kwargs)


def _build(cls: type[_ImageProcessorBase], config: dict[str, Any], path: Path, overrides: dict[str, Any]) -> Any:
    try:
        return cls.from_dict(config, **overrides)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _nested(data: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The ``"image_processor"`` entry of a transformers-5 ``processor_config.json``, if any."""
    if "image_processor" not in data:
        return None
    if not isinstance(data["image_processor"], dict):
        raise CheckpointError(f"{path}: key 'image_processor' must be a JSON object")
    return data["image_processor"]


def read_image_processor_config(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> tuple[dict[str, Any], Path]:
    """The image processor's config dict and the file it came from (a folder, hub id or JSON file)."""
    path = Path(os.path.expanduser(str(name_or_path)))
    if path.is_file():
        data = read_json_object(path)
        return _nested(data, path) or data, path
    folder = resolve_folder(name_or_path, patterns=["*.json"], **hub_kwargs)
    nested_file = folder / PROCESSOR_NAME
    if nested_file.is_file():
        nested = _nested(read_json_object(nested_file), nested_file)
        if nested is not None:
            return nested, nested_file
    flat_file = folder / IMAGE_PROCESSOR_NAME
    if flat_file.is_file():
        return read_json_object(flat_file), flat_file
    raise CheckpointError(
        f"{folder} has no {IMAGE_PROCESSOR_NAME} and no {PROCESSOR_NAME} with an 'image_processor' entry"
    )


# ------------------------------------------------------------------------------------------------------------
# FixRes
# ------------------------------------------------------------------------------------------------------------


class SiglipImageProcessor(_ImageProcessorBase):
    """SigLIP (and SigLIP2 FixRes) preprocessing: squash-resize to ``size``, rescale, normalise.

    Reproduces transformers' ``SiglipImageProcessorPil`` (models/siglip/image_processing_pil_siglip.py and the
    ``PilBackend`` in image_processing_backends.py) bit for bit. SigLIP checkpoints use bicubic (3), SigLIP2
    FixRes checkpoints bilinear (2); both come from the checkpoint's config.

    Call: ``processor(images, return_tensors="pt", **overrides)`` -> ``BatchFeature`` with ``pixel_values``
    (B, 3, H, W) float32 in [-1, 1]. ``return_tensors=None`` gives a list of (3, H, W) arrays, like transformers.
    Overrides are any setting (``size``, ``resample``, ``do_normalize``, ...) plus ``input_data_format``
    ("channels_first" / "channels_last") for arrays whose layout can't be inferred.
    """

    image_processor_type = "SiglipImageProcessor"
    defaults = {**_SHARED_DEFAULTS, "size": {"height": 224, "width": 224}, "resample": 3}

    def __call__(self, images: Any, return_tensors: str | None = None, **overrides: Any) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **overrides)

    def preprocess(self, images: Any, return_tensors: str | None = None, **overrides: Any) -> BatchFeature:
        """Preprocess an image or a list of images; see the class docstring."""
        opts = self._call_settings(overrides)
        size = (opts["size"]["height"], opts["size"]["width"])
        arrays = self._map(lambda i, image: self._resized_pixels(image, opts, lambda h, w: size, i), _flatten(images))
        if return_tensors is None:
            return BatchFeature({"pixel_values": arrays})
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"images of different sizes {sorted(shapes)} can't be stacked; keep do_resize=True")
        return BatchFeature({"pixel_values": np.stack(arrays)}, tensor_type=return_tensors)


# ------------------------------------------------------------------------------------------------------------
# NaFlex
# ------------------------------------------------------------------------------------------------------------


def get_image_size_for_max_num_patches(
    image_height: int, image_width: int, patch_size: int, max_num_patches: int, eps: float = 1e-5
) -> tuple[int, int]:
    """The NaFlex target (height, width): multiples of ``patch_size``, at most ``max_num_patches`` patches.

    A binary search over the scale (between ``eps / 10`` and 100) for the largest scale whose rounded-up patch grid
    fits the budget, so the aspect ratio is kept approximately and tiny images grow by at most 100x.
    Same float operations as transformers' function in models/siglip2/image_processing_pil_siglip2.py.
    """

    def scaled(scale: float, size: int) -> int:
        return int(max(patch_size, math.ceil(size * scale / patch_size) * patch_size))

    low, high = eps / 10, 100.0
    while high - low >= eps:
        scale = (low + high) / 2
        patches = (scaled(scale, image_height) / patch_size) * (scaled(scale, image_width) / patch_size)
        if patches <= max_num_patches:
            low = scale
        else:
            high = scale
    return scaled(low, image_height), scaled(low, image_width)


class Siglip2ImageProcessor(_ImageProcessorBase):
    """SigLIP2 NaFlex preprocessing: aspect-preserving resize to a patch grid, patchify, pad to ``max_num_patches``.

    Reproduces transformers' ``Siglip2ImageProcessorPil`` (models/siglip2/image_processing_pil_siglip2.py) bit for
    bit on RGB inputs. Unlike it, every input is converted to RGB first (alpha composited onto white, grey
    repeated, palettes and CMYK / YCbCr / HSV / LAB converted); transformers raises on most non-RGB modes and
    reads 3-band non-RGB modes as RGB.

    Call: ``processor(images, return_tensors="pt", **overrides)`` -> ``BatchFeature`` with
    ``pixel_values`` (B, max_num_patches, patch_size**2 * 3) float32, each patch flattened as (ph, pw, C) in
    row-major patch order and zero-padded after the image's patches; ``pixel_attention_mask`` (B, max_num_patches)
    int32, 1 on real patches; ``spatial_shapes`` (B, 2) int64, the patch grid (rows, columns) of each image.
    ``max_num_patches`` and ``patch_size`` can be overridden per call.
    """

    image_processor_type = "Siglip2ImageProcessor"
    model_input_names = ["pixel_values", "pixel_attention_mask", "spatial_shapes"]
    defaults = {**_SHARED_DEFAULTS, "resample": 2, "patch_size": 16, "max_num_patches": 256}

    def __call__(self, images: Any, return_tensors: str | None = None, **overrides: Any) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **overrides)

    def preprocess(self, images: Any, return_tensors: str | None = None, **overrides: Any) -> BatchFeature:
        """Preprocess an image or a list of images; see the class docstring."""
        opts = self._call_settings(overrides)
        p, budget = opts["patch_size"], opts["max_num_patches"]

        def target_size(height: int, width: int) -> tuple[int, int]:
            return get_image_size_for_max_num_patches(height, width, p, budget)

        def one(index: int, image: Any) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
            values = self._resized_pixels(image, opts, target_size, index)  # (C, H, W)
            channels, height, width = values.shape
            if height % p or width % p:
                raise ValueError(
                    f"image {index} is {height}x{width}, not a multiple of patch_size={p}; keep do_resize=True"
                )
            rows, cols = height // p, width // p
            if rows * cols > budget:
                raise ValueError(f"image {index} has {rows * cols} patches, more than max_num_patches={budget}")
            patches = np.zeros((budget, p * p * channels), dtype=values.dtype)  # zero padding, as transformers
            # (C, rows, p, cols, p) -> (rows, cols, p, p, C): row-major patches, each flattened as (ph, pw, C)
            grid = values.reshape(channels, rows, p, cols, p).transpose(1, 3, 2, 4, 0)
            patches[: rows * cols].reshape(rows, cols, p, p, channels)[...] = grid
            mask = np.zeros(budget, dtype=np.int32)
            mask[: rows * cols] = 1
            return patches, mask, (rows, cols)

        results = self._map(one, _flatten(images))
        patches, masks, shapes = (list(column) for column in zip(*results, strict=True))
        if return_tensors is None:
            return BatchFeature({"pixel_values": patches, "pixel_attention_mask": masks, "spatial_shapes": shapes})
        data = {
            "pixel_values": np.stack(patches),
            "pixel_attention_mask": np.stack(masks),
            "spatial_shapes": np.array(shapes, dtype=np.int64),
        }
        return BatchFeature(data, tensor_type=return_tensors)


# transformers 5.24 names: the "Fast" suffix is a deprecated alias of the one class per model, and "Pil" names the
# PIL backend, which is what these classes reproduce.
SiglipImageProcessorFast = SiglipImageProcessorPil = SiglipImageProcessor
Siglip2ImageProcessorFast = Siglip2ImageProcessorPil = Siglip2ImageProcessor


# ------------------------------------------------------------------------------------------------------------
# Auto
# ------------------------------------------------------------------------------------------------------------

# image_processor_type values found in hub configs (Fast: transformers 4 torchvision; Pil: written by hand)
IMAGE_PROCESSOR_TYPES: dict[str, type[_ImageProcessorBase]] = {
    "SiglipImageProcessor": SiglipImageProcessor,
    "SiglipImageProcessorFast": SiglipImageProcessor,
    "SiglipImageProcessorPil": SiglipImageProcessor,
    "Siglip2ImageProcessor": Siglip2ImageProcessor,
    "Siglip2ImageProcessorFast": Siglip2ImageProcessor,
    "Siglip2ImageProcessorPil": Siglip2ImageProcessor,
}
# Without image_processor_type, config.json's model_type decides (SigLIP2 FixRes checkpoints are "siglip").
_MODEL_TYPES = {"siglip": SiglipImageProcessor, "siglip2": Siglip2ImageProcessor}


class AutoImageProcessor:
    """Pick ``SiglipImageProcessor`` or ``Siglip2ImageProcessor`` from a checkpoint's config files."""

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any) -> SiglipImageProcessor | Siglip2ImageProcessor:
        """Load the image processor of a folder, hub id or config file (both file layouts; see ``from_pretrained``).

        The class comes from ``image_processor_type`` (``SiglipImageProcessor[Fast]``,
        ``Siglip2ImageProcessor[Fast]``), or else from ``model_type`` in the folder's ``config.json``.
        """
        kwargs.pop("use_fast", None)
        config, path = read_image_processor_config(name_or_path, **split_hub_kwargs(kwargs))
        kind = config.get("image_processor_type")
        if kind is not None:
            cls = IMAGE_PROCESSOR_TYPES.get(kind)
            if cls is None:
                raise CheckpointError(
                    f"{path}: key 'image_processor_type' is {kind!r}; supported: {', '.join(IMAGE_PROCESSOR_TYPES)}"
                )
        else:
            cls = _class_from_model_type(path)
        return _build(cls, config, path, kwargs)


def _class_from_model_type(path: Path) -> type[_ImageProcessorBase]:
    model_config = path.parent / CONFIG_NAME
    model_type = read_config_dict(path.parent).get("model_type") if model_config.is_file() else None
    if model_type not in _MODEL_TYPES:
        raise CheckpointError(
            f"{path}: no 'image_processor_type' key, and {model_config} gives no SigLIP model_type "
            f'(found {model_type!r}); add "image_processor_type": "SiglipImageProcessor" or '
            '"Siglip2ImageProcessor"'
        )
    return _MODEL_TYPES[model_type]
