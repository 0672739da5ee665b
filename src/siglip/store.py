"""The embedding store written by ``siglip embed`` and read by ``siglip search``, ``siglip index`` and ``siglip dedup``.

Layout of an output folder::

    manifest.json            model, preprocessing, kind (image/text), dimension, compute and storage dtypes, row
                             count, root (images)
    shards/000007.npy        (n, D) embeddings, L2-normalised, float32 (or float16: ``--storage-dtype float16``)
    shards/000007.parquet    the n metadata rows, same order (.jsonl when pyarrow is not installed)
    shards/000008-00001a2b3f2a9c1e.npy, .parquet   a shard of one of several concurrent writers (a Ray worker:
                             its process id and a random part)
    errors.jsonl             files of the last run that could not be read, one {"path", "error"} a line
    index/                   the optional ANN index (``index.py``)

Shards are immutable and written atomically: both files go to temporary names, are flushed to disk, and are
renamed, the metadata file last — a shard without its metadata file is an interrupted write: readers skip it
and the next job deletes it. One job may write a store at a time (its workers write shards under their own
names); any number may read it meanwhile. A killed job therefore loses at most the rows it had not yet written.
Rows are keyed (``path`` for images, ``text`` for texts); if a key appears in several shards, the newest shard
(by sequence number, then writer name) wins, and compaction rewrites shards that hold dropped rows (deleted or
changed files) or stale duplicates, so that no row is ever stored twice once a job has finished. ``load()``
returns rows sorted by key, whatever the shard layout, so an interrupted-and-resumed job reads back exactly like
an uninterrupted one.

A finished job records its row count in the manifest; a store whose shards hold exactly that many rows is
*clean* (no key twice), and readers then stream it shard by shard without reading a key first:
``exact_search`` and ``Block`` keep memory bounded by one block of rows, whatever the size of the store.

An image row is ``image_row(...)``: ``path`` relative to the embedded folder (the manifest's ``root``, with ``/``
separators), ``size``, ``mtime_ns``, ``width``, ``height``. Keys relative to the root let a moved folder be
embedded again without re-embedding anything; ``source_path`` joins a key to the root. Version 1 stores keyed
rows by absolute path: the next ``siglip embed`` into one rewrites its keys relative to its new root (rows of
files outside it are dropped, as deleted files are), and readers take an absolute key as it is.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write_bytes, fsync_dir, is_temporary

FORMAT = "siglip-embeddings"
VERSION = 2  # 2: image rows keyed by path relative to the manifest's root (1: by absolute path)
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
STORAGE_DTYPES = ("float32", "float16")
_SHARD = re.compile(r"^(\d{6,})(?:-([0-9a-f]{1,32}))?\.(npy|parquet|jsonl)$")
BLOCK_BYTES = 16 << 20  # float32 bytes of one block of rows read at a time by the streaming readers


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
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _decode_rows(path: Path, which: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """The metadata rows of a shard, or only rows ``which`` (in that order)."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return rows if which is None else [rows[i] for i in which]
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise StoreError(f"{path} is Parquet; install the parquet extra (pip install 'siglip[parquet]')") from None
    table = pq.read_table(path)
    return (table if which is None else table.take(list(which))).to_pylist()


def _npy_bytes(array: np.ndarray, dtype: str = "float32") -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=dtype), allow_pickle=False)
    return buffer.getvalue()


def shard_name(seq: int, writer: str = "") -> str:
    """``000007`` for the one writer of a local job, ``000007-<writer>`` for one of several concurrent writers."""
    return f"{seq:06d}-{writer}" if writer else f"{seq:06d}"


def _shard_order(name: str) -> tuple[int, str]:
    seq, _, writer = name.partition("-")
    return int(seq), writer


@dataclass(frozen=True)
class Block:
    """Rows ``start:stop`` of one shard, or only its live rows ``indices`` among them (after an unfinished job)."""

    shard: str
    npy: Path
    meta: Path
    shard_rows: int
    start: int
    stop: int
    indices: np.ndarray | None = None

    def __len__(self) -> int:
        return self.stop - self.start if self.indices is None else len(self.indices)

    def positions(self, selected: np.ndarray) -> np.ndarray:
        """Shard row numbers of the ``selected`` rows of this block."""
        return self.start + selected if self.indices is None else self.indices[selected]


