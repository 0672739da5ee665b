"""Opt-in ``torch.compile`` for inference: the encoders of both towers, with inductor weight freezing.

On CPU, inductor with ``freezing`` prepacks the weights for oneDNN and fuses bias, GELU and residual adds into the
matmuls, which removes most of the non-matmul time of eager mode (see benchmarks/RESULTS.md). Compilation takes
tens of seconds on a small machine, so it pays off for long jobs (``siglip embed`` on a large folder), not for a
single image. Frozen weights are constants of the compiled graph: compile after loading, for inference only.
"""

from __future__ import annotations

from torch import nn


def compile_model(model: nn.Module, *, freeze: bool = True, dynamic: bool | None = None) -> nn.Module:
    """Compile every encoder of ``model`` in place (``nn.Module.compile``) and return the model.

    Args:
        model: a loaded SigLIP / SigLIP2 model (a joint model, a tower or a classifier), in eval mode.
        freeze: turn on inductor's weight freezing (a process-wide inductor setting; inference only).
        dynamic: passed to ``torch.compile``; None lets it specialise on the first shapes and relax on change.
    """
    if model.training:
        raise ValueError("compile_model is for inference: call model.eval() first (frozen weights can't train)")
    if freeze:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    encoders = [m for m in model.modules() if type(m).__name__ == "SiglipEncoder"]
    if not encoders:
        raise ValueError(f"{type(model).__name__} has no SigLIP encoder to compile")
    for encoder in encoders:
        encoder.compile(dynamic=dynamic)
    return model


__all__ = ["compile_model"]
