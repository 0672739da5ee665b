"""``SaveConfigCallback``: makes ``transformers.Trainer`` checkpoints of siglip models reload with ``from_pretrained``.

Trainer writes ``config.json`` only for transformers' own ``PreTrainedModel`` subclasses; for any other module it
saves the state dict alone, so ``checkpoint-N/`` would hold ``model.safetensors`` without the config that says
what it is. This callback writes the model's ``config.json`` beside it at every save, and into ``output_dir`` at the
end of training (where ``trainer.save_model()`` puts the final weights). It subclasses nothing: Trainer calls
callbacks by event name, so transformers is not imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..modeling_utils import PreTrainedModel


class SaveConfigCallback:
    """``transformers.Trainer(..., callbacks=[siglip.SaveConfigCallback()])``."""

    def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if isinstance(model, PreTrainedModel) and folder.is_dir() and state.is_world_process_zero:
            model.save_config(folder)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if isinstance(model, PreTrainedModel) and state.is_world_process_zero:
            model.save_config(args.output_dir)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):  # every other Trainer event: nothing to do
            return _ignore
        raise AttributeError(name)


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None
