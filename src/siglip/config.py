"""Configuration dataclasses for SigLIP and SigLIP2, mapping 1:1 to a hub ``config.json``.

Field names and defaults follow transformers' ``configuration_siglip.py`` / ``configuration_siglip2.py``.
Keys a config file carries that we don't model (``architectures``, ``transformers_version``, ...) are kept in
``extra`` and written back unchanged, so a load/save round trip loses nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .activations import ACTIVATIONS
from .files import CONFIG_NAME, Checkpoint, atomic_write_text, read_json_object, split_hub_kwargs


def _check_positive(owner: str, **values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")


def _check_heads(owner: str, hidden_size: int, num_attention_heads: int) -> None:
    if hidden_size % num_attention_heads != 0:
        raise ValueError(
            f"{owner}.hidden_size={hidden_size} is not divisible by num_attention_heads={num_attention_heads}"
        )


@dataclass
class BaseConfig:
    """Shared behaviour: dict/json round trips, unknown-key preservation, validation hooks."""

    model_type: ClassVar[str] = ""
    # When a tower config is read from a joint config.json, the tower's part lives under this key.
    base_config_key: ClassVar[str | None] = None
    parent_model_types: ClassVar[tuple[str, ...]] = ()
    # Constructor arguments that are not stored fields (``num_labels`` on the joint configs).
    init_only_keys: ClassVar[tuple[str, ...]] = ()

    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # Where the config was loaded from (a folder or hub id; "" when built in code), as transformers'
    # ``config._name_or_path``: tools read it (PEFT's base_model_name_or_path), it is never written to the file.
    _name_or_path: ClassVar[str] = ""

    @property
    def name_or_path(self) -> str:
        return self._name_or_path

    @name_or_path.setter
    def name_or_path(self, value: str | os.PathLike) -> None:
        self._name_or_path = str(value)

    # -- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> BaseConfig:
        """Build a config from a ``config.json`` dict; unknown keys go to ``extra``.

        A tower config given a joint config (``SiglipVisionConfig.from_dict(siglip_config_dict)``) reads its
        ``vision_config`` / ``text_config`` part, as transformers does.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        data = dict(data)
        model_type = data.get("model_type")
        if cls.base_config_key and model_type in cls.parent_model_types:
            data = dict(data.get(cls.base_config_key) or {})
            model_type = data.get("model_type")
        if model_type is not None and model_type != cls.model_type:
            raise ValueError(
                f"{cls.__name__} expects model_type '{cls.model_type}' in the config, got model_type={model_type!r}"
            )
        data.pop("model_type", None)
        data.update(overrides)
        names = {f.name for f in dataclasses.fields(cls) if f.name != "extra"} | set(cls.init_only_keys)
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        return cls(**known, extra=extra)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> BaseConfig:
        return cls.from_dict(read_json_object(path))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | Checkpoint, **kwargs: Any) -> BaseConfig:
        """Read ``config.json`` from a local folder, a file path, or a hub id (through the hub cache).

        Other keyword arguments (besides the hub options) override config fields.
        """
        data, name = read_config(name_or_path, split_hub_kwargs(kwargs))
        config = cls.from_dict(data, **kwargs)
        config.name_or_path = name
        return config

    # -- serialisation ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` dict: extras first, then every field, sub-configs nested, keys sorted."""
        out: dict[str, Any] = copy.deepcopy(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if isinstance(value, BaseConfig):
                value = value.to_dict()
            elif isinstance(value, dict):
                value = {str(k): v for k, v in value.items()}
            out[f.name] = copy.deepcopy(value)
        out["model_type"] = self.model_type
        return dict(sorted(out.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(save_directory / CONFIG_NAME, self.to_json_string())

    def replace(self, **changes: Any) -> BaseConfig:
        """A validated copy with some fields changed (unknown names go to ``extra``)."""
        data = self.to_dict()
        data.update(changes)
        config = type(self).from_dict(data)
        config.name_or_path = self.name_or_path
        return config

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # overridden
        pass


def read_config(name_or_path: str | os.PathLike | Checkpoint, hub_kwargs: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The ``config.json`` dict of a folder, hub id or ``Checkpoint`` (or of a config file path), and its name."""
    path = Path(os.path.expanduser(str(name_or_path))) if not isinstance(name_or_path, Checkpoint) else None
    if path is not None and path.is_file():
        return read_json_object(path), str(name_or_path)
    checkpoint = Checkpoint.resolve(name_or_path, **hub_kwargs)
    return checkpoint.config_dict(), checkpoint.name


# ------------------------------------------------------------------------------------------------------------
# SigLIP
# ------------------------------------------------------------------------------------------------------------


@dataclass
class SiglipTextConfig(BaseConfig):
    """Text tower of SigLIP (``model_type`` ``siglip_text_model``).

    ``pad/bos/eos_token_id`` are CLIP leftovers the model never reads; they are kept for file parity.
    """

    model_type: ClassVar[str] = "siglip_text_model"
    base_config_key: ClassVar[str | None] = "text_config"
    parent_model_types: ClassVar[tuple[str, ...]] = ("siglip",)

    vocab_size: int = 32000
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 64
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    pad_token_id: int | None = 1
    bos_token_id: int | None = 49406
    eos_token_id: int | None = 49407
    projection_size: int | None = None  # None -> hidden_size (the giant-opt text head projects 1152 -> 1536)

    def validate(self) -> None:
        name = type(self).__name__
        if self.projection_size is None:
            self.projection_size = self.hidden_size
        _check_positive(
            name,
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            max_position_embeddings=self.max_position_embeddings,
            projection_size=self.projection_size,
        )
        _check_heads(name, self.hidden_size, self.num_attention_heads)
        _check_common(name, self)


@dataclass
class SiglipVisionConfig(BaseConfig):
    """Fixed-resolution vision tower of SigLIP and SigLIP2 FixRes (``model_type`` ``siglip_vision_model``).

    ``vision_use_head=False`` drops the attention-pooling head (VLM towers); ``pooler_output`` is then None.
    """

    model_type: ClassVar[str] = "siglip_vision_model"
    base_config_key: ClassVar[str | None] = "vision_config"
    parent_model_types: ClassVar[tuple[str, ...]] = ("siglip",)

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 16
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    vision_use_head: bool = True

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def validate(self) -> None:
        name = type(self).__name__
        _check_positive(
            name,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_channels=self.num_channels,
            image_size=self.image_size,
            patch_size=self.patch_size,
        )
        _check_heads(name, self.hidden_size, self.num_attention_heads)
        if self.image_size < self.patch_size:
            raise ValueError(f"{name}.image_size={self.image_size} is smaller than patch_size={self.patch_size}")
        if not isinstance(self.vision_use_head, bool):
            raise ValueError(f"{name}.vision_use_head must be true or false, got {self.vision_use_head!r}")
        _check_common(name, self)


def _check_common(name: str, config: Any) -> None:
    if config.hidden_act not in ACTIVATIONS:
        raise ValueError(f"{name}.hidden_act={config.hidden_act!r} is not one of {', '.join(ACTIVATIONS)}")
    if not isinstance(config.layer_norm_eps, (int, float)) or config.layer_norm_eps <= 0:
        raise ValueError(f"{name}.layer_norm_eps must be a positive number, got {config.layer_norm_eps!r}")
    if not isinstance(config.attention_dropout, (int, float)) or not 0 <= config.attention_dropout < 1:
        raise ValueError(f"{name}.attention_dropout must be in [0, 1), got {config.attention_dropout!r}")


@dataclass(init=False)
class _JointConfig(BaseConfig):
    """Text + vision sub-configs plus the classification-head keys transformers keeps at the top level."""

    text_config_class: ClassVar[type[BaseConfig]]
    vision_config_class: ClassVar[type[BaseConfig]]
    init_only_keys: ClassVar[tuple[str, ...]] = ("num_labels",)

    text_config: Any = None
    vision_config: Any = None
    initializer_factor: float = 1.0
    # Used by *ForImageClassification; transformers' default is two labels named LABEL_0 / LABEL_1.
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None

    def __init__(
        self,
        text_config: Any = None,
        vision_config: Any = None,
        initializer_factor: float = 1.0,
        id2label: dict[int, str] | None = None,
        label2id: dict[str, int] | None = None,
        problem_type: str | None = None,
        num_labels: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.text_config = text_config
        self.vision_config = vision_config
        self.initializer_factor = initializer_factor
        self.problem_type = problem_type
        self.extra = dict(extra or {})
        if num_labels is not None:
            # `num_labels=N` is accepted as transformers does: it (re)creates LABEL_0..LABEL_{N-1}.
            if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 0:
                raise ValueError(f"{type(self).__name__}.num_labels must be a non-negative integer, got {num_labels!r}")
            if id2label is None or len(id2label) != num_labels:
                id2label, label2id = {i: f"LABEL_{i}" for i in range(num_labels)}, None
        self.id2label = id2label
        self.label2id = label2id
        self.__post_init__()

    def validate(self) -> None:
        name = type(self).__name__
        self.text_config = _sub_config(self.text_config, self.text_config_class, f"{name}.text_config")
        self.vision_config = _sub_config(self.vision_config, self.vision_config_class, f"{name}.vision_config")
        if self.id2label is None:
            self.id2label = {i: f"LABEL_{i}" for i in range(2)}
        try:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        except (TypeError, ValueError, AttributeError):
            raise ValueError(f"{name}.id2label must map integer ids to names, got {self.id2label!r}") from None
        if self.label2id is None or len(self.label2id) != len(self.id2label):
            self.label2id = {v: k for k, v in self.id2label.items()}
        self.label2id = {str(k): int(v) for k, v in self.label2id.items()}
        allowed = (None, "regression", "single_label_classification", "multi_label_classification")
        if self.problem_type not in allowed:
            raise ValueError(f"{name}.problem_type={self.problem_type!r} is not one of {allowed[1:]}")
        if not isinstance(self.initializer_factor, (int, float)) or self.initializer_factor <= 0:
            raise ValueError(f"{name}.initializer_factor must be a positive number, got {self.initializer_factor!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> BaseConfig:
        data = dict(data)
        if "num_labels" in overrides and "id2label" not in overrides:
            # A new head size replaces the file's label names.
            data.pop("id2label", None)
            data.pop("label2id", None)
        return super().from_dict(data, **overrides)

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        # Like transformers, leave the default two-label head and an unset problem_type out of the file.
        if self.id2label == {0: "LABEL_0", 1: "LABEL_1"} and self.label2id == {"LABEL_0": 0, "LABEL_1": 1}:
            out.pop("id2label")
            out.pop("label2id")
        if self.problem_type is None:
            out.pop("problem_type")
        return out


def _sub_config(value: Any, config_class: type[BaseConfig], where: str) -> BaseConfig:
    if value is None:
        return config_class()
    if isinstance(value, config_class):
        return value
    if isinstance(value, dict):
        return config_class.from_dict(value)
    raise ValueError(f"{where} must be a dict or a {config_class.__name__}, got {type(value).__name__}")


class SiglipConfig(_JointConfig):
    """Joint SigLIP config (``model_type`` ``siglip``); also used by the SigLIP2 FixRes checkpoints."""

    model_type: ClassVar[str] = "siglip"
    text_config_class: ClassVar[type[BaseConfig]] = SiglipTextConfig
    vision_config_class: ClassVar[type[BaseConfig]] = SiglipVisionConfig


# ------------------------------------------------------------------------------------------------------------
# SigLIP2 (NaFlex)
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Siglip2TextConfig(SiglipTextConfig):
    """Text tower of SigLIP2 NaFlex; same fields and defaults as SigLIP's (real checkpoints use vocab 256000)."""

    model_type: ClassVar[str] = "siglip2_text_model"
    parent_model_types: ClassVar[tuple[str, ...]] = ("siglip2",)


@dataclass
class Siglip2VisionConfig(BaseConfig):
    """NaFlex vision tower: a linear patch embedding and a learned ``num_patches`` position grid (no image_size)."""

    model_type: ClassVar[str] = "siglip2_vision_model"
    base_config_key: ClassVar[str | None] = "vision_config"
    parent_model_types: ClassVar[tuple[str, ...]] = ("siglip2",)

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    num_patches: int = 256  # size of the learned position table; a perfect square (16x16)
    patch_size: int = 16
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    vision_use_head: bool = True

    def validate(self) -> None:
        name = type(self).__name__
        _check_positive(
            name,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_channels=self.num_channels,
            num_patches=self.num_patches,
            patch_size=self.patch_size,
        )
        _check_heads(name, self.hidden_size, self.num_attention_heads)
        side = int(round(self.num_patches**0.5))
        if side * side != self.num_patches:
            raise ValueError(f"{name}.num_patches={self.num_patches} is not a perfect square")
        if not isinstance(self.vision_use_head, bool):
            raise ValueError(f"{name}.vision_use_head must be true or false, got {self.vision_use_head!r}")
        _check_common(name, self)


class Siglip2Config(_JointConfig):
    """Joint SigLIP2 NaFlex config (``model_type`` ``siglip2``)."""

    model_type: ClassVar[str] = "siglip2"
    text_config_class: ClassVar[type[BaseConfig]] = Siglip2TextConfig
    vision_config_class: ClassVar[type[BaseConfig]] = Siglip2VisionConfig
