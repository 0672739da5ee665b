"""Finding images and decoding them for batch jobs, with bad files skipped and reported instead of fatal.

Decoding and preprocessing can run in worker processes (``num_workers``) through a torch ``DataLoader`` so that
they overlap with the model; each item comes back either as model inputs or as an error message, plus the
warnings decoding it raised, as one-line messages. Also here, because the commands and training both read them:
class folders (``root/<class>/...``) and (image, caption) files (``.csv`` / ``.jsonl``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".ico"}
)
# Below this many images, decoding in the main process beats starting worker processes. Measured on 2 cores with the
# demo model: 50 small PNGs 2.2 s with no worker, 4.4 s with one; 150 JPEGs of 3 MP 29 s against 27 s.
SMALL_JOB = 200

Messages = list[tuple[str, str]]  # (item, one-line message)


def find_images(inputs: Sequence[str | os.PathLike], extensions: frozenset[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image paths from files and folders (folders are searched recursively), as the user wrote them.

    Paths keep the form they were given in (``photos/a.jpg`` stays relative) and the order of ``inputs``; the files
    of a folder come sorted by path. A file named twice (or through two names of the same file) is listed once.
    A file named explicitly is always included (if it is not an image it is reported later as unreadable);
    inside folders only files with an image extension are taken. A path that does not exist is an error.
    Symbolic links are followed; a broken one (or a link loop) is listed and reported when read.
    """
    found: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        identity = absolute(path)
        if identity not in seen:
            seen.add(identity)
            found.append(path)

    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file():
            add(path)
        elif path.is_dir():
            inside = []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                inside += [Path(root) / name for name in files if Path(name).suffix.lower() in extensions]
            for image in sorted(inside):
                add(image)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return found


def class_folders(root: str | os.PathLike) -> tuple[dict[str, list[Path]], list[Path]]:
    """``{class: images}`` for each sub-folder of ``root`` (sorted by name, searched recursively, empty ones
    included; hidden folders such as ``.cache`` are not classes), and the image files lying in ``root`` itself,
    outside any class. ``NotADirectoryError`` when ``root`` is not a folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    classes: dict[str, list[Path]] = {}
    stray: list[Path] = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            classes[entry.name] = find_images([entry])
        elif entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS:
            stray.append(entry)
    return classes, stray


def default_workers() -> int:
    """Decoding processes for batch jobs: one per core but one, at most four."""
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def workers_for(images: int, requested: int | None = None) -> int:
    """Decoding processes for a job of ``images`` files: ``requested`` when given, else none for a small job
    (starting a process costs more than it saves) and ``default_workers()`` for a bigger one."""
    if requested is not None:
        return requested
    return 0 if images < SMALL_JOB else default_workers()


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none (for one-line reports)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def absolute(path: Path) -> Path:
    """The absolute path with symbolic links resolved, or only made absolute when it can't be resolved."""
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):  # broken link, link loop (RuntimeError before Python 3.13), vanished file
        return path.absolute()


def stat_files(paths: Sequence[Path]) -> tuple[dict[str, os.stat_result], Messages]:
    """``{path: stat}`` of the files that can be read, and ``(path, message)`` for those that can't."""
    stats: dict[str, os.stat_result] = {}
    errors: Messages = []
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
    """A decoded source file: its path as listed, size, modification time and pixel size."""

    path: str
    size: int
    mtime_ns: int
    width: int = 0
    height: int = 0


@dataclass
class Batch:
    """A decoded batch: model inputs for the good items, error messages for the bad ones, and the warnings that
    decoding raised (one line each, naming the file)."""

    infos: list[FileInfo] = field(default_factory=list)
    inputs: dict[str, torch.Tensor] | None = None
    errors: Messages = field(default_factory=list)
    warnings: Messages = field(default_factory=list)


Item = tuple[FileInfo | None, "dict[str, torch.Tensor] | None", "tuple[str, str] | None", Messages]


