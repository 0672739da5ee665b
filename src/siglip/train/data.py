"""Training inputs: reading (image, caption) pairs and class folders, the bad-image scan, and the rank sharding.

Sources, all resolved to a list of ``Example`` (an image path and a caption or class index) in a fixed order:

* a folder of images with same-name ``.txt`` captions (``cat.jpg`` + ``cat.txt``), searched recursively;
* a ``.csv`` or ``.jsonl`` file with fields ``image`` and ``caption``, image paths relative to the file;
* for classification, an image-folder tree ``root/<class>/...``: the classes are the sorted sub-folder names.

Inputs that can't be used (no caption, an empty caption, a missing file, a malformed row, an image that does not
decode) are skipped and reported as ``(source, reason)`` rather than stopping the run; only an input with nothing
usable is an error. Every image is decoded once before training (``scan_images``), so a bad file never reaches a
batch and every rank keeps the same number of equal micro-batches.

Sharding (``RankBatches``): epoch ``e`` is a permutation drawn from ``seed`` and ``e``; optimizer step ``s`` takes its
slice of ``batch_size x grad_accum x world`` examples, rank ``r`` the ``r``-th contiguous part of it, cut into
``grad_accum`` micro-batches. The rank parts joined in rank order are the global batch a single process would see
with the same global batch size, and a step's data depends only on (seed, step), which is what ``--resume`` needs.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import absolute, class_folders, find_images, first_line, read_pair_file, warnings_as_lines
from ..image_io import load_image
from ..progress import Progress
from .config import TrainError

logger = logging.getLogger("siglip")

Skipped = list[tuple[str, str]]  # (source, reason)


@dataclass(frozen=True)
class Example:
    """One training example: an image file and its caption (contrastive) or class index (classification)."""

    image: str
    target: str | int


# ------------------------------------------------------------------------------------------------------------
# Reading the sources
# ------------------------------------------------------------------------------------------------------------


def read_pairs(data: str | Path) -> tuple[list[Example], Skipped]:
    """(image, caption) examples from a caption folder, a CSV or a JSONL file; see the module docstring."""
    path = Path(data).expanduser()
    if path.is_dir():
        return _caption_folder(path)
    if not path.exists():
        raise TrainError(f"--data {data}: no such file or folder")
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise TrainError(f"--data {data}: expected a folder, a .csv or a .jsonl file")
    try:
        pairs, skipped = read_pair_file(path)
    except ValueError as e:
        raise TrainError(str(e)) from None
    return [Example(image, caption) for image, caption in pairs], skipped


def _caption_folder(folder: Path) -> tuple[list[Example], Skipped]:
    images = [absolute(p) for p in find_images([folder])]
    if not images:
        raise TrainError(f"--data {folder}: no images found (looked recursively for .jpg, .png, .webp, ...)")
    examples: list[Example] = []
    skipped: Skipped = []
    for image in images:
        text_file = image.with_suffix(".txt")
        try:
            caption = text_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            skipped.append((str(image), f"no caption file {text_file.name}"))
            continue
        except (OSError, UnicodeDecodeError) as e:
            skipped.append((str(image), f"caption {text_file.name} unreadable: {first_line(e)}"))
            continue
        if not caption:
            skipped.append((str(image), f"empty caption in {text_file.name}"))
            continue
        examples.append(Example(str(image), caption))
    if not examples:
        raise TrainError(
            f"--data {folder}: none of its {len(images)} images has a caption; each image needs a same-name .txt "
            f"file next to it (e.g. {images[0].name} -> {images[0].with_suffix('.txt').name})"
        )
    return examples, skipped


def read_class_folders(root: str | Path) -> tuple[list[Example], list[str], Skipped]:
    """(image, class index) examples from ``root/<class>/...`` and the class names (sorted folder names).

    Each class folder is searched recursively; hidden folders (``.cache``) and folders without images are not
    classes.
    """
    root = Path(root).expanduser()
    try:
        folders, stray = class_folders(root)
    except NotADirectoryError:
        raise TrainError(f"--data {root}: classification needs a folder with one sub-folder per class") from None
    by_class = {name: [absolute(p) for p in images] for name, images in folders.items() if images}
    skipped: Skipped = [(str(entry), "not inside a class folder") for entry in stray]
    if not by_class and not skipped:
        raise TrainError(f"--data {root}: no images found (looked recursively for .jpg, .png, .webp, ...)")
    classes = sorted(by_class)
    if len(classes) < 2:
        raise TrainError(
            f"--data {root}: found {len(classes)} class folder(s) with images ({', '.join(classes) or 'none'}); "
            "classification needs at least two, as root/<class>/<image>"
        )
    examples = [Example(str(image), index) for index, name in enumerate(classes) for image in by_class[name]]
    return examples, classes, skipped


# ------------------------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------------------------


class _Probe(torch.utils.data.Dataset):
    """Decodes one image per item; returns (path, None or the reason it failed, what decoding warned about)."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[str, str | None, list[str]]:
        path = self.paths[index]
        reason = None
        with warnings_as_lines(path) as said:
            try:
                load_image(path, rescale_wide=True).load()
            except Exception as e:  # noqa: BLE001 - any decoding failure means "skip this image"
                reason = first_line(e)
        return path, reason, [message for _, message in said]


