"""``AutoConfig`` / ``AutoModel``: pick the class from a checkpoint's ``model_type``.

Adding a family means adding its entries to the two tables below (configs come from ``config.CONFIG_CLASSES``).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from .config import CONFIG_CLASSES, BaseConfig

# model_type -> (module, class) of the model AutoModel builds. Imported lazily so that `import siglip` stays cheap.
MODEL_CLASSES: dict[str, tuple[str, str]] = {
    "siglip": ("modeling_siglip", "SiglipModel"),
    "siglip_text_model": ("modeling_siglip", "SiglipTextModel"),
    "siglip_vision_model": ("modeling_siglip", "SiglipVisionModel"),
    "siglip2": ("modeling_siglip2", "Siglip2Model"),
    "siglip2_text_model": ("modeling_siglip2", "Siglip2TextModel"),
    "siglip2_vision_model": ("modeling_siglip2", "Siglip2VisionModel"),
}

IMAGE_CLASSIFICATION_CLASSES: dict[str, tuple[str, str]] = {
    "siglip": ("modeling_siglip", "SiglipForImageClassification"),
    "siglip2": ("modeling_siglip2", "Siglip2ForImageClassification"),
}


def _import(entry: tuple[str, str]) -> type:
    module, name = entry
    return getattr(importlib.import_module(f"siglip.{module}"), name)


def _lookup(table: dict[str, tuple[str, str]], model_type: Any, what: str) -> tuple[str, str]:
    if model_type not in table:
        raise ValueError(
            f"model_type={model_type!r} is not a SigLIP model; {what} supports {', '.join(sorted(table))}"
        )
    return table[model_type]


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
                f"config model_type={model_type!r} is not a SigLIP config; supported: {', '.join(sorted(CONFIG_CLASSES))}"
            )
        return CONFIG_CLASSES[model_type].from_dict(data, **overrides)

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any) -> BaseConfig:
        from .hub import CheckpointError, read_config_dict, resolve_config_file, split_hub_kwargs

        hub_kwargs = split_hub_kwargs(kwargs)
        config_file = resolve_config_file(name_or_path, **hub_kwargs)
        try:
            config = AutoConfig.from_dict(read_config_dict(config_file.parent), **kwargs)
        except ValueError as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{config_file}: {e}") from None
        config.name_or_path = name_or_path
        return config


class _AutoModelBase:
    table: dict[str, tuple[str, str]] = MODEL_CLASSES
    what = "AutoModel"

    @classmethod
    def class_for(cls, model_type: str) -> type:
        return _import(_lookup(cls.table, model_type, cls.what))

    @classmethod
    def from_config(cls, config: BaseConfig) -> Any:
        return cls.class_for(config.model_type)(config)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
        """Load the class the checkpoint's ``config.json`` names (a folder or a hub id)."""
        from .hub import CheckpointError, read_config_dict, resolve_folder, split_hub_kwargs

        config = kwargs.pop("config", None)
        hub_kwargs = split_hub_kwargs(kwargs)
        folder = resolve_folder(name_or_path, **hub_kwargs)
        model_type = config.model_type if config is not None else read_config_dict(folder).get("model_type")
        try:
            model_class = cls.class_for(model_type)
        except ValueError as e:
            raise CheckpointError(f"{folder / 'config.json'}: {e}") from None
        return model_class.from_pretrained(folder, config=config, **kwargs)


class AutoModel(_AutoModelBase):
    """``AutoModel.from_pretrained(path_or_id)``: SiglipModel, Siglip2Model or a tower, by ``model_type``."""


class AutoModelForImageClassification(_AutoModelBase):
    """``SiglipForImageClassification`` / ``Siglip2ForImageClassification`` by ``model_type``."""

    table = IMAGE_CLASSIFICATION_CLASSES
    what = "AutoModelForImageClassification"
