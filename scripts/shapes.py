"""The synthetic image–caption set the bundled demo model (``siglip-demo``) is trained and tested on.

Each image is one coloured shape on a plain background; colour, shape, size, position and background vary, and the
caption names some of them ("a small blue triangle on the left", "this is a photo of a red circle"). Some
colour–shape pairs (``HELD_OUT_PAIRS``) never occur in training, so the demo can report compositional
generalisation on them. Everything is drawn with PIL from a ``random.Random`` seeded by the caller, so a seed
reproduces the same images on any machine.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 0),
    "yellow": (240, 220, 20),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "purple": (140, 40, 190),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (15, 15, 15),
}
# Never drawn for training: one pair per shape, each with a different colour, so every colour and every shape is
# still seen in training, just not in these combinations.
HELD_OUT_PAIRS = (("red", "star"), ("orange", "cross"), ("yellow", "circle"), ("green", "square"), ("blue", "triangle"))
ALL_PAIRS = tuple((c, s) for c in COLOURS for s in SHAPES)
TRAIN_PAIRS = tuple(p for p in ALL_PAIRS if p not in HELD_OUT_PAIRS)

# Shape radius as a fraction of the image side, and the caption word of each size.
SIZES = {"small": (0.13, 0.18), "": (0.2, 0.26), "large": (0.3, 0.37)}
POSITIONS = {
    "on the left": (0.3, 0.5),
    "on the right": (0.7, 0.5),
    "at the top": (0.5, 0.3),
    "at the bottom": (0.5, 0.7),
    "in the middle": (0.5, 0.5),
}
PREFIXES = ("a ", "a photo of a ", "this is a photo of ", "this is a photo of a ", "an image of a ", "")
_SUPERSAMPLE = 4  # drawn at 4x and downsampled: anti-aliased edges, like real photos of shapes

# How the demo model is evaluated (scripts/train_demo.py reports these numbers, tests/test_train.py checks them):
# zero-shot top-1 over all 30 labels with this template, on fresh images of the training pairs and of the held-out
# pairs drawn with these seeds (the training images use seed 0).
DEMO_TEMPLATE = "a {}"
EVAL_SEED, HELD_OUT_EVAL_SEED = 2026, 2027
DEMO_EVAL_IMAGES = 200


def label(colour: str, shape: str) -> str:
    """The zero-shot label of a pair, as the README and the tests use it: "red circle" (template "a {}")."""
    return f"{colour} {shape}"


@dataclass(frozen=True)
class Sample:
    """One generated image with its caption and the pair it shows."""

    image: Image.Image
    caption: str
    colour: str
    shape: str


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, ...]:
    return tuple(min(255, max(0, v + rng.randint(-amount, amount))) for v in rgb)


def _polygon(shape: str, cx: float, cy: float, r: float, turn: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape of "radius" ``r`` centred at (cx, cy), rotated by ``turn`` radians."""
    if shape == "square":
        points = [(math.pi / 4 + k * math.pi / 2, r) for k in range(4)]
    elif shape == "triangle":
        points = [(-math.pi / 2 + k * 2 * math.pi / 3, r) for k in range(3)]
    elif shape == "star":
        points = [(-math.pi / 2 + k * math.pi / 5, r if k % 2 == 0 else 0.45 * r) for k in range(10)]
    elif shape == "cross":
        w = 0.36 * r  # half the arm width
        corners = [
            (w, r),
            (w, w),
            (r, w),
            (r, -w),
            (w, -w),
            (w, -r),
            (-w, -r),
            (-w, -w),
            (-r, -w),
            (-r, w),
            (-w, w),
            (-w, r),
        ]
        points = [(math.atan2(y, x), math.hypot(x, y)) for x, y in corners]
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    return [(cx + d * math.cos(a + turn), cy + d * math.sin(a + turn)) for a, d in points]


