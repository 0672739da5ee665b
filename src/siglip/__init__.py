"""siglip: SigLIP and SigLIP2 image-text encoders in plain PyTorch, drop-in for the transformers classes.

Every public name is listed twice below, on purpose: in the ``TYPE_CHECKING`` block, which editors and type
checkers read (so ``siglip.SiglipModel`` jumps to its definition), and in ``_EXPORTS``, which resolves the name
on first use (PEP 562), so that ``import siglip`` does not import torch. ``tests/test_architecture.py`` checks that
the two lists agree.
"""

# ruff: noqa: F401 - the TYPE_CHECKING imports are the re-exported public names
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .auto import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForImageClassification,
        AutoTokenizer,
    )
    from .batch_feature import BatchFeature
    from .config import (
        Siglip2Config,
        Siglip2TextConfig,
        Siglip2VisionConfig,
        SiglipConfig,
        SiglipTextConfig,
        SiglipVisionConfig,
    )
    from .export import ExportError, export_onnx
    from .files import CheckpointError
    from .image_io import ImageLoadError, load_image
    from .image_processing import (
        Siglip2ImageProcessor,
        Siglip2ImageProcessorFast,
        SiglipImageProcessor,
        SiglipImageProcessorFast,
    )
    from .loss import distributed_sigmoid_loss, sigmoid_loss
    from .modeling_siglip import (
        SiglipForImageClassification,
        SiglipModel,
        SiglipOutput,
        SiglipTextModel,
        SiglipVisionModel,
    )
    from .modeling_siglip2 import (
        Siglip2ForImageClassification,
        Siglip2Model,
        Siglip2TextModel,
        Siglip2VisionModel,
    )
    from .modeling_utils import BaseModelOutputWithPooling, ImageClassifierOutput
    from .onnx_backend import OnnxModel
    from .optimization import optimize
    from .pipelines import ImageClassificationPipeline, ZeroShotImageClassificationPipeline, pipeline
    from .processing import AutoProcessor, Siglip2Processor, SiglipProcessor
    from .quantization import BitsAndBytesConfig, quantize_int8
    from .store import EmbeddingStore
    from .tokenization import GemmaTokenizer, GemmaTokenizerFast, Siglip2Tokenizer, SiglipTokenizer
    from .train.hf_trainer import SaveConfigCallback

# public name -> the module that defines it (resolved on first use)
_EXPORTS: dict[str, str] = {
    "AutoConfig": "auto",
    "AutoImageProcessor": "auto",
    "AutoModel": "auto",
    "AutoModelForImageClassification": "auto",
    "AutoTokenizer": "auto",
    "BatchFeature": "batch_feature",
    "Siglip2Config": "config",
    "Siglip2TextConfig": "config",
    "Siglip2VisionConfig": "config",
    "SiglipConfig": "config",
    "SiglipTextConfig": "config",
    "SiglipVisionConfig": "config",
    "CheckpointError": "files",
    "ImageLoadError": "image_io",
    "load_image": "image_io",
    "Siglip2ImageProcessor": "image_processing",
    "Siglip2ImageProcessorFast": "image_processing",
    "SiglipImageProcessor": "image_processing",
    "SiglipImageProcessorFast": "image_processing",
    "distributed_sigmoid_loss": "loss",
    "sigmoid_loss": "loss",
    "SiglipForImageClassification": "modeling_siglip",
    "SiglipModel": "modeling_siglip",
    "SiglipOutput": "modeling_siglip",
    "SiglipTextModel": "modeling_siglip",
    "SiglipVisionModel": "modeling_siglip",
    "Siglip2ForImageClassification": "modeling_siglip2",
    "Siglip2Model": "modeling_siglip2",
    "Siglip2TextModel": "modeling_siglip2",
    "Siglip2VisionModel": "modeling_siglip2",
    "BaseModelOutputWithPooling": "modeling_utils",
    "ImageClassifierOutput": "modeling_utils",
    "ImageClassificationPipeline": "pipelines",
    "ZeroShotImageClassificationPipeline": "pipelines",
    "pipeline": "pipelines",
    "AutoProcessor": "processing",
    "Siglip2Processor": "processing",
    "SiglipProcessor": "processing",
    "optimize": "optimization",
    "export_onnx": "export",
    "ExportError": "export",
    "OnnxModel": "onnx_backend",
    "BitsAndBytesConfig": "quantization",
    "quantize_int8": "quantization",
    "EmbeddingStore": "store",
    "GemmaTokenizer": "tokenization",
    "GemmaTokenizerFast": "tokenization",
    "Siglip2Tokenizer": "tokenization",
    "SiglipTokenizer": "tokenization",
    "SaveConfigCallback": "train.hf_trainer",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'siglip' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