class ImageFiles:
    """A map-style dataset (what ``torch.utils.data.DataLoader`` takes): decode + preprocess one file per item;
    failures become (path, message) instead of exceptions, and warnings (path, message) lines instead of Python
    warnings on stderr. Files are read as an image viewer shows them (``load_image(rescale_wide=True)``: 16-bit and
    float images scaled to 8 bits). torch is imported only when batches are made, so that the command line starts
    without it."""

    def __init__(self, paths: Sequence[Path], image_processor: Any):
        self.paths = list(paths)
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Item:
        path = self.paths[index]
        bad_name = _bad_file_name(path)
        if bad_name:
            return None, None, (str(path), bad_name), []
        with warnings_as_lines(str(path)) as said:
            info, inputs, error = self._decode(path)
        return info, inputs, error, said

    def _decode(self, path: Path) -> tuple[FileInfo | None, dict[str, torch.Tensor] | None, tuple[str, str] | None]:
        from .image_io import load_image  # here, not at the top: the command line starts without Pillow

        try:
            try:
                stat = path.stat()
            except OSError as e:  # a broken link, or a file deleted since the folder was listed
                raise ValueError(_unreadable(path, e)) from None
            image = load_image(str(path), rescale_wide=True)
            info = FileInfo(str(path), stat.st_size, stat.st_mtime_ns, image.width, image.height)
            inputs = dict(self.image_processor([image], return_tensors="pt"))
            return info, inputs, None
        except Exception as e:  # noqa: BLE001 - any decoding failure is reported, never fatal
            message = first_line(e)
            if str(path) not in message:
                message = f"{path}: {message}"
            return None, None, (str(path), message)


@contextlib.contextmanager
def warnings_as_lines(name: str) -> Iterator[Messages]:
    """Collect the Python warnings raised inside the block as ``(name, one line)`` messages that name ``name``
    (never the source line that raised them), instead of letting them reach stderr."""
    lines: Messages = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield lines
    for warning in caught:
        text = first_line(warning.message)  # a Warning instance, whatever warnings.warn was given
        lines.append((name, text if name in text else f"{name}: {text}"))


def collate(items: list[Item]) -> Batch:
    batch = Batch()
    parts: list[dict[str, torch.Tensor]] = []
    for info, inputs, error, said in items:
        batch.warnings.extend(said)
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


# ------------------------------------------------------------------------------------------------------------
# (image, caption) files
# ------------------------------------------------------------------------------------------------------------


def read_pair_file(path: str | os.PathLike) -> tuple[list[tuple[str, str]], Messages]:
    """``(image path, caption)`` rows of a ``.csv`` (with a header) or ``.jsonl`` file with fields ``image`` and
    ``caption``, image paths relative to the file, and ``(file:line, reason)`` for the rows that can't be used (a
    malformed row, no image path, an empty caption, an image that does not exist).

    Raises:
        ValueError: naming the file, when it is not UTF-8, has no ``image`` / ``caption`` columns or no usable row.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheet exports often start with a BOM
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({first_line(e)})") from None
    rows = _csv_rows(text, path) if path.suffix.lower() == ".csv" else _jsonl_rows(text, path)
    pairs: list[tuple[str, str]] = []
    skipped: Messages = []
    for where, row in rows:
        if isinstance(row, str):  # the reason the row could not be parsed
            skipped.append((where, row))
            continue
        image, caption = row.get("image"), row.get("caption")
        if not isinstance(image, str) or not image.strip():
            skipped.append((where, "no image path"))
            continue
        if not isinstance(caption, str) or not caption.strip():
            skipped.append((where, "empty caption"))
            continue
        image_path = (path.parent / image.strip()).resolve()
        if not image_path.is_file():
            skipped.append((where, f"image {image_path} does not exist"))
            continue
        pairs.append((str(image_path), caption.strip()))
    if not pairs:
        raise ValueError(f"{path} has no usable (image, caption) rows ({len(skipped)} skipped)")
    return pairs, skipped


def _csv_rows(text: str, path: Path) -> Iterator[tuple[str, dict[str, Any] | str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))  # a file-like source keeps quoted newlines
    fields = reader.fieldnames or []
    missing = [name for name in ("image", "caption") if name not in fields]
    if missing:
        raise ValueError(f"{path}: needs columns image and caption; its header is {','.join(fields) or '(empty)'}")
    while True:
        where = f"{path}:{reader.line_num + 1}"
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield where, f"malformed row ({first_line(e)})"
            continue
        if None in row:
            yield where, "more fields than the header"
            continue
        yield where, row


def _jsonl_rows(text: str, path: Path) -> Iterator[tuple[str, dict[str, Any] | str]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield where, f"not JSON ({e.msg})"
            continue
        yield (where, row) if isinstance(row, dict) else (where, "not a JSON object")