class EmbeddingStore:
    """An output folder of embedding shards; see the module docstring for the layout and guarantees."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.shard_dir = self.root / "shards"
        self._mapped: tuple[Path, np.ndarray] | None = None  # the shard block_embeddings read last

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
        """Create the folder, or check that an existing store was made with the same model, kind and storage (and
        bring a version 1 image store's keys to ``manifest["root"]``)."""
        old = None
        if self.exists():
            old = self.read_manifest()
            for key in ("kind", "model", "dim", "normalized", "storage_dtype"):
                was, now = old.get(key), manifest.get(key)
                if key == "storage_dtype":  # stores written before --storage-dtype hold float32
                    was, now = was or "float32", now or "float32"
                if was != now:
                    raise StoreError(
                        f"{self.root} holds embeddings with {key}={was!r}, this run has "
                        f"{key}={now!r}; use the same settings or another --output folder"
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
        """Write the manifest; ``rows`` is given only by a job that has finished (the store is then clean)."""
        manifest = {**manifest, "format": FORMAT, "version": VERSION, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        manifest.pop("rows", None)
        if rows is not None:
            manifest["rows"] = rows
        atomic_write(self.manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())

    @property
    def storage_dtype(self) -> str:
        """The dtype new shards are written in (the manifest's ``storage_dtype``; float32 for older stores)."""
        if not self.exists():
            return "float32"
        return self.read_manifest().get("storage_dtype") or "float32"

    @property
    def key(self) -> str:
        return "text" if self.read_manifest().get("kind") == "text" else "path"

    # -- shards ----------------------------------------------------------------------------------------------------
    def _listing(self) -> tuple[dict[str, Path], dict[str, Path]]:
        """Shard files by name: (embeddings, metadata); temporary files are not listed."""
        npy: dict[str, Path] = {}
        meta: dict[str, Path] = {}
        if self.shard_dir.is_dir():
            for path in self.shard_dir.iterdir():
                match = _SHARD.match(path.name)
                if match:
                    (npy if match.group(3) == "npy" else meta)[path.name.rsplit(".", 1)[0]] = path
        return npy, meta

    def shards(self) -> list[tuple[str, Path, Path]]:
        """Complete shards in write order as (name, embeddings file, metadata file).

        Interrupted writes are skipped but not deleted: a reader (``siglip search`` during ``siglip embed``) must
        never touch files a writer is still renaming. ``remove_leftovers`` deletes them when a job starts.
        """
        npy, meta = self._listing()
        return [(name, npy[name], meta[name]) for name in sorted(npy, key=_shard_order) if name in meta]

    def next_seq(self) -> int:
        """The sequence number after every shard's: what a new writer starts from."""
        npy, meta = self._listing()
        seqs = [_shard_order(name)[0] for name in (*npy, *meta)]
        return (max(seqs) + 1) if seqs else 0

    def remove_leftovers(self) -> None:
        """Delete what interrupted writes left: temporary files, and embeddings whose metadata never arrived."""
        for folder in (self.root, self.shard_dir):
            if folder.is_dir():
                for path in folder.iterdir():
                    if is_temporary(path):
                        _discard(path)
        npy, meta = self._listing()
        for name, path in npy.items():
            if name not in meta:
                _discard(path)

    def open_embeddings(self, npy_path: Path) -> np.ndarray:
        """A shard's (n, D) embeddings, memory-mapped (nothing is read until used)."""
        try:
            embeddings = np.load(npy_path, mmap_mode="r", allow_pickle=False)
        except OSError as e:
            if e.errno == errno.ENOMEM:  # out of address space: the process's memory limit, not the shard
                raise MemoryError(f"no memory left to map {npy_path}") from None
            raise StoreError(f"shard {npy_path.name} in {self.shard_dir} is unreadable: {e}") from None
        except Exception as e:  # noqa: BLE001 - any unreadable shard is reported by name
            raise StoreError(f"shard {npy_path.name} in {self.shard_dir} is unreadable: {e}") from None
        if embeddings.ndim != 2 or embeddings.dtype.kind != "f":
            raise StoreError(f"shard {npy_path.name} in {self.shard_dir} is not a 2-d float array")
        return embeddings

    def read_shard_rows(self, meta_path: Path, which: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """A shard's metadata rows (only rows ``which``, in that order, when given)."""
        try:
            return _decode_rows(meta_path, which)
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001 - any unreadable shard is reported by name
            raise StoreError(f"shard {meta_path.name} in {self.shard_dir} is unreadable: {e}") from None

    def _embeddings(self, npy_path: Path, rows: int) -> np.ndarray:
        """The memory-mapped embeddings of a shard whose metadata file holds ``rows`` rows."""
        embeddings = self.open_embeddings(npy_path)
        if embeddings.shape[0] != rows:
            raise StoreError(f"shard {npy_path.name} has {embeddings.shape[0]} embeddings but {rows} rows")
        return embeddings

    def _read_shard(self, npy_path: Path, meta_path: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
        rows = self.read_shard_rows(meta_path)
        return rows, np.array(self._embeddings(npy_path, len(rows)))

    def _scan(
        self, key: str, shards: list[tuple[str, Path, Path]] | None = None
    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[int]]]:
        """Every shard's metadata rows, and which of them are live (the newest shard wins per key)."""
        latest: dict[Any, tuple[str, int]] = {}
        loaded: dict[str, list[dict[str, Any]]] = {}
        for name, _, meta_path in self.shards() if shards is None else shards:
            rows = loaded[name] = self.read_shard_rows(meta_path)
            for i, row in enumerate(rows):
                latest[row[key]] = (name, i)
        live: dict[str, list[int]] = {name: [] for name in loaded}
        for name, i in latest.values():
            live[name].append(i)
        for indices in live.values():
            indices.sort()
        return loaded, live

    def read_rows(self, key: str) -> tuple[list[dict[str, Any]], dict[str, list[int]]]:
        """All live rows (newest shard wins per key) and which rows of which shard are live, in shard order.
        Reads the metadata files only."""
        loaded, live = self._scan(key)
        return [loaded[name][i] for name, indices in live.items() for i in indices], live

    def read(self, key: str) -> tuple[list[dict[str, Any]], np.ndarray, dict[str, list[int]]]:
        """All live rows, their float32 embeddings (in memory), and which rows of which shard are live."""
        shards = self.shards()
        loaded, live = self._scan(key, shards)
        parts: list[np.ndarray] = []
        dim = 0
        for name, npy_path, _ in shards:
            embeddings = self._embeddings(npy_path, len(loaded[name]))
            dim = embeddings.shape[1]
            parts.append(np.asarray(embeddings[live[name]], dtype=np.float32))
        rows = [loaded[name][i] for name, indices in live.items() for i in indices]
        matrix = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
        return rows, matrix, live

    def load(self, key: str | None = None) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Rows sorted by key and their (n, D) float32 embeddings, all in memory (``exact_search`` streams)."""
        key = key or self.key
        rows, matrix, _ = self.read(key)
        order = sorted(range(len(rows)), key=lambda i: rows[i][key])
        return [rows[i] for i in order], matrix[order] if len(order) else matrix

    def append(self, rows: list[dict[str, Any]], embeddings: np.ndarray, name: str | None = None) -> str:
        """Write one new shard atomically (embeddings first, metadata last) in the store's storage dtype; returns
        its name (``name``, or the next sequence number)."""
        if len(rows) != len(embeddings):
            raise ValueError(f"{len(rows)} rows but {len(embeddings)} embeddings")
        if not rows:
            return ""
        name = name or shard_name(self.next_seq())
        fmt = "parquet" if _have_pyarrow() else "jsonl"
        dtype = embeddings.dtype.name if embeddings.dtype.name in STORAGE_DTYPES else "float32"
        atomic_write(self.shard_dir / f"{name}.npy", _npy_bytes(embeddings, dtype))
        atomic_write(self.shard_dir / f"{name}.{fmt}", _encode_rows(rows, fmt))
        return name

    def compact(self, key: str, drop: Iterable[Any] = ()) -> int:
        """Remove rows whose key is in ``drop`` and stale duplicates by rewriting the shards that hold them, one
        shard in memory at a time.

        The rewritten shard is complete on disk before the old one is deleted. Returns the number of rows left.
        """
        drop = set(drop)
        shards = self.shards()
        loaded, live = self._scan(key, shards)
        left = 0
        for name, npy_path, meta_path in shards:
            shard_rows = loaded[name]
            keep = [i for i in live[name] if shard_rows[i][key] not in drop]
            left += len(keep)
            if len(keep) == len(shard_rows):
                continue
            if keep:
                embeddings = np.asarray(self._embeddings(npy_path, len(shard_rows))[keep])
                self.append([shard_rows[i] for i in keep], embeddings)
            meta_path.unlink(missing_ok=True)  # metadata first: a shard without it is already ignored
            npy_path.unlink(missing_ok=True)
        fsync_dir(self.shard_dir)
        return left

    # -- streaming reads -------------------------------------------------------------------------------------------
    def is_clean(self, counts: dict[str, int]) -> bool:
        """Whether shards holding ``counts`` rows each are what the last finished job left (no key twice)."""
        return self.read_manifest().get("rows") == sum(counts.values())

    def blocks(self, block_rows: int | None = None) -> list[Block]:
        """The live rows of the store as blocks of at most ``block_rows`` rows (default: ``BLOCK_BYTES`` of
        float32), in shard order. A clean store is listed from the shards' headers; after an unfinished job every
        key is read first, to skip the stale duplicates."""
        shards = self.shards()
        counts, dims = {}, set()
        for name, npy_path, _ in shards:
            embeddings = self.open_embeddings(npy_path)
            counts[name] = embeddings.shape[0]
            dims.add(embeddings.shape[1])
            del embeddings
        if len(dims) > 1:
            raise StoreError(f"the shards in {self.shard_dir} have different widths: {sorted(dims)}")
        step = block_rows or max(1, BLOCK_BYTES // (4 * max(dims, default=1)))
        live = None if self.is_clean(counts) else self._scan(self.key, shards)[1]
        out = []
        for name, npy_path, meta_path in shards:
            if live is None:
                for start in range(0, counts[name], step):
                    out.append(Block(name, npy_path, meta_path, counts[name], start, min(start + step, counts[name])))
            else:
                rows = np.asarray(live[name], dtype=np.int64)
                for start in range(0, len(rows), step):
                    part = rows[start : start + step]
                    out.append(Block(name, npy_path, meta_path, counts[name], int(part[0]), int(part[-1]) + 1, part))
        return out

    def block_embeddings(self, block: Block) -> np.ndarray:
        """A block's (b, D) float32 embeddings (only that part of the shard is read)."""
        if self._mapped is None or self._mapped[0] != block.npy:  # blocks come in shard order: map each once
            self._mapped = None  # the previous mapping goes before the next one is made
            self._mapped = (block.npy, self.open_embeddings(block.npy))
        embeddings = self._mapped[1]
        if embeddings.shape[0] != block.shard_rows:
            raise StoreError(f"shard {block.npy.name} in {self.shard_dir} changed while it was read")
        part = embeddings[block.start : block.stop] if block.indices is None else embeddings[block.indices]
        return np.asarray(part, dtype=np.float32)

    def vectors_at(self, npy_path: Path, rows: Iterable[int]) -> np.ndarray:
        """Float32 embeddings of the given rows of one shard (memory-mapped, only those rows are read)."""
        return np.asarray(self.open_embeddings(npy_path)[np.asarray(list(rows), dtype=np.int64)], dtype=np.float32)

    def write_errors(self, errors: list[tuple[str, str]]) -> None:
        data = "".join(json.dumps({"path": p, "error": m}, ensure_ascii=False) + "\n" for p, m in errors)
        # A file name that is not UTF-8 holds lone surrogates; backslashreplace writes each as its JSON escape
        # (\udcXX), so the line stays valid JSON and reads back as the same Python string.
        atomic_write(self.root / ERRORS, data.encode("utf-8", "backslashreplace"))


# ------------------------------------------------------------------------------------------------------------
# Exact search
# ------------------------------------------------------------------------------------------------------------


def cosine_scores(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """(n,) scores of (n, D) vectors against one unit query: each row's dot product in a fixed order, whatever
    the row's place or the number of rows, so the in-memory, streamed and index searches give the same bits."""
    return np.einsum("ij,j->i", vectors, query)


def cosine_top_k(matrix: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact search on an (n, D) matrix of normalised vectors in memory; returns (indices, scores), best first
    (equal scores by index)."""
    if matrix.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    query = query / max(float(np.linalg.norm(query)), 1e-12)
    scores = cosine_scores(matrix, query.astype(matrix.dtype))
    k = min(k, len(scores))
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]
    top = np.flatnonzero(scores >= kth)  # every row tied with the k-th, so that ties go by index
    top = top[np.lexsort((top, -scores[top]))][:k]
    return top, scores[top]


def normalize_queries(queries: np.ndarray) -> np.ndarray:
    """(m, D) float32 unit queries from one (D,) or several (m, D) query embeddings (as ``cosine_top_k`` does)."""
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None]
    if queries.ndim != 2:
        raise ValueError(f"queries must be (D,) or (m, D), got shape {queries.shape}")
    return np.stack([q / max(float(np.linalg.norm(q)), 1e-12) for q in queries]).astype(np.float32)


# How far a matrix product's score may be from ``cosine_scores``' (float32 sums of D terms of unit vectors, in
# another order): several queries are screened with one matrix product, keeping candidates this close to the cut.
SCREEN_MARGIN = 1e-4

Hit = tuple[dict[str, Any], float]  # (metadata row, cosine score)


class Candidates:
    """The rows that may be among the results of one query: every row scoring at least ``threshold`` and, with
    ``top_k``, at least the k-th best score seen (ties at the k-th score all kept, so that the final order can
    break them by key), less ``margin`` when the scores are screening ones."""

    def __init__(self, top_k: int | None, threshold: float | None, margin: float = 0.0):
        self.top_k, self.margin = top_k, np.float32(margin)
        self.floor = np.float32(-np.inf if threshold is None else threshold)
        self.scores: list[np.ndarray] = []
        self.where: list[tuple[int, np.ndarray]] = []  # (source number, row numbers) per offer
        self.size = 0

    def offer(self, scores: np.ndarray, source: int, positions: Callable[[np.ndarray], np.ndarray]) -> None:
        selected = np.flatnonzero(scores >= self.floor - self.margin)
        if self.top_k is not None and len(selected) > self.top_k:
            kth = np.partition(scores[selected], -self.top_k)[-self.top_k]
            selected = selected[scores[selected] >= kth - self.margin]
        if not len(selected):
            return
        self.scores.append(scores[selected])
        self.where.append((source, positions(selected)))
        self.size += len(selected)
        if self.top_k is not None and self.size >= 2 * self.top_k + 64:
            self._prune()

    def _prune(self) -> None:
        if not self.scores:
            return
        scores = np.concatenate(self.scores)
        sources = np.concatenate([np.full(len(rows), s) for s, rows in self.where])
        rows = np.concatenate([rows for _, rows in self.where])
        if self.top_k is not None and len(scores) >= self.top_k:
            self.floor = max(self.floor, np.partition(scores, -self.top_k)[-self.top_k])
            keep = scores >= self.floor - self.margin
            scores, sources, rows = scores[keep], sources[keep], rows[keep]
        groups = [sources == s for s in np.unique(sources)]
        self.where = [(int(sources[g][0]), rows[g]) for g in groups]
        self.scores = [scores[g] for g in groups]
        self.size = len(scores)

    def by_source(self) -> dict[int, np.ndarray]:
        """{source: row numbers} of the candidates left."""
        self._prune()
        return dict(self.where)


def rank_hits(hits: list[Hit], key: str, top_k: int | None) -> list[Hit]:
    """Best first; equal scores in key order (``cosine_top_k`` on ``load()``, which sorts rows by key)."""
    hits.sort(key=lambda hit: (-hit[1], hit[0][key]))
    return hits if top_k is None else hits[:top_k]


def score_candidates(
    store: EmbeddingStore,
    queries: np.ndarray,
    candidates: list[dict[tuple[Path, Path], np.ndarray]],
    top_k: int | None,
    threshold: float | None,
) -> list[list[Hit]]:
    """The results of each unit query from its candidate rows ({(embeddings file, metadata file): row numbers}):
    their ``cosine_scores``, then the metadata of those that make the cut (ties at the k-th score included, to
    be ordered by key), each shard read once for all queries."""
    by_shard: dict[tuple[Path, Path], list[tuple[int, np.ndarray]]] = {}
    for q, per_query in enumerate(candidates):
        for files, rows in per_query.items():
            by_shard.setdefault(files, []).append((q, np.asarray(rows, dtype=np.int64)))
    scored: list[list[tuple[tuple[Path, Path], np.ndarray, np.ndarray]]] = [[] for _ in queries]
    for files, wanted in by_shard.items():
        needed = np.unique(np.concatenate([rows for _, rows in wanted]))
        vectors = store.vectors_at(files[0], needed)
        for q, rows in wanted:
            scored[q].append((files, rows, cosine_scores(vectors[np.searchsorted(needed, rows)], queries[q])))
    keep: dict[tuple[Path, Path], list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for q, parts in enumerate(scored):
        every = np.concatenate([scores for _, _, scores in parts]) if parts else np.zeros(0, np.float32)
        cut = np.float32(-np.inf if threshold is None else threshold)
        if top_k is not None and len(every) > top_k:
            cut = max(cut, np.partition(every, len(every) - top_k)[len(every) - top_k])
        for files, rows, scores in parts:
            made = scores >= cut
            if made.any():
                keep.setdefault(files, []).append((q, rows[made], scores[made]))
    hits: list[list[Hit]] = [[] for _ in queries]
    for (_, meta_path), wanted in keep.items():
        needed = np.unique(np.concatenate([rows for _, rows, _ in wanted]))
        metadata = store.read_shard_rows(meta_path, needed.tolist())
        for q, rows, scores in wanted:
            at = np.searchsorted(needed, rows).tolist()
            hits[q] += [(metadata[i], float(s)) for i, s in zip(at, scores, strict=True)]
    return [rank_hits(found, store.key, top_k) for found in hits]


def exact_search(
    store: EmbeddingStore,
    queries: np.ndarray,
    top_k: int | None = 10,
    threshold: float | None = None,
    block_rows: int | None = None,
) -> list[list[Hit]]:
    """Exact cosine search streamed over the shards: for each query, the ``top_k`` best rows (all of them when
    None) scoring at least ``threshold``, best first, ties in key order — what ``cosine_top_k`` gives on
    ``load()``, with memory bounded by one block of rows (memory-mapped) and the candidates."""
    if top_k is None and threshold is None:
        raise ValueError("exact_search needs top_k or threshold (or both)")
    queries = normalize_queries(queries)
    if block_rows is None:  # a block's vectors and its (rows, queries) score matrix each within BLOCK_BYTES
        block_rows = max(1, BLOCK_BYTES // (4 * max(queries.shape[1], len(queries))))
    blocks = store.blocks(block_rows)
    if blocks and queries.shape[1] != store.open_embeddings(blocks[0].npy).shape[1]:
        raise ValueError(f"the queries are {queries.shape[1]}-d but {store.root} holds other embeddings")
    one = len(queries) == 1  # one query is scored exactly; several are screened with a matrix product
    best = [Candidates(top_k, threshold, 0.0 if one else SCREEN_MARGIN) for _ in queries]
    sources: list[tuple[Path, Path]] = []
    for block in blocks:
        if not sources or sources[-1][0] != block.npy:
            sources.append((block.npy, block.meta))
        vectors = store.block_embeddings(block)
        scores = cosine_scores(vectors, queries[0])[:, None] if one else vectors @ queries.T
        for q, candidates in enumerate(best):
            candidates.offer(scores[:, q], len(sources) - 1, block.positions)
    found = [{sources[s]: rows for s, rows in c.by_source().items()} for c in best]
    return score_candidates(store, queries, found, top_k, threshold)


class ShardWriter:
    """Buffers rows and writes a shard every ``rows`` rows or ``seconds`` seconds (and on ``flush``).

    ``writer`` names this writer's shards (``000007-<writer>``) when several write one store at once; each
    numbers its shards from ``first_seq`` (default: after the store's last shard)."""

    def __init__(
        self, store: EmbeddingStore, rows: int, seconds: float = 30.0, writer: str = "", first_seq: int | None = None
    ):
        self.store, self.rows, self.seconds, self.writer = store, rows, seconds, writer
        self.seq = store.next_seq() if first_seq is None else first_seq
        self.dtype = store.storage_dtype
        self.buffer_rows: list[dict[str, Any]] = []
        self.buffer_emb: list[np.ndarray] = []
        self.last = time.monotonic()
        self.written = 0
        self.names: list[str] = []

    def add(self, rows: list[dict[str, Any]], embeddings: np.ndarray) -> None:
        self.buffer_rows.extend(rows)
        self.buffer_emb.append(embeddings)
        if len(self.buffer_rows) >= self.rows or time.monotonic() - self.last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.buffer_rows:
            embeddings = np.concatenate(self.buffer_emb).astype(self.dtype)
            self.names.append(self.store.append(self.buffer_rows, embeddings, shard_name(self.seq, self.writer)))
            self.seq += 1
            self.written += len(self.buffer_rows)
        self.buffer_rows, self.buffer_emb = [], []
        self.last = time.monotonic()
