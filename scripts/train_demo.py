"""Rebuild the bundled demo model ``siglip-demo`` (src/siglip/assets/demo/) from nothing, on CPU (about half an hour).

1. Generate the synthetic shapes set (``scripts/shapes.py``): one coloured shape per image, captions such as
   "a small blue triangle on the left"; the colour–shape pairs in ``shapes.HELD_OUT_PAIRS`` are never drawn.
2. Train a SentencePiece tokenizer on the training captions (the SigLIP layout: pad 0, ``</s>`` 1, ``<unk>`` 2).
3. Train a tiny SigLIP from scratch with ``siglip train`` (the same code path as the command).
4. Evaluate zero-shot top-1 through ``siglip.pipeline`` with the 30 labels "red circle" ... and the template
   "a {}": on fresh images of the training pairs and on images of the held-out pairs (``shapes.zero_shot_accuracy``).
5. Write the model, tokenizer and preprocessor files to the assets folder, a model card with the numbers, and the
   example image ``assets/examples/red_circle.png``.

Usage: ``python scripts/train_demo.py`` (defaults reproduce the shipped model, in about 28 minutes on 2 CPU cores:
150 s to draw the 100000 images, 1490 s to train, the rest to evaluate; ``--workdir`` keeps the data and
checkpoints, ``--assets`` writes somewhere else than the package).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from siglip import pipeline
from siglip.config import SiglipConfig
from siglip.image_processing import SiglipImageProcessor
from siglip.train import main as train_main

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes  # noqa: E402 - scripts/shapes.py, beside this file

ASSETS = Path(__file__).resolve().parents[1] / "src" / "siglip" / "assets"
IMAGE_SIZE = 64
TEXT_LENGTH = 24  # the longest caption is 17 tokens
TRAIN_SEED = 0
EVAL_IMAGES = shapes.DEMO_EVAL_IMAGES
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "spiece.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
)


def write_initial_folder(folder: Path, captions: list[str], args: argparse.Namespace) -> None:
    """config.json + tokenizer + preprocessor: what ``siglip train --from-scratch --model`` starts from."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = shapes.train_tokenizer(captions, folder, args.vocab_size, TEXT_LENGTH)
    width, mlp = args.width, 4 * args.width
    config = SiglipConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=mlp,
            num_hidden_layers=args.text_layers,
            num_attention_heads=args.heads,
            max_position_embeddings=TEXT_LENGTH,
            pad_token_id=1,
            eos_token_id=1,
            bos_token_id=None,
        ),
        vision_config=dict(
            hidden_size=width,
            intermediate_size=mlp,
            num_hidden_layers=args.vision_layers,
            num_attention_heads=args.heads,
            image_size=IMAGE_SIZE,
            patch_size=args.patch_size,
        ),
    )
    config.save_pretrained(folder)
    SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)