def draw(colour: str, shape: str, rng: random.Random, image_size: int = 64) -> tuple[Image.Image, dict[str, str]]:
    """Draw one shape with random size, position, background and small colour / angle jitter.

    Returns the RGB image and the caption words chosen for it: {"size", "position", "background"}.
    """
    size = rng.choice(list(SIZES))
    position = rng.choice(list(POSITIONS))
    background = rng.choice(list(BACKGROUNDS))
    side = image_size * _SUPERSAMPLE
    r = rng.uniform(*SIZES[size]) * side
    px, py = POSITIONS[position]
    # jitter the centre but keep the whole shape inside the image
    cx = min(max(px * side + rng.uniform(-0.06, 0.06) * side, r + 1), side - r - 1)
    cy = min(max(py * side + rng.uniform(-0.06, 0.06) * side, r + 1), side - r - 1)
    canvas = Image.new("RGB", (side, side), _jitter(BACKGROUNDS[background], rng, 12))
    pen = ImageDraw.Draw(canvas)
    fill = _jitter(COLOURS[colour], rng, 20)
    if shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        pen.polygon(_polygon(shape, cx, cy, r, rng.uniform(-0.15, 0.15)), fill=fill)
    image = canvas.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return image, {"size": size, "position": position, "background": background}


def caption(colour: str, shape: str, words: dict[str, str], rng: random.Random) -> str:
    """A caption naming the shape, usually its colour, and randomly some of size, position and background.

    Some captions leave the colour out ("a large star"): without them colour alone matches most pairs, and a tiny
    model learns colour long before it starts telling shapes apart.
    """
    size = f"{words['size']} " if words["size"] and rng.random() < 0.7 else ""
    name = shape if rng.random() < 0.5 else f"{colour} {shape}"
    text = f"{rng.choice(PREFIXES)}{size}{name}"
    if rng.random() < 0.5 and words["size"] != "large":  # a large shape is pushed off its nominal position
        text += f" {words['position']}"
    if rng.random() < 0.3:
        text += f" on a {words['background']} background"
    return text


def samples(
    n: int, seed: int, pairs: Sequence[tuple[str, str]] = TRAIN_PAIRS, image_size: int = 64
) -> Iterator[Sample]:
    """``n`` samples whose pairs are drawn uniformly from ``pairs``; the same seed gives the same samples."""
    rng = random.Random(seed)
    for _ in range(n):
        colour, shape = rng.choice(list(pairs))
        image, words = draw(colour, shape, rng, image_size)
        yield Sample(image, caption(colour, shape, words, rng), colour, shape)


def zero_shot_accuracy(
    classify: Any, pairs: Sequence[tuple[str, str]], seed: int, n: int, image_size: int = 64
) -> float:
    """Top-1 of a zero-shot pipeline over all 30 labels on ``n`` fresh images of ``pairs`` (the demo's metric)."""
    labels = [label(c, s) for c, s in ALL_PAIRS]
    batch = list(samples(n, seed, pairs, image_size))
    results = classify([s.image for s in batch], candidate_labels=labels, hypothesis_template=DEMO_TEMPLATE)
    return sum(r[0]["label"] == label(s.colour, s.shape) for r, s in zip(results, batch, strict=True)) / n


