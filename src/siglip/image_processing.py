"""The SigLIP / SigLIP2 image processors.

This module owns:

* input handling shared by both processors: PIL images, numpy arrays and torch tensors (HWC or CHW, uint8 or
  float), paths and URLs (read through ``image_io.load_image``), single or in (nested) lists;
* ``SiglipImageProcessor`` (FixRes: squash-resize to ``size``) and ``Siglip2ImageProcessor`` (NaFlex: aspect
  preserving resize to at most ``max_num_patches`` patches, patchify, pad);
* ``get_image_size_for_max_num_patches`` (the NaFlex size search);
* reading and writing ``preprocessor_config.json`` / ``processor_config.json`` (which class a folder wants is
  decided in ``auto.py``).

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

import json
import math
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .batch_feature import BatchFeature
from .files import (
    PREPROCESSING_PATTERNS,
    PREPROCESSOR_CONFIG_NAME,
    PROCESSOR_CONFIG_NAME,
    Checkpoint,
    CheckpointError,
    atomic_write_text,
    read_json_object,
    split_hub_kwargs,
)
from .image_io import load_image, warn_if_clipped

# Pillow filters by their config value: NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING.
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}

# Threads for decoding + resizing a list of images; Pillow's decoders and resampler release the GIL.
_NUM_WORKERS = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


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
                warn_if_clipped(image, f"image {index}")
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
        return atomic_write_text(folder / PREPROCESSOR_CONFIG_NAME, self.to_json_string())

    @classmethod
    def from_dict(cls, config: dict[str, Any], **overrides: Any) -> _ImageProcessorBase:
        """Build from a config dict; ``overrides`` replace settings (unknown names raise ``TypeError``)."""
        unknown = [k for k in overrides if k not in cls.defaults]
        if unknown:
            raise TypeError(f"{cls.__name__} has no setting(s) {', '.join(map(repr, unknown))}")
        return cls(**{**config, **overrides})

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | Checkpoint, **kwargs: Any) -> _ImageProcessorBase:
        """Load from a folder, a hub id or a config file; other ``kwargs`` override settings.

        Reads ``processor_config.json``'s ``"image_processor"`` entry when present (transformers 5 layout), else
        ``preprocessor_config.json``, as transformers' ``ImageProcessingMixin.get_image_processor_dict`` does.
        Hub options (revision, cache_dir, token, local_files_only, force_download, subfolder) are passed on.
        """
        kwargs.pop("use_fast", None)  # accepted for transformers compatibility: there is one implementation
        config, path, _ = read_image_processor_config(name_or_path, **split_hub_kwargs(kwargs))
        return build_image_processor(cls, config, path, kwargs)


def _nested(data: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The ``"image_processor"`` entry of a transformers-5 ``processor_config.json``, if any."""
    if "image_processor" not in data:
        return None
    if not isinstance(data["image_processor"], dict):
        raise CheckpointError(f"{path}: key 'image_processor' must be a JSON object")
    return data["image_processor"]


def read_image_processor_config(
    name_or_path: str | os.PathLike | Checkpoint, **hub_kwargs: Any
) -> tuple[dict[str, Any], Path, Checkpoint | None]:
    """The image processor's config dict, the file it came from, and the checkpoint (None for a JSON file path).

    A folder's ``processor_config.json`` ``"image_processor"`` entry wins over ``preprocessor_config.json``, as in
    transformers' ``ImageProcessingMixin.get_image_processor_dict``.
    """
    path = Path(os.path.expanduser(str(name_or_path))) if not isinstance(name_or_path, Checkpoint) else None
    if path is not None and path.is_file():
        data = read_json_object(path)
        return _nested(data, path) or data, path, None
    checkpoint = Checkpoint.resolve(name_or_path, patterns=PREPROCESSING_PATTERNS, **hub_kwargs)
    processor = checkpoint.json(PROCESSOR_CONFIG_NAME)
    nested = _nested(processor, checkpoint.path(PROCESSOR_CONFIG_NAME)) if processor is not None else None
    if nested is not None:
        return nested, checkpoint.path(PROCESSOR_CONFIG_NAME), checkpoint
    flat = checkpoint.json(PREPROCESSOR_CONFIG_NAME)
    if flat is not None:
        return flat, checkpoint.path(PREPROCESSOR_CONFIG_NAME), checkpoint
    raise CheckpointError(
        f"{checkpoint.folder} has no {PREPROCESSOR_CONFIG_NAME} and no {PROCESSOR_CONFIG_NAME} with an "
        "'image_processor' entry"
    )


def build_image_processor(
    cls: type[_ImageProcessorBase], config: dict[str, Any], path: Path, overrides: dict[str, Any]
) -> Any:
    """``cls`` from a config dict read from ``path``; a bad value is a CheckpointError naming the file."""
    try:
        return cls.from_dict(config, **overrides)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


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
