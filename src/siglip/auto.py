"""Which class a checkpoint wants: every ``model_type`` / class-name dispatch table, and the ``Auto*`` classes.

* ``AutoConfig``: ``config.json``'s ``model_type`` -> a config class.
* ``AutoModel`` / ``AutoModelForImageClassification``: ``model_type`` -> a model class.
* ``AutoTokenizer``: ``tokenizer_config.json``'s ``tokenizer_class`` or ``model_type`` -> a tokenizer class, as
  transformers 5.24's ``AutoTokenizer`` decides (``models/auto/tokenization_auto.py``).
* ``AutoImageProcessor``: ``image_processor_type`` or ``model_type`` -> an image processor class.

Each ``from_pretrained`` resolves the name once (``files.Checkpoint``) and hands the resolved checkpoint on, so
the class it builds reads the same parsed files. Adding a family means adding its entries to the tables below.
The processors sit above this module (they load their parts through it); ``AutoProcessor`` is in
``processing.py``.
"""

from __future__ import annotations

import os
from typing import Any

from .config import (
    BaseConfig,
    Siglip2Config,
    Siglip2TextConfig,
    Siglip2VisionConfig,
    SiglipConfig,
    SiglipTextConfig,
    SiglipVisionConfig,
    read_config,
)
from .files import (
    CONFIG_NAME,
    IMAGE_PROCESSOR_PATTERNS,
    PREPROCESSING_PATTERNS,
    TOKENIZER_CONFIG_NAME,
    Checkpoint,
    CheckpointError,
    read_json_object,
    split_hub_kwargs,
)
from .image_processing import (
    Siglip2ImageProcessor,
    SiglipImageProcessor,
    build_image_processor,
    read_image_processor_config,
)
from .modeling_siglip import SiglipForImageClassification, SiglipModel, SiglipTextModel, SiglipVisionModel
from .modeling_siglip2 import Siglip2ForImageClassification, Siglip2Model, Siglip2TextModel, Siglip2VisionModel
from .modeling_utils import PreTrainedModel
from .tokenization import GemmaTokenizer, Siglip2Tokenizer, SiglipTokenizer
from .tokenization_utils import _Tokenizer

# ------------------------------------------------------------------------------------------------------------
# The tables
# ------------------------------------------------------------------------------------------------------------

CONFIG_CLASSES: dict[str, type[BaseConfig]] = {
    c.model_type: c
    for c in (SiglipConfig, SiglipTextConfig, SiglipVisionConfig, Siglip2Config, Siglip2TextConfig, Siglip2VisionConfig)
}

MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "siglip": SiglipModel,
    "siglip_text_model": SiglipTextModel,
    "siglip_vision_model": SiglipVisionModel,
    "siglip2": Siglip2Model,
    "siglip2_text_model": Siglip2TextModel,
    "siglip2_vision_model": Siglip2VisionModel,
}

IMAGE_CLASSIFICATION_CLASSES: dict[str, type[PreTrainedModel]] = {
    "siglip": SiglipForImageClassification,
    "siglip2": Siglip2ForImageClassification,
}

TOKENIZER_CLASSES: dict[str, type[_Tokenizer]] = {
    "SiglipTokenizer": SiglipTokenizer,
    "GemmaTokenizer": GemmaTokenizer,
    "Siglip2Tokenizer": Siglip2Tokenizer,
}
# transformers' TOKENIZER_MAPPING_NAMES for these model types.
MODEL_TYPE_TOKENIZERS = {"siglip": "SiglipTokenizer", "siglip2": "Siglip2Tokenizer"}
# model types whose hub tokenizer_class transformers overrides (MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS).
HUB_TOKENIZER_CLASS_OVERRIDDEN = {"siglip2"}

# image_processor_type values found in hub configs (Fast: transformers 4 torchvision; Pil: written by hand)
IMAGE_PROCESSOR_TYPES: dict[str, type[SiglipImageProcessor | Siglip2ImageProcessor]] = {
    "SiglipImageProcessor": SiglipImageProcessor,
    "SiglipImageProcessorFast": SiglipImageProcessor,
    "SiglipImageProcessorPil": SiglipImageProcessor,
    "Siglip2ImageProcessor": Siglip2ImageProcessor,
    "Siglip2ImageProcessorFast": Siglip2ImageProcessor,
    "Siglip2ImageProcessorPil": Siglip2ImageProcessor,
}
# Without image_processor_type, config.json's model_type decides (SigLIP2 FixRes checkpoints are "siglip").
MODEL_TYPE_IMAGE_PROCESSORS = {"siglip": SiglipImageProcessor, "siglip2": Siglip2ImageProcessor}


