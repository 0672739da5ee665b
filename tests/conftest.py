"""Shared fixtures: random-weight checkpoints written by transformers (the reference oracle).

transformers is a test-only dependency; these helpers are the only place tests build reference models from
plain dicts, so every test compares against checkpoints in the exact format the hub stores.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import shapes  # noqa: E402,F401 - scripts/shapes.py: the synthetic shapes set the demo model is built from

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


# Small configs with the awkward cases the issue lists: head counts that are not powers of two,
# projection_size != hidden_size, image_size not a multiple of patch_size, text shorter than the position table.
TINY_TEXT = dict(
    vocab_size=103,
    hidden_size=36,
    intermediate_size=50,
    num_hidden_layers=2,
    num_attention_heads=3,
    max_position_embeddings=16,
    projection_size=48,
)
TINY_VISION = dict(
    hidden_size=48,
    intermediate_size=70,
    num_hidden_layers=2,
    num_attention_heads=3,
    image_size=30,
    patch_size=8,
)


def build_hf_model(kind: str, text: dict | None = None, vision: dict | None = None, seed: int = 0, **top):
    """A transformers model with random weights (biases, scale and bias non-zero so nothing hides behind 0)."""
    _quiet_transformers()
    import transformers

    torch.manual_seed(seed)
    text = {**TINY_TEXT, **(text or {})}
    vision = {**TINY_VISION, **(vision or {})}
    if kind == "text":
        model = transformers.SiglipTextModel(transformers.SiglipTextConfig(**text))
    elif kind == "vision":
        model = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**vision))
    else:
        config = transformers.SiglipConfig(text_config=text, vision_config=vision, **top)
        model = getattr(transformers, kind)(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or name in ("logit_scale", "logit_bias") or "probe" in name:
                p.normal_(0.0, 0.5)
    return model.eval()


def save_hf(model, folder: Path) -> Path:
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def siglip_checkpoint(tmp_path_factory) -> Path:
    """A small SigLIP joint checkpoint written by transformers."""
    return save_hf(build_hf_model("SiglipModel"), tmp_path_factory.mktemp("siglip_tiny"))


def assert_close(ours: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-5, what: str = "") -> None:
    """Agreement to ``rtol`` relative to the reference's scale (max |ref|), the issue's parity criterion."""
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    ours, ref = ours.detach().float(), ref.detach().float()
    scale = ref.abs().max().clamp_min(1e-12)
    err = ((ours - ref).abs().max() / scale).item()
    assert err <= rtol, f"{what}: max relative error {err:.3g} > {rtol}"


@pytest.fixture(scope="session")
def classifier_run(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, class folders): a SigLIP classifier from ``siglip train --task classification`` (two steps on
    32 px shapes classified by colour), and the ``root/<colour>/`` tree it was trained on."""
    from siglip.train import main as train_main

    from builders import write_checkpoint

    root = tmp_path_factory.mktemp("classifier")
    base = write_checkpoint(root / "base", "siglip", seed=3)
    data = shapes.write_class_folders(root / "data", 24, seed=0, image_size=32)
    options = ["--max-steps", "2", "--batch-size", "8", "--num-workers", "0", "-q"]
    args = ["--task", "classification", "--data", str(data), "--model", str(base), "--output", str(root / "run")]
    assert train_main([*args, *options]) == 0
    return root / "run" / "checkpoint-0000002", data


@pytest.fixture(scope="session")
def ray_address() -> str:
    """One local Ray cluster (2 CPUs) for every Ray test of the session; yields its address."""
    import logging

    import ray  # the test extra installs ray[data]: a missing one fails these tests, never skips them
    import ray.data

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
