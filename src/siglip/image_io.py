"""Reading one image from wherever users keep it: a file, an http(s) URL, a data URI or base64, or a PIL image.

``load_image`` returns an upright RGB ``PIL.Image`` the way transformers' ``image_utils.load_image`` does, and every
failure is one ``ImageLoadError`` line that names the source and the problem (missing, unreadable, empty,
truncated, not an image, a zero dimension, a decompression bomb, a network failure). The processors and the batch
jobs read images only through this module. The batch jobs ask for ``rescale_wide=True``: 16-bit, 32-bit and float
images scaled to 8 bits as an image viewer shows them (``to_8bit``), where transformers clips them.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import io
import os
import re
import socket
import urllib.error
import urllib.request
import warnings

from PIL import Image, ImageOps

from .version import __version__


class ImageLoadError(ValueError):
    """An image that can't be read: the message names the file or URL and says what is wrong with it."""


# ------------------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------------------

_BASE64 = re.compile(r"[A-Za-z0-9+/\s]+={0,2}\s*")


def _download(url: str, timeout: float | None) -> bytes:
    """The body of ``url``; network failures become one-line ``ImageLoadError``s naming the URL."""
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
            try:
                f = open(source, "rb")
            except OSError as e:  # no read permission, or the file vanished: not a decoding problem
                raise ImageLoadError(f"{name}: cannot read the file ({e.strerror or e})") from None
            with f:
                image = Image.open(f)
                image.load()  # read the pixels while the file is open; single-frame images then need no file
        else:
            image = Image.open(source)
            image.load()
    except ImageLoadError:
        raise
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


def load_image(
    image: str | os.PathLike | Image.Image, timeout: float | None = 10.0, *, rescale_wide: bool = False
) -> Image.Image:
    """Load an image as an upright RGB ``PIL.Image``, as transformers' ``image_utils.load_image`` does.

    Args:
        image: a file path, an ``http(s)://`` URL, a ``data:image/...;base64,`` URI, a base64 string or a PIL image.
        timeout: seconds to wait for a URL (connection and each read).
        rescale_wide: scale 16-bit, 32-bit and float images to 8 bits as an image viewer would (``to_8bit``)
            instead of clipping them as transformers does; what the ``siglip`` commands use.

    Returns:
        The image after ``ImageOps.exif_transpose`` (the EXIF / XMP orientation tag is applied and removed) and
        ``convert("RGB")``. Like transformers, that conversion drops an alpha band without compositing (pass the
        opened image, ``Image.open(path)``, to a processor to composite it onto white instead); a palette's
        transparent colour survives in ``info["transparency"]``, and the processors composite that colour onto white.
        16-bit and float images are clipped to [0, 255] by that conversion, not rescaled (a warning says so),
        unless ``rescale_wide``.

    Raises:
        ImageLoadError: the file or URL is missing, unreachable, empty, truncated, not an image, has a zero
            dimension or is bigger than ``PIL.Image.MAX_IMAGE_PIXELS`` allows (decompression bomb).
    """
    if isinstance(image, os.PathLike):
        image = os.fspath(image)
    if isinstance(image, str):
        if image.startswith(("http://", "https://")):
            return load_image_bytes(_download(image, timeout), image, rescale_wide=rescale_wide)
        source, name = _open_source(image)
        return _upright_rgb(_decode(source, name), name, rescale_wide)
    if isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)  # a transposed copy: the caller's image is left alone
        return _to_rgb(image, "the image", rescale_wide)
    raise TypeError(
        f"load_image takes a path, URL, base64 string or PIL image, got {type(image).__name__}; numpy arrays "
        "and torch tensors go to the image processor directly"
    )


def load_image_bytes(data: bytes, name: str = "the image", *, rescale_wide: bool = False) -> Image.Image:
    """``load_image`` for an encoded image already in memory (a download, a request body), named ``name`` in
    errors: the same decoding checks, EXIF orientation and RGB conversion."""
    return _upright_rgb(_decode(io.BytesIO(data), name), name, rescale_wide)


def _upright_rgb(image: Image.Image, name: str, rescale_wide: bool = False) -> Image.Image:
    """A freshly decoded image with its EXIF orientation applied, as 8-bit RGB (what ``load_image`` returns)."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as e:  # a malformed EXIF block
        raise ImageLoadError(f"{name}: unreadable EXIF orientation ({type(e).__name__}: {e})") from None
    return _to_rgb(image, name, rescale_wide)


def _to_rgb(image: Image.Image, name: str, rescale_wide: bool) -> Image.Image:
    """8-bit RGB: wide modes scaled as a viewer shows them (``rescale_wide``) or clipped as transformers does."""
    if rescale_wide:
        image = to_8bit(image, name)
    else:
        warn_if_clipped(image, name)
    # convert() to the same mode returns a copy; an RGB image needs none
    return image if image.mode == "RGB" else image.convert("RGB")


# 16-bit, 32-bit integer and float modes: convert("RGB") clips their values to [0, 255] instead of rescaling.
_WIDE_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")


def warn_if_clipped(image: Image.Image, name: str) -> None:
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


def to_8bit(image: Image.Image, name: str = "the image") -> Image.Image:
    """A 16-bit, 32-bit integer or float image (modes ``I;16*``, ``I``, ``F``) as 8-bit greyscale (``L``), scaled the
    way image viewers show it; any other image is returned unchanged.

    16-bit values are divided by 257 (65535 -> 255). ``I`` images whose values fit in [0, 255] are kept, those that
    fit in [0, 65535] are 16-bit data (how TIFF and older Pillow open it) and are divided by 257. Float images in
    [0, 1] are multiplied by 255, those in [0, 255] are kept. Anything else (negative values, a wider range) is
    stretched from its minimum to its maximum, with a warning that says so.
    """
    if image.mode not in _WIDE_MODES:
        return image
    import numpy as np

    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode.startswith("I;16"):
        scale = 257.0
    elif image.mode == "F" and low >= 0 and high <= 1:
        scale = 1 / 255
    elif low >= 0 and high <= 255:
        scale = 1.0
    elif image.mode == "I" and low >= 0 and high <= 65535:
        scale = 257.0
    else:
        warnings.warn(
            f"{name}: mode {image.mode} with values in [{low:g}, {high:g}] has no standard 8-bit scale; "
            "stretched from its minimum (black) to its maximum (white)",
            stacklevel=3,
        )
        values, scale = values - low, max(high - low, 1e-12) / 255
    return Image.fromarray(np.clip(np.rint(values / scale), 0, 255).astype(np.uint8))
