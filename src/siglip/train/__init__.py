"""``siglip train``: contrastive (sigmoid loss) and classification fine-tuning, on one process or many.

This package owns the training side of siglip and is never imported by ``import siglip`` nor by inference code.
The ``siglip`` command imports only ``cli`` (the argument parser); nothing heavy loads until a run starts:

* ``config``: ``TrainConfig``, every option typed, and ``TrainError``;
* ``cli``: the ``siglip train`` / ``python -m siglip.train`` argument parser;
* ``trainer``: process groups, DDP / FSDP, the optimisation loop, logging, checkpoints and ``--resume``;
* ``data``: caption folders, CSV / JSONL pair lists and class folders, the bad-image scan, the rank sharding;
* ``hf_trainer``: ``SaveConfigCallback``, for models trained with ``transformers.Trainer`` instead.

Launch with ``siglip train ...``, ``python -m siglip.train ...`` or ``torchrun --nproc_per_node N -m siglip.train
...`` (one process per GPU; gloo on CPU, NCCL on GPU), or from Python with ``siglip.train.train(TrainConfig(...))``.
"""

from __future__ import annotations

from pathlib import Path

from .cli import main
from .config import TrainConfig, TrainError

__all__ = ["TrainConfig", "TrainError", "main", "train"]


def train(config: TrainConfig) -> Path | None:
    """Run a training job; returns the last checkpoint folder (None on ranks other than 0 where nothing is saved)."""
    from .trainer import train as run

    return run(config)