def _lookup(table: dict[str, Any], model_type: Any, what: str) -> Any:
    if model_type not in table:
        raise ValueError(f"model_type={model_type!r} is not a SigLIP model; {what} supports {', '.join(sorted(table))}")
    return table[model_type]


# ------------------------------------------------------------------------------------------------------------
# Configs and models
# ------------------------------------------------------------------------------------------------------------


class AutoConfig:
    """``AutoConfig.from_pretrained(path_or_id)`` returns the config class its ``model_type`` names."""

    @staticmethod
    def for_model(model_type: str, **kwargs: Any) -> BaseConfig:
        if model_type not in CONFIG_CLASSES:
            raise ValueError(f"model_type={model_type!r} is not one of {', '.join(sorted(CONFIG_CLASSES))}")
        return CONFIG_CLASSES[model_type](**kwargs)

    @staticmethod
    def from_dict(data: dict[str, Any], **overrides: Any) -> BaseConfig:
        model_type = data.get("model_type")
        if model_type not in CONFIG_CLASSES:
            raise ValueError(
                f"config model_type={model_type!r} is not a SigLIP config; "
                f"supported: {', '.join(sorted(CONFIG_CLASSES))}"
            )
        return CONFIG_CLASSES[model_type].from_dict(data, **overrides)

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike | Checkpoint, **kwargs: Any) -> BaseConfig:
        data, name = read_config(name_or_path, split_hub_kwargs(kwargs))
        try:
            config = AutoConfig.from_dict(data, **kwargs)
        except CheckpointError:
            raise
        except ValueError as e:
            where = name_or_path.path(CONFIG_NAME) if isinstance(name_or_path, Checkpoint) else name
            raise CheckpointError(f"{where}: {e}") from None
        config.name_or_path = name
        return config


class _AutoModelBase:
    table: dict[str, type[PreTrainedModel]] = MODEL_CLASSES
    what = "AutoModel"

    @classmethod
    def class_for(cls, model_type: str) -> type[PreTrainedModel]:
        return _lookup(cls.table, model_type, cls.what)

    @classmethod
    def from_config(cls, config: BaseConfig) -> PreTrainedModel:
        return cls.class_for(config.model_type)(config)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | Checkpoint, **kwargs: Any) -> PreTrainedModel:
        """Load the class the checkpoint's ``config.json`` names (a folder, a hub id or a resolved Checkpoint)."""
        config = kwargs.get("config")
        checkpoint = Checkpoint.resolve(name_or_path, **split_hub_kwargs(kwargs))
        model_type = config.model_type if config is not None else checkpoint.config_dict().get("model_type")
        try:
            model_class = cls.class_for(model_type)
        except ValueError as e:
            raise CheckpointError(f"{checkpoint.path(CONFIG_NAME)}: {e}") from None
        return model_class.from_pretrained(checkpoint, **kwargs)


class AutoModel(_AutoModelBase):
    """``AutoModel.from_pretrained(path_or_id)``: SiglipModel, Siglip2Model or a tower, by ``model_type``."""


class AutoModelForImageClassification(_AutoModelBase):
    """``SiglipForImageClassification`` / ``Siglip2ForImageClassification`` by ``model_type``."""

    table = IMAGE_CLASSIFICATION_CLASSES
    what = "AutoModelForImageClassification"


# ------------------------------------------------------------------------------------------------------------
# Tokenizers and image processors
# ------------------------------------------------------------------------------------------------------------