def write_captioned_folder(
    folder: str | Path, n: int, seed: int, pairs: Sequence[tuple[str, str]] = TRAIN_PAIRS, image_size: int = 64
) -> Path:
    """``folder/000000.png`` + ``folder/000000.txt`` (the caption) ... : the folder layout ``siglip train`` reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, sample in enumerate(samples(n, seed, pairs, image_size)):
        sample.image.save(folder / f"{i:06d}.png")
        (folder / f"{i:06d}.txt").write_text(sample.caption + "\n", encoding="utf-8")
    return folder


def write_csv(
    path: str | Path, n: int, seed: int, pairs: Sequence[tuple[str, str]] = TRAIN_PAIRS, image_size: int = 64
) -> Path:
    """``path`` (columns image, caption) with the images in ``images/`` next to it, paths relative to the CSV."""
    path = Path(path)
    (path.parent / "images").mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for i, sample in enumerate(samples(n, seed, pairs, image_size)):
            name = f"images/{i:06d}.png"
            sample.image.save(path.parent / name)
            writer.writerow([name, sample.caption])
    return path


def write_class_folders(root: str | Path, n: int, seed: int, image_size: int = 64) -> Path:
    """``root/<colour>/NNNNNN.png``: an image-folder tree classified by colour (any shape), for classification."""
    root = Path(root)
    for i, sample in enumerate(samples(n, seed, ALL_PAIRS, image_size)):
        (root / sample.colour).mkdir(parents=True, exist_ok=True)
        sample.image.save(root / sample.colour / f"{i:06d}.png")
    return root


def write_label_folders(
    root: str | Path, n: int, seed: int, pairs: Sequence[tuple[str, str]] = TRAIN_PAIRS, image_size: int = 64
) -> Path:
    """``root/<label>/NNNNNN.png`` ("red circle/000003.png"): the images ``zero_shot_accuracy`` scores (the same
    ``n``, ``seed`` and ``pairs`` draw the same images), as an image-folder tree for ``siglip eval zero-shot``.

    Every one of the 30 labels gets a folder, empty when ``pairs`` leaves it out, so that the evaluation chooses
    among all 30 labels as the demo's metric does.
    """
    root = Path(root)
    for colour, shape in ALL_PAIRS:
        (root / label(colour, shape)).mkdir(parents=True, exist_ok=True)
    for i, sample in enumerate(samples(n, seed, pairs, image_size)):
        sample.image.save(root / label(sample.colour, sample.shape) / f"{i:06d}.png")
    return root


def write_demo_eval_folders(root: str | Path) -> dict[str, Path]:
    """The demo model's two evaluation sets as image-folder trees: ``root/seen`` (200 fresh images of the training
    pairs) and ``root/held-out`` (200 images of the held-out pairs), the images the README's accuracies are
    measured on (``siglip eval zero-shot root/seen --model siglip-demo --template "a {}"``)."""
    root = Path(root)
    return {
        "seen": write_label_folders(root / "seen", DEMO_EVAL_IMAGES, EVAL_SEED, TRAIN_PAIRS),
        "held-out": write_label_folders(root / "held-out", DEMO_EVAL_IMAGES, HELD_OUT_EVAL_SEED, HELD_OUT_PAIRS),
    }


def train_tokenizer(
    captions: Sequence[str], folder: str | Path, vocab_size: int = 160, model_max_length: int = 24
) -> Any:
    """Train a SentencePiece BPE model on ``captions`` and save it as a ``SiglipTokenizer`` folder; returns it.

    The SigLIP id layout (pad 0, ``</s>`` 1, ``<unk>`` 2, no bos), trained on the canonicalised text the tokenizer
    feeds SentencePiece. BPE rather than unigram: on captions this repetitive, unigram training stops at ~56
    pieces and spells most words letter by letter, while BPE gives every caption word its own piece.
    """
    import sentencepiece as spm

    from siglip.tokenization import SiglipTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(c.lower() for c in captions) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "spiece"),
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    corpus.unlink()
    (folder / "spiece.vocab").unlink()
    # No attention mask, as the official SigLIP tokenizers: the model is trained (and used) on max-length padded
    # ids alone, pads attended (transformers #39269); a mask would change the text embeddings it learns.
    tokenizer = SiglipTokenizer(
        folder / "spiece.model", model_max_length=model_max_length, model_input_names=["input_ids"]
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write the demo model's evaluation sets as class folders.")
    parser.add_argument("root", help="writes ROOT/seen/<label>/*.png and ROOT/held-out/<label>/*.png")
    for name, folder in write_demo_eval_folders(parser.parse_args().root).items():
        print(f"{name}: {folder}")
