"""``siglip.image_utils.load_image``: the same helper as ``transformers.image_utils.load_image``."""

from .image_io import load_image

__all__ = ["load_image"]
