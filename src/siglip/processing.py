"""Processors: one object that tokenizes text and preprocesses images, as transformers' ``SiglipProcessor`` and
``Siglip2Processor`` (``models/siglip*/processing_siglip*.py`` and ``processing_utils.ProcessorMixin``).

Keyword priority, highest first (transformers' ``_merge_kwargs``): call keywords, then the ``text_kwargs`` /
``images_kwargs`` dicts, then the processor's defaults (SigLIP: none, so text is *not* padded unless asked;
SigLIP2: ``padding="max_length"``, ``truncation=True``, ``max_length=64``, and 256 patches of 16 pixels), then
the tokenizer's and image processor's own settings. As in transformers 5.24, the SigLIP2 defaults therefore win
over a ``max_num_patches`` / ``patch_size`` saved in ``preprocessor_config.json``: pass them in the call (or to
``from_pretrained``) to change them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from .auto import AutoImageProcessor, AutoTokenizer
from .batch_feature import BatchFeature
from .files import (
    CONFIG_NAME,
    PREPROCESSING_PATTERNS,
    PREPROCESSOR_CONFIG_NAME,
    PROCESSOR_CONFIG_NAME,
    Checkpoint,
    atomic_write_json,
    split_hub_kwargs,
)

# Keywords that go to the tokenizer; everything else (but return_tensors, which goes to both) is an image option.
TEXT_KEYWORDS = frozenset(
    {
        "padding",
        "truncation",
        "max_length",
        "return_attention_mask",
        "return_token_type_ids",
        "add_special_tokens",
        "pad_to_multiple_of",
        "padding_side",
        "return_length",
        "verbose",
    }
)


class _ProcessorBase:
    """Routes keywords to the tokenizer and image processor and merges their outputs into one BatchFeature."""

    text_defaults: ClassVar[dict[str, Any]] = {}
    images_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, image_processor: Any = None, tokenizer: Any = None) -> None:
        if image_processor is None or tokenizer is None:
            raise ValueError(f"{type(self).__name__} needs both an image_processor and a tokenizer")
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        # Options given to from_pretrained (e.g. max_num_patches=1024): they outrank the class defaults.
        self.text_overrides: dict[str, Any] = {}
        self.images_overrides: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_processor={self.image_processor!r}, tokenizer={self.tokenizer!r})"

    # -- calling -------------------------------------------------------------------------------------------------
    def _split_kwargs(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Any]:
        text_kwargs = dict(kwargs.pop("text_kwargs", None) or {})
        images_kwargs = dict(kwargs.pop("images_kwargs", None) or {})
        common = dict(kwargs.pop("common_kwargs", None) or {})
        return_tensors = kwargs.pop("return_tensors", common.get("return_tensors"))
        for key, value in kwargs.items():
            (text_kwargs if key in TEXT_KEYWORDS else images_kwargs)[key] = value
        text = {**self.text_defaults, **self.text_overrides, **text_kwargs}
        images = {**self.images_defaults, **self.images_overrides, **images_kwargs}
        return text, images, return_tensors

    def __call__(self, images: Any = None, text: Any = None, **kwargs: Any) -> BatchFeature:
        """Preprocess ``images`` and/or tokenize ``text``; returns their union as one BatchFeature.

        Text options (``padding``, ``truncation``, ``max_length``, ...) go to the tokenizer, image options
        (``size``, ``max_num_patches``, ...) to the image processor, ``return_tensors`` to both.
        """
        if images is None and text is None:
            raise ValueError(f"{type(self).__name__} needs text, images, or both")
        text_kwargs, images_kwargs, return_tensors = self._split_kwargs(dict(kwargs))
        data: dict[str, Any] = {}
        if text is not None:
            data.update(self.tokenizer(text, return_tensors=return_tensors, **text_kwargs))
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors, **images_kwargs))
        return BatchFeature(data, tensor_type=return_tensors)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        names = list(getattr(self.tokenizer, "model_input_names", ["input_ids"]))
        for name in getattr(self.image_processor, "model_input_names", ["pixel_values"]):
            if name not in names:
                names.append(name)
        return names

    # -- files -----------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | Checkpoint, **kwargs: Any) -> _ProcessorBase:
        """Load the tokenizer and image processor of a folder or hub id (both layouts transformers writes)."""
        checkpoint = Checkpoint.resolve(name_or_path, patterns=PREPROCESSING_PATTERNS, **split_hub_kwargs(kwargs))
        image_processor = AutoImageProcessor.from_pretrained(checkpoint)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        processor = cls(image_processor=image_processor, tokenizer=tokenizer)
        for key, value in kwargs.items():  # e.g. max_num_patches=1024 for every call
            (processor.text_overrides if key in TEXT_KEYWORDS else processor.images_overrides)[key] = value
        return processor

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write the tokenizer files, ``preprocessor_config.json`` and ``processor_config.json``."""
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(save_directory)
        self.image_processor.save_pretrained(save_directory)
        atomic_write_json(save_directory / PROCESSOR_CONFIG_NAME, {"processor_class": type(self).__name__})
        return save_directory


class SiglipProcessor(_ProcessorBase):
    """SigLIP (and SigLIP2 FixRes) processor: no text defaults — pass ``padding="max_length"`` as the model was
    trained (transformers #28569)."""


class Siglip2Processor(_ProcessorBase):
    """SigLIP2 NaFlex processor: text padded/truncated to 64 tokens, images to 256 patches of 16 px by default."""

    text_defaults: ClassVar[dict[str, Any]] = {"padding": "max_length", "truncation": True, "max_length": 64}
    images_defaults: ClassVar[dict[str, Any]] = {"max_num_patches": 256, "patch_size": 16}


PROCESSOR_CLASSES: dict[str, type[_ProcessorBase]] = {
    "SiglipProcessor": SiglipProcessor,
    "Siglip2Processor": Siglip2Processor,
}


def processor_class_for(checkpoint: Checkpoint) -> type[_ProcessorBase]:
    """Which processor a folder wants: its processor_class, else the image processor type, else model_type."""
    processor = checkpoint.json(PROCESSOR_CONFIG_NAME) or {}
    preprocessor = checkpoint.json(PREPROCESSOR_CONFIG_NAME) or {}
    for name in (processor.get("processor_class"), preprocessor.get("processor_class")):
        if name in PROCESSOR_CLASSES:
            return PROCESSOR_CLASSES[name]
    image_processor = processor.get("image_processor")
    image_type = preprocessor.get("image_processor_type") or (
        image_processor.get("image_processor_type") if isinstance(image_processor, dict) else None
    )
    if isinstance(image_type, str) and image_type.startswith("Siglip2"):
        return Siglip2Processor
    if image_type is None and (checkpoint.json(CONFIG_NAME) or {}).get("model_type") == "siglip2":
        return Siglip2Processor
    return SiglipProcessor


class AutoProcessor:
    """``AutoProcessor.from_pretrained(path_or_id)``: a SiglipProcessor or Siglip2Processor, as the folder says.

    Its table is here rather than in ``auto.py`` because the processors load their parts through ``auto.py``.
    """

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike | Checkpoint, **kwargs: Any) -> _ProcessorBase:
        checkpoint = Checkpoint.resolve(name_or_path, patterns=PREPROCESSING_PATTERNS, **split_hub_kwargs(kwargs))
        return processor_class_for(checkpoint).from_pretrained(checkpoint, **kwargs)
