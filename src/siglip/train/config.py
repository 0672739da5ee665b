"""``TrainConfig``: every option of a training run, typed, with the defaults of ``siglip train``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..data import default_workers


class TrainError(ValueError):
    """Bad training input or options: printed as one line ``siglip: error: ...``, exit code 1."""


@dataclass
class TrainConfig:
    """What ``siglip train`` runs; the field names are the flags' (``--batch-size`` is ``batch_size``)."""

    data: str  # folder of images + .txt captions, a .csv / .jsonl of image,caption, or root/<class>/ folders
    model: str  # base checkpoint: folder, hub id or "siglip-demo" (its tokenizer and image processor are used)
    output: str  # folder for checkpoints and logs
    task: str = "contrastive"  # or "classification"
    from_scratch: bool = False  # random weights with the model's config instead of its weights
    init_temperature: float | None = None  # with from_scratch: initial exp(logit_scale) (None: 10, big_vision's)
    init_bias: float | None = None  # with from_scratch: initial logit_bias (None: -10, big_vision's)
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; overrides epochs
    batch_size: int = 32  # per process and micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-5  # peak AdamW learning rate
    weight_decay: float = 1e-4  # on matrices only
    warmup_steps: int | None = None  # None: 5% of the steps
    max_grad_norm: float = 1.0  # 0 = measure only
    bf16: bool = False  # bfloat16 autocast for the towers (weights stay fp32)
    seed: int = 0
    fsdp: bool = False  # shard weights, gradients and optimizer state (FSDP2) instead of DDP
    device: str = "auto"  # auto: CUDA when available, else CPU
    save_every: int = 1000
    resume: bool = False
    log_every: int = 10
    num_workers: int = field(default_factory=default_workers)  # decoding processes per training process
    quiet: bool = False

    @classmethod
    def from_namespace(cls, args: Any) -> TrainConfig:
        """The config of parsed ``siglip train`` arguments (other attributes, such as the subcommand, ignored)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})

    def validate(self) -> TrainConfig:
        """Raise a TrainError naming the flag for a value no run can use; returns the config."""
        for name in ("batch_size", "grad_accum", "epochs", "max_steps", "save_every", "log_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.task not in ("contrastive", "classification"):
            raise TrainError(f"--task must be 'contrastive' or 'classification', got {self.task!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise TrainError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.num_workers < 0:
            raise TrainError(f"--num-workers must be >= 0, got {self.num_workers}")
        if not self.from_scratch and (self.init_temperature is not None or self.init_bias is not None):
            raise TrainError("--init-temperature and --init-bias set up new weights: they need --from-scratch")
        if self.init_temperature is not None and self.init_temperature <= 0:
            raise TrainError(f"--init-temperature must be positive, got {self.init_temperature}")
        return self


DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
