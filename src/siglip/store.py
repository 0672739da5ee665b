"""The embedding store written by ``siglip embed`` and read by ``siglip search``.

Layout of an output folder::

    manifest.json            model, preprocessing, kind (image/text), dimension, compute dtype, row count, root (images)
    shards/000007.npy        float32 (n, D) embeddings, L2-normalised
    shards/000007.parquet    the n metadata rows, same order (.jsonl when pyarrow is not installed)
    errors.jsonl             files of the last run that could not be read, one {"path", "error"} a line

Shards are immutable and written atomically: both files go to temporary names, are flushed to disk, and are
renamed, the metadata file last — a shard without its metadata file is an interrupted write: readers skip it
and the next job deletes it. One job may write a store at a time; any number may read it meanwhile.
A killed job therefore loses at most the rows it had not yet written. Rows are keyed (``path`` for images,
``text`` for texts); if a key appears in several shards, the newest shard wins, and compaction rewrites shards
that hold dropped rows (deleted or changed files) so that no row is ever duplicated. ``load()`` returns rows
sorted by key, whatever the shard layout, so an interrupted-and-resumed job reads back exactly like an
uninterrupted one.

An image row is ``image_row(...)``: ``path`` relative to the embedded folder (the manifest's ``root``, with ``/``
separators), ``size``, ``mtime_ns``, ``width``, ``height``. Keys relative to the root let a moved folder be
embedded again without re-embedding anything; ``source_path`` joins a key to the root. Version 1 stores keyed
rows by absolute path: the next ``siglip embed`` into one rewrites its keys relative to its new root (rows of
files outside it are dropped, as deleted files are), and readers take an absolute key as it is.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write_bytes, fsync_dir, is_temporary

FORMAT = "siglip-embeddings"
VERSION = 2  # 2: image rows keyed by path relative to the manifest's root (1: by absolute path)
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
_SHARD = re.compile(r"^(\d{6})\.(npy|parquet|jsonl)$")


class StoreError(RuntimeError):
    """A store that can't be read or written; the message names the folder or file."""


def atomic_write(path: Path, data: bytes) -> None:
    """``files.atomic_write_bytes``, with a failure reported as a StoreError naming the file."""
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise StoreError(f"could not write {path}: {e.strerror or e}") from None


# ------------------------------------------------------------------------------------------------------------
# Image rows: the one place that says what a stored image row is (local and distributed jobs both call these)
# ------------------------------------------------------------------------------------------------------------


def image_root(inputs: Sequence[str | os.PathLike]) -> Path:
    """The folder image keys are relative to: the deepest folder holding every input (a folder input itself, a
    file input's parent), absolute but with links unresolved so that keys keep the names the user sees."""
    folders = []
    for item in inputs:
        path = Path(os.path.abspath(os.path.expanduser(item)))
        folders.append(path if path.is_dir() else path.parent)
    if not folders:
        raise ValueError("no inputs to embed")
    return Path(os.path.commonpath(folders))


