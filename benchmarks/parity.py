"""Largest relative differences between siglip and transformers on random-weight checkpoints, printed per case.

    python benchmarks/parity.py

Builds small SigLIP and SigLIP2 (NaFlex) checkpoints with transformers (tests/builders.py), runs both libraries
on the same processor outputs (three images of different sizes, three texts) with eager and sdpa attention in fp32
and bf16, and prints max |ours - ref| / max |ref| over logits and embeddings, and over the vision hidden states.
The test suite asserts the bounds (1e-5 fp32, 2e-2 bf16); this prints the values for reports.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import siglip  # noqa: E402

from builders import write_checkpoint  # noqa: E402


def relative(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.float() - ref.float()).abs().max() / ref.float().abs().max())


def main() -> int:
    import transformers

    transformers.logging.set_verbosity_error()
    workdir = Path(tempfile.mkdtemp(prefix="siglip-parity-"))
    images = [
        Image.fromarray(np.random.RandomState(i).randint(0, 255, (40 + 13 * i, 70 - 9 * i, 3), dtype=np.uint8))
        for i in range(3)
    ]
    texts = ["a cat", "two dogs on a beach", "x"]
    for family in ("siglip", "siglip2"):
        folder = write_checkpoint(workdir / family, family)
        inputs = siglip.AutoProcessor.from_pretrained(folder)(
            text=texts, images=images, padding="max_length", return_tensors="pt"
        )
        for implementation in ("eager", "sdpa"):
            for dtype in (torch.float32, torch.bfloat16):
                kwargs = dict(attn_implementation=implementation, dtype=dtype)
                ours = siglip.AutoModel.from_pretrained(folder, **kwargs)
                ref = transformers.AutoModel.from_pretrained(folder, **kwargs).eval()
                with torch.no_grad():
                    a = ours(**inputs.to(dtype), output_hidden_states=True)
                    b = ref(**inputs.to(dtype), output_hidden_states=True)
                outputs = max(relative(a[k], b[k]) for k in ("logits_per_image", "text_embeds", "image_embeds"))
                hidden = max(
                    relative(x, y)
                    for x, y in zip(
                        a.vision_model_output.hidden_states, b.vision_model_output.hidden_states, strict=True
                    )
                )
                print(
                    f"{family:8} {implementation:5} {str(dtype)[6:]:9} outputs {outputs:.2e}  "
                    f"vision hidden states {hidden:.2e}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