def scan_images(paths: Sequence[str], num_workers: int, rank: int, world: int, show: bool) -> dict[str, str]:
    """Decode every image once; {path: reason} for those that fail, the same dict on every rank.

    Each rank decodes every ``world``-th path and the failures are exchanged, so the scan costs one pass over the
    data spread over all processes. What decoding warns about (an image stretched to 8 bits, a very large image) is
    logged once here, one ``warning: <path>: ...`` line each, where ``show`` (the main process, not ``-q``); training
    then decodes the same files silently.
    """
    share = list(paths[rank::world])
    loader = torch.utils.data.DataLoader(
        _Probe(share),
        batch_size=64,
        num_workers=num_workers,
        collate_fn=list,
        prefetch_factor=4 if num_workers else None,
    )
    bad: list[tuple[str, str]] = []
    said: list[str] = []
    with Progress(len(share), "checking images", unit="img", disable=not show) as bar:
        for batch in loader:
            bad.extend((path, reason) for path, reason, _ in batch if reason is not None)
            said.extend(message for _, _, messages in batch for message in messages)
            bar.update(len(batch))
    if world > 1:
        import torch.distributed as dist

        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, (bad, said))
        bad = [item for part, _ in gathered for item in part]
        said = [message for _, part in gathered for message in part]
    if show:
        for message in said:
            logger.info("warning: %s", message)
    return dict(bad)


class ExampleDataset(torch.utils.data.Dataset):
    """Item ``i``: (image processor outputs for one image, each (1, ...), caption or class index)."""

    def __init__(self, examples: Sequence[Example], image_processor: Any):
        self.examples = list(examples)
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], str | int]:
        example = self.examples[index]
        try:
            with warnings.catch_warnings():  # what decoding warns about was said once, by scan_images
                warnings.simplefilter("ignore")
                image = load_image(example.image, rescale_wide=True)
        except Exception as e:  # noqa: BLE001 - it decoded in the scan; say so rather than a bare PIL error
            raise TrainError(f"{example.image} no longer decodes ({first_line(e)}); it was fine at start") from None
        return dict(self.image_processor([image], return_tensors="pt")), example.target


class Collate:
    """Stacks image inputs; tokenises captions to the model's text length (contrastive) or stacks class indices.

    Returns ``(image inputs, text inputs)`` (``input_ids`` (B, L), plus ``attention_mask`` when the tokenizer
    returns one) or ``(image inputs, labels (B,))``.
    """

    def __init__(self, tokenizer: Any = None, text_length: int = 0):
        self.tokenizer, self.text_length = tokenizer, text_length

    def __call__(
        self, items: list[tuple[dict[str, torch.Tensor], str | int]]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | dict[str, torch.Tensor]]:
        inputs = {key: torch.cat([item[0][key] for item in items]) for key in items[0][0]}
        targets = [item[1] for item in items]
        if self.tokenizer is None:
            return inputs, torch.tensor(targets, dtype=torch.long)
        tokens = self.tokenizer(
            targets, padding="max_length", truncation=True, max_length=self.text_length, return_tensors="pt"
        )
        return inputs, {k: tokens[k] for k in ("input_ids", "attention_mask") if k in tokens}


# ------------------------------------------------------------------------------------------------------------
# Sharding
# ------------------------------------------------------------------------------------------------------------


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> torch.Tensor:
    """The example order of one epoch: a function of (seed, epoch) only, on every rank and every machine."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_examples, generator=generator)


class RankBatches(torch.utils.data.Sampler):
    """This rank's micro-batches (lists of example indices) for epoch ``epoch`` from step ``start_step`` on."""

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        grad_accum: int,
        rank: int,
        world: int,
        seed: int,
        epoch: int,
        start_step: int = 0,
    ):
        self.num_examples, self.batch_size, self.grad_accum = num_examples, batch_size, grad_accum
        self.rank, self.world, self.seed, self.epoch, self.start_step = rank, world, seed, epoch, start_step

    @property
    def steps_per_epoch(self) -> int:
        return self.num_examples // (self.batch_size * self.grad_accum * self.world)

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.grad_accum

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_permutation(self.num_examples, self.seed, self.epoch)
        local = self.batch_size * self.grad_accum  # this rank's examples per step
        for step in range(self.start_step, self.steps_per_epoch):
            start = step * local * self.world + self.rank * local
            part = order[start : start + local]
            for m in range(self.grad_accum):
                yield part[m * self.batch_size : (m + 1) * self.batch_size].tolist()
