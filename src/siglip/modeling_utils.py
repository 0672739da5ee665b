"""What every model class shares: output containers and the pretrained-model base (load, save, device, dtype).

Model files only define modules and forward passes. ``PreTrainedModel.from_pretrained`` resolves the checkpoint
(``files``), reads its config (``config``), builds the model on the meta device and streams the weights in
(``weights``); ``save_pretrained`` writes them back in the hub layout.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.utils._pytree as pytree
from torch import nn

from .config import BaseConfig
from .files import CONFIG_NAME, Checkpoint, CheckpointError, split_hub_kwargs
from .quantization import apply_bitsandbytes, check_bitsandbytes
from .weights import checkpoint_tensors, format_keys, load_weights, resolve_device, resolve_dtype, save_weights

logger = logging.getLogger("siglip")

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


class ModelOutput(OrderedDict):
    """A dict-like result with attribute access, as transformers' ``ModelOutput``.

    Subclasses declare their fields as annotations. Fields left at None are absent from the dict, so
    ``output[0]`` / ``output.to_tuple()`` list only what was computed, in declaration order; attribute access
    returns None for an absent field.
    """

    _fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names: list[str] = []
        for base in reversed(cls.__mro__):
            for name in getattr(base, "__annotations__", {}):
                if not name.startswith("_") and name not in names:
                    names.append(name)
        cls._fields = tuple(names)
        # A pytree node (as transformers registers its outputs), so torch.export / torch.compile / FSDP can
        # flatten it: the present fields' values, with their names as context.
        pytree.register_pytree_node(
            cls,
            lambda output: (list(output.values()), list(output.keys())),
            lambda values, names: cls(**dict(zip(names, values, strict=True))),
            serialized_type_name=f"{cls.__module__}.{cls.__qualname__}",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        if len(args) > len(self._fields):
            raise TypeError(f"{type(self).__name__} takes at most {len(self._fields)} positional fields")
        for name, value in zip(self._fields, args, strict=False):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__} got field {name!r} twice")
            kwargs[name] = value
        unknown = set(kwargs) - set(self._fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        for name in self._fields:
            value = kwargs.get(name)
            if value is not None:
                super().__setitem__(name, value)

    def __getattr__(self, name: str) -> Any:
        if name in type(self)._fields:
            return self.get(name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in type(self)._fields:
            self[name] = value
        else:
            super().__setattr__(name, value)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in type(self)._fields:
            raise KeyError(f"{type(self).__name__} has no field {key!r}")
        if value is None:
            self.pop(key, None)
        else:
            super().__setitem__(key, value)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(key)
        return self.to_tuple()[key]

    def __reduce__(self):  # keep pickling simple: rebuild from the stored fields
        return (type(self), (), None, None, iter(self.items()))

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


class BaseModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None
    hidden_states: tuple[torch.Tensor, ...] | None
    attentions: tuple[torch.Tensor, ...] | None


class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: torch.Tensor | None
    pooler_output: torch.Tensor | None
    hidden_states: tuple[torch.Tensor, ...] | None
    attentions: tuple[torch.Tensor, ...] | None


class ImageClassifierOutput(ModelOutput):
    loss: torch.Tensor | None
    logits: torch.Tensor | None
    hidden_states: tuple[torch.Tensor, ...] | None
    attentions: tuple[torch.Tensor, ...] | None


def check_attn_implementation(name: str | None) -> str:
    """Validate an ``attn_implementation`` value; flash-attention needs CUDA and the flash-attn package."""
    name = name or "sdpa"
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation={name!r} is not supported; use one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    if name == "flash_attention_2":
        missing = []
        if not torch.cuda.is_available():
            missing.append("a CUDA device")
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            missing.append("the flash-attn package (pip install flash-attn --no-build-isolation)")
        if missing:
            raise ValueError(f"attn_implementation='flash_attention_2' needs {' and '.join(missing)}")
    return name


class PreTrainedModel(nn.Module):
    """Base of every model class: config handling, ``from_pretrained`` / ``save_pretrained``, device and dtype.

    Subclasses set ``config_class`` and, for towers, ``checkpoint_prefix``: the key prefix their weights carry
    inside a joint checkpoint (``vision_model.`` for ``SiglipVisionModel``).
    """

    config_class: ClassVar[type[BaseConfig]]
    checkpoint_prefix: ClassVar[str] = ""
    # Weights that may be absent from a checkpoint (task heads loaded from a base model): they keep a fresh
    # initialisation, and the load logs which ones.
    head_prefixes: ClassVar[tuple[str, ...]] = ()
    main_input_name: ClassVar[str] = "input_ids"
    # The module ``get_input_embeddings`` returns (transformers: token embeddings, or the patch embedding of
    # vision-only models), as a dotted path from the model.
    input_embeddings: ClassVar[str] = ""
    supports_gradient_checkpointing: ClassVar[bool] = True

    def __init__(self, config: BaseConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    # -- construction / weights ------------------------------------------------------------------------------
    def init_weights(self) -> None:
        """Initialise every parameter as transformers' ``_init_weights`` does (used when training from scratch).

        Skipped on the meta device, where ``from_pretrained`` builds the model before streaming in the weights: the
        init functions would be no-ops there, and on meta tensors they import torch._dynamo (seconds of start-up).
        """
        if any(p.is_meta for p in self.parameters()):
            return
        for module in self.modules():
            init = getattr(module, "reset_parameters_siglip", None)
            if init is not None:
                init()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | Checkpoint,
        *,
        config: BaseConfig | None = None,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        device_map: str | dict | None = None,
        attn_implementation: str | None = None,
        **kwargs: Any,
    ) -> PreTrainedModel:
        """Load weights from a local folder or a hub id (through the hub cache).

        Args:
            name_or_path: folder with ``config.json`` and weights, a hub repo id, or a resolved ``Checkpoint``.
            config: use this config instead of the folder's ``config.json``.
            dtype: None or "auto" keep the checkpoint's dtype (transformers 5 behaviour); a ``torch.dtype`` or its
                name casts floating weights to it.
            device / device_map: where the weights go ("cpu", "cuda", "cuda:1", "auto" = CUDA when available).
            attn_implementation: "sdpa" (default), "eager" or "flash_attention_2".
            kwargs: hub options (``revision``, ``cache_dir``, ``local_files_only``, ``token``), transformers'
                ``torch_dtype`` (= ``dtype``), ``use_safetensors``, ``output_loading_info``, ``quantization_config``,
                and config overrides such as ``num_labels`` or ``id2label``. transformers options that siglip does
                not implement (``max_memory``, ``offload_folder``, ...) are an error naming the alternative.
        """
        check_loading_options(kwargs)
        dtype = _dtype_argument(dtype, kwargs.pop("torch_dtype", None))
        output_loading_info = bool(kwargs.pop("output_loading_info", False))
        use_safetensors = kwargs.pop("use_safetensors", None)
        quantization_config = kwargs.pop("quantization_config", None)
        if quantization_config is not None:
            check_bitsandbytes(quantization_config)  # fail before reading any weights
        kwargs.pop("low_cpu_mem_usage", None)  # weights always stream into place
        checkpoint = Checkpoint.resolve(name_or_path, **split_hub_kwargs(kwargs))
        attn_implementation = check_attn_implementation(attn_implementation)
        target_device = resolve_device(device, device_map)
        if config is None:
            config, config_dict = cls._config_from(checkpoint, kwargs)
        else:
            config = config.replace(**kwargs) if kwargs else config
            config_dict = config.to_dict()
        config.name_or_path = checkpoint.name
        infos = checkpoint_tensors(checkpoint.folder, use_safetensors)
        target_dtype = resolve_dtype(dtype, config_dict, infos)

        with torch.device("meta"):
            model = cls(config)
        model.set_attn_implementation(attn_implementation)
        fresh = load_weights(
            model,
            checkpoint.folder,
            prefix=cls.checkpoint_prefix,
            optional_prefixes=cls.head_prefixes,
            dtype=target_dtype,
            device=target_device,
            infos=infos,
        )
        if fresh:
            model._materialize_fresh(fresh, target_dtype, target_device)
            logger.warning(
                "%s: %s not in the checkpoint; initialised from scratch (train before use)",
                cls.__name__,
                format_keys(fresh),
            )
        if quantization_config is not None:
            target = target_device if target_device.type == "cuda" else torch.device("cuda")
            model = apply_bitsandbytes(model, quantization_config, target)
        model.eval()
        if output_loading_info:  # transformers' report; a strict load leaves only freshly initialised heads to list
            info = {"missing_keys": sorted(fresh), "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
            return model, info
        return model

    @classmethod
    def _config_from(cls, checkpoint: Checkpoint, overrides: dict[str, Any]) -> tuple[BaseConfig, dict[str, Any]]:
        """The checkpoint's config for this class (a tower reads its part of a joint config), with overrides."""
        data = checkpoint.config_dict()
        config_class = cls.config_class
        model_type = data.get("model_type")
        accepted = {config_class.model_type, *config_class.parent_model_types}
        where = checkpoint.path(CONFIG_NAME)
        if model_type not in accepted:
            raise CheckpointError(
                f"{where} has model_type={model_type!r}, but {cls.__name__} needs "
                f"{' or '.join(repr(t) for t in sorted(accepted))}; load it with the matching class or siglip.AutoModel"
            )
        try:
            return config_class.from_dict(data, **overrides), data
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{where}: {e}") from None

    def _materialize_fresh(self, keys: list[str], dtype: torch.dtype | None, device: torch.device) -> None:
        """Give weights absent from the checkpoint (a new task head) real storage and their initial values."""
        for name in sorted({k.rsplit(".", 1)[0] for k in keys}):
            module = self.get_submodule(name)
            module.to_empty(device=device)
            if dtype is not None:
                module.to(dtype)
        self.reset_classifier()

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        state_dict: dict[str, torch.Tensor] | None = None,
        is_main_process: bool = True,
        safe_serialization: bool = True,
        max_shard_size: Any = None,
    ) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (loadable by transformers) into ``save_directory``.

        The keywords are transformers' (what PEFT, accelerate and Trainer pass): ``state_dict`` saves those tensors
        instead of the model's, ``is_main_process=False`` writes nothing (other ranks), ``max_shard_size`` is
        accepted and the weights stay in one file; only safetensors is written.
        """
        if not safe_serialization:
            raise ValueError("save_pretrained(safe_serialization=False): siglip writes safetensors only")
        save_directory = Path(save_directory)
        if not is_main_process:
            return save_directory
        save_directory.mkdir(parents=True, exist_ok=True)
        save_weights(state_dict or self.state_dict(), save_directory)
        self.save_config(save_directory)
        return save_directory

    def save_config(self, save_directory: str | os.PathLike) -> Path:
        """Write ``config.json``, naming the class (``architectures``) and the weight dtype, as transformers does."""
        self.config.extra.pop("torch_dtype", None)
        self.config.extra["architectures"] = [type(self).__name__]
        self.config.extra["dtype"] = str(self.dtype).replace("torch.", "")
        return self.config.save_pretrained(save_directory)

    # -- conveniences ----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.get_default_dtype()

    @property
    def name_or_path(self) -> str:
        """The folder or hub id the model was loaded from ("" when built in code), as ``config._name_or_path``."""
        return self.config.name_or_path

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Number of parameters; optionally only those that require grad, or without the ``nn.Embedding`` tables."""
        skip = set()
        if exclude_embeddings:
            skip = {f"{name}.weight" for name, m in self.named_modules() if isinstance(m, nn.Embedding)}
        return sum(
            p.numel()
            for name, p in self.named_parameters()
            if name not in skip and (p.requires_grad or not only_trainable)
        )

    # -- what training tools call (transformers' PreTrainedModel API) ------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        """The token embedding (text and joint models) or the patch embedding (vision models), as transformers."""
        return self.get_submodule(self.input_embeddings)

    def set_input_embeddings(self, value: nn.Module) -> None:
        parent, _, name = self.input_embeddings.rpartition(".")
        setattr(self.get_submodule(parent), name, value)

    def get_output_embeddings(self) -> None:
        """None: encoders have no output vocabulary projection (PEFT and transformers check for one)."""
        return None

    def enable_input_require_grads(self) -> None:
        """Make the input embeddings' outputs require grad, so that gradients reach adapters of a frozen model
        through reentrant checkpointing (as transformers' method of the same name)."""

        def make_output_require_grad(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            output.requires_grad_(True)

        self.disable_input_require_grads()
        self._require_grads_hooks = [self.get_input_embeddings().register_forward_hook(make_output_require_grad)]

    def disable_input_require_grads(self) -> None:
        for hook in self.__dict__.pop("_require_grads_hooks", []):
            hook.remove()

    def activation_checkpointing_enable(
        self,
        activation_checkpointing_kwargs: dict[str, Any] | None = None,
        every_n_layers: int = 1,
        offload: bool = False,
    ) -> None:
        """Recompute encoder layers in backward to save activation memory during training (transformers' API).

        Args:
            activation_checkpointing_kwargs: passed to ``torch.utils.checkpoint.checkpoint`` (default
                ``{"use_reentrant": False}``, as transformers).
            every_n_layers: checkpoint every n-th layer of each encoder only.
            offload: keep the saved activations in pinned host memory (CUDA only; a no-op on CPU).
        """
        if isinstance(every_n_layers, bool) or not isinstance(every_n_layers, int) or every_n_layers < 1:
            raise ValueError(f"every_n_layers must be a positive integer, got {every_n_layers!r}")
        options = dict(activation_checkpointing_kwargs or {"use_reentrant": False})
        for module in self.modules():
            if hasattr(module, "set_checkpointing"):  # the encoders
                module.set_checkpointing(True, options, every_n_layers, offload)
        if self.main_input_name == "input_ids":  # reentrant checkpoints need inputs that require grad
            self.enable_input_require_grads()

    def activation_checkpointing_disable(self) -> None:
        for module in self.modules():
            if hasattr(module, "set_checkpointing"):
                module.set_checkpointing(False)
        self.disable_input_require_grads()

    @property
    def is_activation_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    def gradient_checkpointing_enable(
        self,
        gradient_checkpointing_kwargs: dict[str, Any] | None = None,
        every_n_layers: int = 1,
        offload: bool = False,
    ) -> None:
        """transformers' older name for ``activation_checkpointing_enable``."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, every_n_layers, offload)

    def gradient_checkpointing_disable(self) -> None:
        self.activation_checkpointing_disable()

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.is_activation_checkpointing

    @property
    def attn_implementation(self) -> str:
        for module in self.modules():
            if hasattr(module, "_attn_implementation"):
                return module._attn_implementation
        return "sdpa"

    def set_attn_implementation(self, name: str) -> None:
        """Switch every attention layer to "sdpa", "eager" or "flash_attention_2"."""
        name = check_attn_implementation(name)
        for module in self.modules():
            if hasattr(module, "_attn_implementation"):
                module._attn_implementation = name


# transformers ``from_pretrained`` options this loader does not implement, and what to do instead. They fail
# loudly: passed on as config overrides (transformers' rule for unknown keywords) they would be ignored silently.
UNSUPPORTED_LOADING_OPTIONS = {
    "max_memory": "siglip places the whole model on one device (device= or device_map=)",
    "offload_folder": "siglip does not offload weights to disk; load on one device",
    "offload_state_dict": "siglip does not offload weights; it streams them into place",
    "offload_buffers": "siglip does not offload weights; load on one device",
    "ignore_mismatched_sizes": "loading is strict; resize the checkpoint's tensors or change the config",
    "load_in_8bit": "pass quantization_config=siglip.BitsAndBytesConfig(load_in_8bit=True)",
    "load_in_4bit": "pass quantization_config=siglip.BitsAndBytesConfig(load_in_4bit=True)",
    "state_dict": "save the weights with save_pretrained and load that folder",
    "from_tf": "only PyTorch checkpoints (safetensors or pytorch_model.bin) are read",
    "from_flax": "only PyTorch checkpoints (safetensors or pytorch_model.bin) are read",
    "gguf_file": "only safetensors / pytorch_model.bin checkpoints are read",
    "variant": "only the default weight file names are read (model.safetensors, its index, pytorch_model.bin)",
    "tp_plan": "tensor parallelism is not implemented; use siglip train (DDP / FSDP) for multi-GPU training",
    "tp_size": "tensor parallelism is not implemented",
    "device_mesh": "tensor parallelism is not implemented",
    "key_mapping": "checkpoint names must be the hub names; convert the checkpoint first",
    "adapter_name": "load the adapter with peft (PeftModel.from_pretrained(model, adapter_folder))",
    "adapter_kwargs": "load the adapter with peft (PeftModel.from_pretrained(model, adapter_folder))",
    "proxies": "set HTTPS_PROXY in the environment (huggingface_hub honours it)",
    "weights_only": "weights are always read without unpickling code (weights_only=True)",
    "use_kernels": "hub kernels are not used; siglip.optimize(model) is the inference fast path",
    "kernel_config": "hub kernels are not used; siglip.optimize(model) is the inference fast path",
}


def check_loading_options(kwargs: dict[str, Any]) -> None:
    """Refuse transformers loading options we don't implement, naming each and the alternative."""
    given = [name for name in kwargs if name in UNSUPPORTED_LOADING_OPTIONS]
    if given:
        reasons = "; ".join(f"{name}: {UNSUPPORTED_LOADING_OPTIONS[name]}" for name in given)
        raise ValueError(f"from_pretrained() option(s) not supported by siglip: {reasons}")


def _dtype_argument(dtype: Any, torch_dtype: Any) -> Any:
    """``torch_dtype`` is the name transformers still accepts for ``dtype``."""
    if torch_dtype is None:
        return dtype
    if dtype is not None and dtype != torch_dtype:
        raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass dtype only")
    return torch_dtype