def image_key(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """The key of an image file: its path relative to ``root``, with ``/`` separators on every platform."""
    return Path(os.path.relpath(os.path.abspath(os.path.expanduser(path)), root)).as_posix()


def image_row(
    path: str | os.PathLike, root: str | os.PathLike, size: int, mtime_ns: int, width: int, height: int
) -> dict[str, Any]:
    """The metadata row stored for an image file (its key, and what tells an unchanged file: size, mtime)."""
    return {"path": image_key(path, root), "size": size, "mtime_ns": mtime_ns, "width": width, "height": height}


def source_path(manifest: dict[str, Any], key: str) -> str:
    """The file a stored image key names: ``root/key`` (an absolute key of a version 1 store as it is)."""
    root = manifest.get("root")
    return key if root is None or os.path.isabs(key) else os.path.join(root, *key.split("/"))


def _relative_key(key: str, roots: Sequence[str]) -> str | None:
    """A version 1 (absolute) key made relative to the first of ``roots`` that holds it; None if none does."""
    if not os.path.isabs(key):
        return key
    for root in roots:
        if os.path.commonpath([key, root]) == root:
            return image_key(key, root)
    return None


def _discard(path: Path) -> None:
    """Delete an unusable leftover if we can; in a read-only store it stays, and is ignored by every reader."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _have_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def _encode_rows(rows: list[dict[str, Any]], fmt: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _decode_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise StoreError(f"{path} is Parquet; install the parquet extra (pip install 'siglip[parquet]')") from None
    return pq.read_table(path).to_pylist()


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


class EmbeddingStore:
    """An output folder of embedding shards; see the module docstring for the layout and guarantees."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.shard_dir = self.root / "shards"

    # -- manifest --------------------------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read_manifest(self) -> dict[str, Any]:
        if not self.exists():
            raise StoreError(f"{self.root} is not an embedding store (no {MANIFEST}); create it with `siglip embed`")
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise StoreError(f"{self.manifest_path} is corrupt: {e}") from None
        if manifest.get("format") != FORMAT:
            raise StoreError(f"{self.manifest_path} is not a {FORMAT} manifest")
        return manifest

    def prepare(self, manifest: dict[str, Any]) -> None:
        """Create the folder, or check that an existing store was made with the same model and kind (and bring a
        version 1 image store's keys to ``manifest["root"]``)."""
        old = None
        if self.exists():
            old = self.read_manifest()
            for key in ("kind", "model", "dim", "normalized"):
                if old.get(key) != manifest.get(key):
                    raise StoreError(
                        f"{self.root} holds embeddings with {key}={old.get(key)!r}, this run has "
                        f"{key}={manifest.get(key)!r}; use the same settings or another --output folder"
                    )
            if old.get("model_dtype") not in (
                None,
                manifest.get("model_dtype"),
            ):  # stores written before it was recorded have none
                raise StoreError(
                    f"{self.root} holds embeddings computed in {old['model_dtype']}, this run computes in "
                    f"{manifest.get('model_dtype')}; pass --dtype {old['model_dtype']} to add to it, or use another "
                    f"--output folder"
                )
        try:
            self.shard_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"could not create {self.shard_dir}: {e.strerror or e}") from None
        if not os.access(self.root, os.W_OK):
            raise StoreError(f"{self.root} is not writable")
        self.remove_leftovers()  # one writer at a time: anything half-written belongs to a job that died
        if old is not None and old.get("version", 1) < 2 and manifest.get("kind") == "image":
            self._rekey_absolute_paths(manifest["root"])
        self.write_manifest(manifest)

    def _rekey_absolute_paths(self, root: str) -> None:
        """Rewrite the shards of a version 1 store (absolute keys) with keys relative to ``root`` (also tried with
        links resolved: version 1 resolved them). Rows of files outside ``root`` are dropped. Each rewritten shard
        is complete before its old one is deleted, and a shard already rewritten is left alone, so a job killed
        half-way is finished by the next one."""
        roots = list(dict.fromkeys([root, str(Path(root).resolve())]))
        for _, npy_path, meta_path in self.shards():
            rows, embeddings = self._read_shard(npy_path, meta_path)
            if not any(os.path.isabs(row["path"]) for row in rows):
                continue
            keys = [_relative_key(row["path"], roots) for row in rows]
            keep = [i for i, key in enumerate(keys) if key is not None]
            if keep:
                self.append([{**rows[i], "path": keys[i]} for i in keep], embeddings[keep])
            meta_path.unlink(missing_ok=True)  # metadata first: a shard without it is already ignored
            npy_path.unlink(missing_ok=True)
        fsync_dir(self.shard_dir)

    def write_manifest(self, manifest: dict[str, Any], rows: int | None = None) -> None:
        manifest = {**manifest, "format": FORMAT, "version": VERSION, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if rows is not None:
            manifest["rows"] = rows
        atomic_write(self.manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())

    # -- shards ----------------------------------------------------------------------------------------------------
    def _listing(self) -> tuple[dict[int, Path], dict[int, Path]]:
        """Shard files by sequence number: (embeddings, metadata); temporary files are not listed."""
        npy: dict[int, Path] = {}
        meta: dict[int, Path] = {}
        if self.shard_dir.is_dir():
            for path in self.shard_dir.iterdir():
                match = _SHARD.match(path.name)
                if match:
                    (npy if match.group(2) == "npy" else meta)[int(match.group(1))] = path
        return npy, meta

    def shards(self) -> list[tuple[int, Path, Path]]:
        """Complete shards in write order as (sequence, embeddings file, metadata file).

        Interrupted writes are skipped but not deleted: a reader (``siglip search`` during ``siglip embed``) must
        never touch files a writer is still renaming. ``remove_leftovers`` deletes them when a job starts.
        """
        npy, meta = self._listing()
        return [(seq, path, meta[seq]) for seq, path in sorted(npy.items()) if seq in meta]

    def remove_leftovers(self) -> None:
        """Delete what interrupted writes left: temporary files, and embeddings whose metadata never arrived."""
        for folder in (self.root, self.shard_dir):
            if folder.is_dir():
                for path in folder.iterdir():
                    if is_temporary(path):
                        _discard(path)
        npy, meta = self._listing()
        for seq, path in npy.items():
            if seq not in meta:
                _discard(path)

    def _read_shard(self, npy_path: Path, meta_path: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
        try:
            embeddings = np.load(npy_path, allow_pickle=False)
            rows = _decode_rows(meta_path)
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001 - any unreadable shard is reported by name
            raise StoreError(f"shard {npy_path.name} in {self.shard_dir} is unreadable: {e}") from None
        if embeddings.ndim != 2 or len(rows) != embeddings.shape[0]:
            raise StoreError(f"shard {npy_path.name} has {embeddings.shape[0]} embeddings but {len(rows)} rows")
        return rows, embeddings

    def read(self, key: str) -> tuple[list[dict[str, Any]], np.ndarray, dict[int, list[int]]]:
        """All live rows (newest shard wins per key), their embeddings, and which rows of which shard are live."""
        latest: dict[Any, tuple[int, int]] = {}
        loaded: dict[int, tuple[list[dict[str, Any]], np.ndarray]] = {}
        for seq, npy_path, meta_path in self.shards():
            rows, embeddings = self._read_shard(npy_path, meta_path)
            loaded[seq] = (rows, embeddings)
            for i, row in enumerate(rows):
                latest[row[key]] = (seq, i)
        live: dict[int, list[int]] = {seq: [] for seq in loaded}
        for seq, i in latest.values():
            live[seq].append(i)
        out_rows: list[dict[str, Any]] = []
        parts: list[np.ndarray] = []
        for seq, indices in live.items():
            indices.sort()
            rows, embeddings = loaded[seq]
            out_rows.extend(rows[i] for i in indices)
            parts.append(embeddings[indices])
        dim = next((e.shape[1] for _, e in loaded.values()), 0)
        matrix = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
        return out_rows, matrix, live

    def load(self, key: str | None = None) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Rows sorted by key and their (n, D) embeddings."""
        key = key or self.key
        rows, matrix, _ = self.read(key)
        order = sorted(range(len(rows)), key=lambda i: rows[i][key])
        return [rows[i] for i in order], matrix[order] if len(order) else matrix

    @property
    def key(self) -> str:
        return "text" if self.read_manifest().get("kind") == "text" else "path"

    def _next_seq(self) -> int:
        seqs = [seq for seq, _, _ in self.shards()]
        return (max(seqs) + 1) if seqs else 0

    def append(self, rows: list[dict[str, Any]], embeddings: np.ndarray) -> None:
        """Write one new shard atomically (embeddings first, metadata last)."""
        if len(rows) != len(embeddings):
            raise ValueError(f"{len(rows)} rows but {len(embeddings)} embeddings")
        if not rows:
            return
        seq = self._next_seq()
        fmt = "parquet" if _have_pyarrow() else "jsonl"
        atomic_write(self.shard_dir / f"{seq:06d}.npy", _npy_bytes(embeddings))
        atomic_write(self.shard_dir / f"{seq:06d}.{fmt}", _encode_rows(rows, fmt))

    def compact(self, key: str, drop: Iterable[Any] = ()) -> int:
        """Remove rows whose key is in ``drop`` and stale duplicates by rewriting the shards that hold them.

        The rewritten shard is complete on disk before the old one is deleted. Returns the number of rows left.
        """
        drop = set(drop)
        shard_files = {seq: (npy, meta) for seq, npy, meta in self.shards()}
        rows, _, live = self.read(key)
        for seq, indices in live.items():
            npy_path, meta_path = shard_files[seq]
            shard_rows, embeddings = self._read_shard(npy_path, meta_path)
            keep = [i for i in indices if shard_rows[i][key] not in drop]
            if len(keep) == len(shard_rows):
                continue
            if keep:
                self.append([shard_rows[i] for i in keep], embeddings[keep])
            meta_path.unlink(missing_ok=True)  # metadata first: a shard without it is already ignored
            npy_path.unlink(missing_ok=True)
        fsync_dir(self.shard_dir)
        return sum(1 for r in rows if r[key] not in drop)

    def write_errors(self, errors: list[tuple[str, str]]) -> None:
        data = "".join(json.dumps({"path": p, "error": m}, ensure_ascii=False) + "\n" for p, m in errors)
        # A file name that is not UTF-8 holds lone surrogates; backslashreplace writes each as its JSON escape
        # (\udcXX), so the line stays valid JSON and reads back as the same Python string.
        atomic_write(self.root / ERRORS, data.encode("utf-8", "backslashreplace"))


def cosine_top_k(matrix: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact search: one (n, D) x (D,) product on normalised vectors; returns (indices, scores), best first."""
    if matrix.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    query = query / max(float(np.linalg.norm(query)), 1e-12)
    scores = matrix @ query.astype(matrix.dtype)
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.lexsort((top, -scores[top]))]
    return top, scores[top]


class ShardWriter:
    """Buffers rows and writes a shard every ``rows`` rows or ``seconds`` seconds (and on ``flush``)."""

    def __init__(self, store: EmbeddingStore, rows: int, seconds: float = 30.0):
        self.store, self.rows, self.seconds = store, rows, seconds
        self.buffer_rows: list[dict[str, Any]] = []
        self.buffer_emb: list[np.ndarray] = []
        self.last = time.monotonic()
        self.written = 0

    def add(self, rows: list[dict[str, Any]], embeddings: np.ndarray) -> None:
        self.buffer_rows.extend(rows)
        self.buffer_emb.append(embeddings)
        if len(self.buffer_rows) >= self.rows or time.monotonic() - self.last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.buffer_rows:
            self.store.append(self.buffer_rows, np.concatenate(self.buffer_emb))
            self.written += len(self.buffer_rows)
        self.buffer_rows, self.buffer_emb = [], []
        self.last = time.monotonic()