def example_image() -> Image.Image:
    """A medium red circle in the middle of a white 128 px image: the README's example."""
    rng = random.Random(0)
    while True:  # draw until the random size / position / background are the ones we want
        image, words = shapes.draw("red", "circle", rng, image_size=128)
        if words == {"size": "", "position": "in the middle", "background": "white"}:
            return image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="keep data and checkpoints here (default: a temporary folder)")
    parser.add_argument(
        "--assets", type=Path, default=ASSETS, help="where demo/ and examples/ go (default: the package)"
    )
    parser.add_argument(
        "--num-train",
        type=int,
        default=100000,
        help="training images (20000 overfits: 97%% top-1 on them, 92%% on fresh ones)",
    )
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--patch-size", type=int, default=16, help="16: a 4 x 4 grid, 4x cheaper than 8 and as good")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vision-layers", type=int, default=4)
    parser.add_argument("--text-layers", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=160)
    parser.add_argument(
        "--init-temperature",
        type=float,
        default=10.0,
        help="exp(logit_scale) at the start (big_vision's 10; the model climbs past 25 on its own)",
    )
    parser.add_argument(
        "--init-bias",
        type=float,
        default=-5.0,
        help="about -log(batch size): big_vision's -10 suits batches of thousands and learns slower here",
    )
    parser.add_argument("--num-workers", type=int, default=1)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="siglip-demo-"))
    torch.manual_seed(0)

    started = time.perf_counter()
    data = work / "data"
    if not data.is_dir():
        shapes.write_captioned_folder(data, args.num_train, TRAIN_SEED, shapes.TRAIN_PAIRS, IMAGE_SIZE)
    captions = [p.read_text(encoding="utf-8").strip() for p in sorted(data.glob("*.txt"))]
    generated = time.perf_counter()
    write_initial_folder(work / "init", captions, args)
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    options = (
        f"--from-scratch --max-steps {args.steps} --batch-size {args.batch_size} --lr {args.lr} --weight-decay 1e-4 "
        f"--warmup-steps {args.steps // 40} --save-every {args.steps} --init-temperature {args.init_temperature} "
        f"--init-bias {args.init_bias} --num-workers {args.num_workers} --log-every 50"
    )
    code = train_main(["--data", str(data), "--model", str(work / "init"), "--output", str(run), *options.split()])
    if code:
        return code
    trained = time.perf_counter()
    checkpoint = run / f"checkpoint-{args.steps:07d}"

    classify = pipeline("zero-shot-image-classification", model=str(checkpoint), batch_size=50)
    seen = shapes.zero_shot_accuracy(classify, shapes.TRAIN_PAIRS, shapes.EVAL_SEED, EVAL_IMAGES, IMAGE_SIZE)
    held_out = shapes.zero_shot_accuracy(
        classify, shapes.HELD_OUT_PAIRS, shapes.HELD_OUT_EVAL_SEED, EVAL_IMAGES, IMAGE_SIZE
    )
    results = {
        "zero_shot_top1_seen_pairs": seen,
        "zero_shot_top1_held_out_pairs": held_out,
        "eval_images": EVAL_IMAGES,
        "labels": len(shapes.ALL_PAIRS),
        "template": shapes.DEMO_TEMPLATE,
        "train_images": args.num_train,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "data_generation_s": round(generated - started, 1),
        "training_s": round(trained - generated, 1),
        "cpu_threads": torch.get_num_threads(),
    }
    print(json.dumps(results, indent=2))

    demo = args.assets / "demo"
    shutil.rmtree(demo, ignore_errors=True)
    demo.mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copyfile(checkpoint / name, demo / name)
    write_model_card(demo, results, args)
    examples = args.assets / "examples"
    examples.mkdir(parents=True, exist_ok=True)
    example_image().save(examples / "red_circle.png", optimize=True)
    size = sum(p.stat().st_size for p in demo.iterdir()) / 1e6
    print(f"wrote {demo} ({size:.1f} MB) and {examples / 'red_circle.png'}", file=sys.stderr)
    return 0


def write_model_card(folder: Path, results: dict, args: argparse.Namespace) -> None:
    held = ", ".join(shapes.label(c, s) for c, s in shapes.HELD_OUT_PAIRS)
    size = f"{args.vision_layers}+{args.text_layers} layers, width {args.width}, {IMAGE_SIZE} px images"
    seen, held_out = results["zero_shot_top1_seen_pairs"], results["zero_shot_top1_held_out_pairs"]
    text = f"""# siglip-demo

A tiny SigLIP ({size}, patch {args.patch_size},
{TEXT_LENGTH}-token texts) trained from scratch by `scripts/train_demo.py` on {args.num_train} synthetic images of
one coloured shape each (6 colours x 5 shapes, varying size, position and background) with captions such as
"a small blue triangle on the left". Its SentencePiece tokenizer was trained on those captions. It knows nothing
else: use it to try the package offline, not for real photos.

Zero-shot top-1 over the 30 labels "red circle" ... "purple cross" with the template "{shapes.DEMO_TEMPLATE}":

| images | top-1 |
|---|---|
| {results["eval_images"]} fresh images of the 25 training colour-shape pairs | {seen:.1%} |
| {results["eval_images"]} images of the 5 pairs never seen in training ({held}) | {held_out:.1%} |

Training: {results["steps"]} steps of batch {results["batch_size"]} ({results["training_s"]:.0f} s on
{results["cpu_threads"]} CPU threads). Loadable by siglip (`--model siglip-demo`) and by transformers.
"""
    (folder / "README.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
