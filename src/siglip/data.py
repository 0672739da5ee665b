"""Finding images and decoding them for batch jobs, with bad files skipped and reported instead of fatal.

Decoding and preprocessing can run in worker processes (``num_workers``) through a torch ``DataLoader`` so that
they overlap with the model; each item comes back either as model inputs or as an error message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".ico"}
)


def find_images(inputs: Sequence[str | os.PathLike], extensions: frozenset[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Absolute, sorted, de-duplicated image paths from files and folders (folders are searched recursively).

    A file named explicitly is always included (if it is not an image it is reported later as unreadable);
    inside folders only files with an image extension are taken. A path that does not exist is an error.
    Symbolic links are resolved; a broken one (or a link loop) keeps its own name and is reported when read.
    """
    found: set[Path] = set()
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file():
            found.add(_absolute(path))
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in files:
                    if Path(name).suffix.lower() in extensions:
                        found.add(_absolute(Path(root) / name))
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return sorted(found)


def default_workers() -> int:
    """Decoding processes for batch jobs: one per core but one, at most four."""
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none (for one-line reports)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _absolute(path: Path) -> Path:
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):  # broken link, link loop (RuntimeError before Python 3.13), vanished file
        return path.absolute()


def stat_files(paths: Sequence[Path]) -> tuple[dict[str, os.stat_result], list[tuple[str, str]]]:
    """``{path: stat}`` of the files that can be read, and ``(path, message)`` for those that can't."""
    stats: dict[str, os.stat_result] = {}
    errors: list[tuple[str, str]] = []
    for path in paths:
        try:
            stats[str(path)] = path.stat()
        except OSError as e:
            errors.append((str(path), _unreadable(path, e)))
    return stats, errors


def _unreadable(path: Path, error: OSError) -> str:
    return f"{path}: cannot read the file ({error.strerror or error})"


def _bad_file_name(path: Path) -> str | None:
    """Why a file name that is not valid UTF-8 is skipped (None for a good name): the store and the JSON / CSV
    outputs could not record it, since Python keeps its bytes as lone surrogates that no UTF-8 writer accepts.
    The message shows them escaped (\\udcXX), so that printing it can't fail either."""
    name = str(path)
    printable = name.encode("utf-8", "backslashreplace").decode("utf-8")
    if printable == name:
        return None
    return f"{printable}: the file name is not valid UTF-8; rename the file to include it"


@dataclass
class FileInfo:
    """What the embedding store records about a source file."""

    path: str
    size: int
    mtime_ns: int
    width: int = 0
    height: int = 0


@dataclass
class Batch:
    """A decoded batch: model inputs for the good items, error messages for the bad ones."""

    infos: list[FileInfo] = field(default_factory=list)
    inputs: dict[str, torch.Tensor] | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)


class ImageFiles:
    """A map-style dataset (what ``torch.utils.data.DataLoader`` takes): decode + preprocess one file per item;
    failures become (path, message) instead of exceptions. torch is imported only when batches are made, so that
    the command line starts without it."""

    def __init__(self, paths: Sequence[Path], image_processor: Any):
        self.paths = list(paths)
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[FileInfo | None, dict[str, torch.Tensor] | None, tuple[str, str] | None]:
        from .image_io import load_image  # here, not at the top: the command line starts without Pillow

        path = self.paths[index]
        bad_name = _bad_file_name(path)
        if bad_name:
            return None, None, (str(path), bad_name)
        try:
            try:
                stat = path.stat()
            except OSError as e:  # a broken link, or a file deleted since the folder was listed
                raise ValueError(_unreadable(path, e)) from None
            image = load_image(str(path))
            info = FileInfo(str(path), stat.st_size, stat.st_mtime_ns, image.width, image.height)
            inputs = dict(self.image_processor([image], return_tensors="pt"))
            return info, inputs, None
        except Exception as e:  # noqa: BLE001 - any decoding failure is reported, never fatal
            message = first_line(e)
            if str(path) not in message:
                message = f"{path}: {message}"
            return None, None, (str(path), message)


def collate(items: list[tuple[FileInfo | None, dict[str, torch.Tensor] | None, tuple[str, str] | None]]) -> Batch:
    batch = Batch()
    parts: list[dict[str, torch.Tensor]] = []
    for info, inputs, error in items:
        if error is not None:
            batch.errors.append(error)
        else:
            batch.infos.append(info)
            parts.append(inputs)
    if parts:
        import torch

        batch.inputs = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    return batch


def iter_image_batches(
    paths: Sequence[Path], image_processor: Any, batch_size: int, num_workers: int = 0
) -> Iterator[Batch]:
    """Batches in path order; with ``num_workers`` > 0 decoding runs in that many processes, ahead of the model."""
    import torch

    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    loader = torch.utils.data.DataLoader(
        ImageFiles(paths, image_processor),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
    )
    yield from loader