def tokenizer_class_for(checkpoint: Checkpoint) -> type[_Tokenizer]:
    """The class transformers 5.24's ``AutoTokenizer`` picks for a SigLIP folder (``models/auto/tokenization_auto.py``).

    * ``model_type`` "siglip2" (NaFlex): always ``Siglip2Tokenizer``, whatever ``tokenizer_class`` says (hub
      files say ``GemmaTokenizer``).
    * otherwise ``tokenizer_config.json``'s ``tokenizer_class`` (then ``config.json``'s), a trailing "Fast"
      ignored: SigLIP2 FixRes repos (``model_type`` "siglip") say ``GemmaTokenizer`` and get it, unlowercased.
    * with no class named, ``model_type`` decides: "siglip" gives ``SiglipTokenizer``.
    """
    tokenizer_config = checkpoint.json(TOKENIZER_CONFIG_NAME, "tokenizer config") or {}
    model_config = checkpoint.json(CONFIG_NAME, "model config") or {}
    model_type = model_config.get("model_type")
    registered = MODEL_TYPE_TOKENIZERS.get(model_type)
    if tokenizer_config.get("tokenizer_class"):
        hub_class, source = tokenizer_config["tokenizer_class"], checkpoint.path(TOKENIZER_CONFIG_NAME)
    else:
        hub_class, source = model_config.get("tokenizer_class"), checkpoint.path(CONFIG_NAME)
    if registered and (not hub_class or model_type in HUB_TOKENIZER_CLASS_OVERRIDDEN):
        name = registered
    elif hub_class:
        name = hub_class
    else:
        raise CheckpointError(
            f"{checkpoint.folder}: can't tell which tokenizer to build: {TOKENIZER_CONFIG_NAME} names no "
            f"tokenizer_class and {CONFIG_NAME} model_type is {model_type!r} (expected 'siglip' or 'siglip2')"
        )
    cls = TOKENIZER_CLASSES.get(name.removesuffix("Fast"))
    if cls is None:
        raise CheckpointError(
            f"{source}: tokenizer_class {name!r} is not a tokenizer this package provides; supported: "
            f"{', '.join(sorted(TOKENIZER_CLASSES))} (and the same names ending in 'Fast')"
        )
    return cls


class AutoTokenizer:
    """``AutoTokenizer.from_pretrained(path_or_id)``: the SigLIP / SigLIP2 / Gemma tokenizer a folder declares,
    chosen as transformers 5.24's ``AutoTokenizer`` chooses it (see ``tokenizer_class_for``)."""

    def __init__(self) -> None:
        raise TypeError("AutoTokenizer is not instantiated; use AutoTokenizer.from_pretrained(path_or_hub_id)")

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike | Checkpoint, **kwargs: Any) -> _Tokenizer:
        """Load a tokenizer from a local folder or a hub id.

        Args:
            name_or_path: folder, or hub id such as ``google/siglip-base-patch16-224``.
            **kwargs: hub options (revision, cache_dir, local_files_only, token, force_download, subfolder) and
                overrides of ``tokenizer_config.json`` entries (``model_max_length``, ``padding_side``, ...).
        """
        checkpoint = Checkpoint.resolve(name_or_path, patterns=PREPROCESSING_PATTERNS, **split_hub_kwargs(kwargs))
        return tokenizer_class_for(checkpoint).from_checkpoint(checkpoint, kwargs)


class AutoImageProcessor:
    """Pick ``SiglipImageProcessor`` or ``Siglip2ImageProcessor`` from a checkpoint's config files."""

    @staticmethod
    def from_pretrained(
        name_or_path: str | os.PathLike | Checkpoint, **kwargs: Any
    ) -> SiglipImageProcessor | Siglip2ImageProcessor:
        """Load the image processor of a folder, hub id or config file (both file layouts transformers writes).

        The class comes from ``image_processor_type`` (``SiglipImageProcessor[Fast]``,
        ``Siglip2ImageProcessor[Fast]``), or else from ``model_type`` in the folder's ``config.json``.
        """
        kwargs.pop("use_fast", None)
        hub_kwargs = split_hub_kwargs(kwargs)
        if not isinstance(name_or_path, Checkpoint) and not os.path.isfile(os.path.expanduser(str(name_or_path))):
            name_or_path = Checkpoint.resolve(name_or_path, patterns=IMAGE_PROCESSOR_PATTERNS, **hub_kwargs)
        config, path, checkpoint = read_image_processor_config(name_or_path, **hub_kwargs)
        kind = config.get("image_processor_type")
        if kind is not None:
            cls = IMAGE_PROCESSOR_TYPES.get(kind)
            if cls is None:
                raise CheckpointError(
                    f"{path}: key 'image_processor_type' is {kind!r}; supported: {', '.join(IMAGE_PROCESSOR_TYPES)}"
                )
        else:
            if checkpoint is not None:
                model_config = checkpoint.json(CONFIG_NAME) or {}
            else:  # a config file given by path: the model config beside it
                beside = path.parent / CONFIG_NAME
                model_config = read_json_object(beside) if beside.is_file() else {}
            cls = MODEL_TYPE_IMAGE_PROCESSORS.get(model_config.get("model_type"))
            if cls is None:
                raise CheckpointError(
                    f"{path}: no 'image_processor_type' key, and {path.parent / CONFIG_NAME} gives no SigLIP "
                    f'model_type (found {model_config.get("model_type")!r}); add "image_processor_type": '
                    '"SiglipImageProcessor" or "Siglip2ImageProcessor"'
                )
        return build_image_processor(cls, config, path, kwargs)
