"""siglip: SigLIP and SigLIP2 image-text encoders in plain PyTorch, drop-in for the transformers classes.

Names are resolved lazily (PEP 562) so that ``import siglip`` does not import torch until a class is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # configs
    "SiglipConfig": "config",
    "SiglipTextConfig": "config",
    "SiglipVisionConfig": "config",
    "Siglip2Config": "config",
    "Siglip2TextConfig": "config",
    "Siglip2VisionConfig": "config",
    # models
    "SiglipModel": "modeling_siglip",
    "SiglipTextModel": "modeling_siglip",
    "SiglipVisionModel": "modeling_siglip",
    "SiglipForImageClassification": "modeling_siglip",
    "SiglipOutput": "modeling_siglip",
    "Siglip2Model": "modeling_siglip2",
    "Siglip2TextModel": "modeling_siglip2",
    "Siglip2VisionModel": "modeling_siglip2",
    "Siglip2ForImageClassification": "modeling_siglip2",
    "BaseModelOutputWithPooling": "modeling_utils",
    "ImageClassifierOutput": "modeling_utils",
    # auto classes
    "AutoConfig": "auto",
    "AutoModel": "auto",
    "AutoModelForImageClassification": "auto",
    # hub
    "CheckpointError": "hub",
    # preprocessing
    "BatchFeature": "batch_feature",
    "SiglipTokenizer": "tokenization",
    "Siglip2Tokenizer": "tokenization",
    "GemmaTokenizer": "tokenization",
    "GemmaTokenizerFast": "tokenization",
    "AutoTokenizer": "tokenization",
    "SiglipImageProcessor": "image_processing",
    "Siglip2ImageProcessor": "image_processing",
    "SiglipImageProcessorFast": "image_processing",
    "Siglip2ImageProcessorFast": "image_processing",
    "AutoImageProcessor": "image_processing",
    "load_image": "image_processing",
    "SiglipProcessor": "processing",
    "Siglip2Processor": "processing",
    "AutoProcessor": "processing",
    "ImageLoadError": "image_processing",
    # pipeline and embeddings
    "pipeline": "pipelines",
    "ZeroShotImageClassificationPipeline": "pipelines",
    "EmbeddingStore": "store",
    # ONNX export and runtime
    "export_onnx": "export",
    "ExportError": "export",
    "OnnxModel": "onnx_backend",
    # quantization
    "BitsAndBytesConfig": "quantization",
    "quantize_int8": "quantization",
    "compile_model": "compilation",
    # training
    "SaveConfigCallback": "train.hf_trainer",
    "sigmoid_loss": "loss",
    "distributed_sigmoid_loss": "loss",
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


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .auto import AutoConfig, AutoModel, AutoModelForImageClassification  # noqa: F401
    from .config import (  # noqa: F401
        Siglip2Config,
        Siglip2TextConfig,
        Siglip2VisionConfig,
        SiglipConfig,
        SiglipTextConfig,
        SiglipVisionConfig,
    )
    from .export import ExportError, export_onnx  # noqa: F401
    from .hub import CheckpointError  # noqa: F401
    from .modeling_siglip import (  # noqa: F401
        SiglipForImageClassification,
        SiglipModel,
        SiglipOutput,
        SiglipTextModel,
        SiglipVisionModel,
    )
    from .onnx_backend import OnnxModel  # noqa: F401
