"""The ANN index of an embedding store, and ``search``: the one search function that the ``siglip search``
command and the HTTP server call.

The index (``siglip index STORE``) is a usearch HNSW graph kept inside the store::

    index/index.json               backend, metric, dtype, graph settings, and the shards it covers:
                                   {shard name: [first key, rows, mtime_ns]}, each shard's rows under
                                   consecutive keys
    index/index-000004.usearch     the graph and its (f16 or i8) vectors; the number changes with every save

Saving writes a new graph file, then ``index.json`` (atomically), then deletes the old graph: a reader always
finds the graph that ``index.json`` names. ``siglip embed`` updates an index it finds (``update_index_if_present``)
after its compaction and appends: rows of shards that are gone are removed, rows of new shards added; nothing is
rebuilt. The index is *fresh* when it covers exactly the store's shards and the store is clean; ``search`` uses a
fresh index, and streams an exact search otherwise (with a note on stderr when an index is there but unusable).
Results of both carry the stored rows and their exact cosine scores (recomputed from the shards), best first,
ties in key order.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .files import fsync_dir, is_temporary
from .progress import Progress
from .store import (
    BLOCK_BYTES,
    EmbeddingStore,
    Hit,
    StoreError,
    atomic_write,
    exact_search,
    normalize_queries,
    score_candidates,
)

log = logging.getLogger("siglip")

INDEX_DIR = "index"
META = "index.json"
BACKENDS = ("usearch",)
METRICS = ("cos",)
DTYPES = ("f16", "i8", "f32")
# HNSW settings, measured by benchmarks/bench_scale.py on 10^6 clustered 768-d vectors (recall@10 in RESULTS.md).
# expansion_add 64 builds twice as fast as 128 with the same recall at 5 * 10^4 vectors; the i8 graph's own top 10
# holds about 82% of the true top 10 there (quantisation), and 3x as many candidates, re-ranked by their exact
# scores, about 99.8% (2x: 98.5%).
CONNECTIVITY = 16
EXPANSION_ADD = 64
# The f16 graph of 10^6 such vectors (M 16, expansion_add 64) gave recall@10 0.9115 at expansion_search 128 (49 ms a
# query), 0.9425 at 512, 0.9500 at 1024 and 0.9675 at 2048 (75 ms), 200 held-out queries (benchmarks/index_recall.py);
# searching costs no rebuild, so graphs built with a smaller value are searched with this one too.
EXPANSION_SEARCH = 2048
OVERSAMPLE = 3  # candidates asked of the graph per result wanted; their exact scores then rank them
_GRAPH = re.compile(r"^index-(\d{6,})\.usearch$")
_VIEWS: dict[Path, tuple[Path, Any]] = {}  # index folder -> (graph file, its memory-mapped view)


def require_usearch() -> Any:
    try:
        from usearch.index import Index
    except ImportError:
        raise StoreError("the ANN index needs usearch: pip install 'siglip[index]'") from None
    return Index


class StoreIndex:
    """The index folder of one store: what it covers, whether it is fresh, building, updating and querying it."""

    def __init__(self, store: EmbeddingStore):
        self.store = store
        self.folder = store.root / INDEX_DIR

    @property
    def meta_path(self) -> Path:
        return self.folder / META

    def exists(self) -> bool:
        return self.meta_path.is_file()

    def read_meta(self) -> dict[str, Any]:
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            root = self.store.root
            raise StoreError(f"{root} has no index; build one with `siglip index {root}`") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise StoreError(f"{self.meta_path} is unreadable: {e}") from None
        if meta.get("backend") not in BACKENDS or not isinstance(meta.get("shards"), dict):
            raise StoreError(f"{self.meta_path} is not an index description this version reads")
        return meta

    def staleness(self, meta: dict[str, Any] | None = None) -> str | None:
        """Why the index can't answer for the store as it is now (None when it is fresh)."""
        meta = meta or self.read_meta()
        shards = set(_identities(self.store))
        covered = {(name, entry[2]) for name, entry in meta["shards"].items()}
        if shards != covered:
            return (
                f"it covers {len(covered & shards)} of the {len(shards)} shards"
                + (f" and {len(covered - shards)} that are gone" if covered - shards else "")
                + f"; update it with `siglip index {self.store.root}`"
            )
        rows = sum(entry[1] for entry in meta["shards"].values())
        if self.store.read_manifest().get("rows") != rows:
            return "the last `siglip embed` did not finish; run it again"
        if not (self.folder / meta["file"]).is_file():
            return f"its graph file {meta['file']} is missing; rebuild it with `siglip index {self.store.root}`"
        return None

    # -- building and updating -------------------------------------------------------------------------------------
    def build(
        self,
        *,
        backend: str = "usearch",
        metric: str = "cos",
        dtype: str = "f16",
        connectivity: int = CONNECTIVITY,
        expansion_add: int = EXPANSION_ADD,
        expansion_search: int = EXPANSION_SEARCH,
        progress: bool = False,
    ) -> dict[str, int]:
        """Index the store: update the existing index when it has the same settings, else build a new one.

        Returns counts: {"added", "removed", "rows"}."""
        if backend not in BACKENDS:
            raise ValueError(f"index backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if metric not in METRICS:
            raise ValueError(f"index metric must be one of {', '.join(METRICS)}, got {metric!r}")
        if dtype not in DTYPES:
            raise ValueError(f"index dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        settings = {
            "backend": backend,
            "metric": metric,
            "dtype": dtype,
            "connectivity": connectivity,
            "expansion_add": expansion_add,
            "expansion_search": expansion_search,
        }
        old = self._readable_meta()
        if old is not None and all(old.get(k) == v for k, v in settings.items()) and self._graph_ok(old):
            return self.update(progress=progress)
        manifest = self.store.read_manifest()
        meta = {**settings, "dim": manifest["dim"], "shards": {}, "next_key": 0, "removed": 0, "file": ""}
        graph = require_usearch()(
            ndim=manifest["dim"],
            metric=metric,
            dtype=dtype,
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )
        return self._apply(graph, meta, progress)

    def update(self, progress: bool = False) -> dict[str, int]:
        """Bring the index up to date with the shards: remove the rows of shards that are gone, add new shards."""
        meta = self.read_meta()
        if not self._graph_ok(meta):
            raise StoreError(f"{self.folder / meta['file']} is missing; rebuild with `siglip index {self.store.root}`")
        return self._apply(self.open_graph(meta), meta, progress)

    def open_graph(self, meta: dict[str, Any], view: bool = False) -> Any:
        """The usearch graph ``meta`` names: loaded to be changed, or memory-mapped (``view``) to be searched; a
        view stays open for the next search of the same graph file (a server answers many)."""
        path = self.folder / meta["file"]
        if view and _VIEWS.get(self.folder, (None,))[0] == path:
            return _VIEWS[self.folder][1]
        graph = require_usearch().restore(str(path), view=view)
        if graph is None:
            raise StoreError(f"{path} is not a usearch index")
        if view:
            _VIEWS[self.folder] = (path, graph)
        return graph

    def _readable_meta(self) -> dict[str, Any] | None:
        try:
            return self.read_meta() if self.exists() else None
        except StoreError:
            return None

    def _graph_ok(self, meta: dict[str, Any]) -> bool:
        return bool(meta.get("file")) and (self.folder / meta["file"]).is_file()

    def _apply(self, graph: Any, meta: dict[str, Any], progress: bool) -> dict[str, int]:
        store = self.store
        shards = store.shards()
        counts = {name: store.open_embeddings(npy).shape[0] for name, npy, _ in shards}
        if not store.is_clean(counts):
            raise StoreError(
                f"{store.root} has rows of an unfinished `siglip embed`; run it again before indexing the store"
            )
        covered: dict[str, list[int]] = meta["shards"]  # name -> [first key, rows, mtime_ns of its .npy]
        current = _identities(store)
        removed = 0
        for name in [n for n, entry in covered.items() if (n, entry[2]) not in current]:  # gone, or a new shard
            first, rows, _ = covered.pop(name)  # under an old name
            removed += int(graph.remove(np.arange(first, first + rows, dtype=np.uint64)))
        new = [(name, npy) for name, npy, _ in shards if name not in covered]
        added = 0
        with Progress(sum(counts[n] for n, _ in new), "indexing", unit="vec", disable=not progress) as bar:
            for name, npy in new:
                first = meta["next_key"]
                embeddings = store.open_embeddings(npy)
                step = max(1, BLOCK_BYTES // (4 * embeddings.shape[1]))
                for start in range(0, embeddings.shape[0], step):
                    part = np.asarray(embeddings[start : start + step], dtype=np.float32)
                    graph.add(np.arange(first + start, first + start + len(part), dtype=np.uint64), part, threads=0)
                    bar.update(len(part))
                del embeddings
                covered[name] = [first, counts[name], npy.stat().st_mtime_ns]
                meta["next_key"] = first + counts[name]
                added += counts[name]
        meta["removed"] = meta.get("removed", 0) + removed
        meta["rows"] = sum(counts.values())
        if added or removed or not self._graph_ok(meta):
            self._save(graph, meta)
        return {"added": added, "removed": removed, "rows": meta["rows"]}

    def _save(self, graph: Any, meta: dict[str, Any]) -> None:
        """New graph file, then index.json naming it, then the old graph files go."""
        try:
            self.folder.mkdir(exist_ok=True)
        except OSError as e:
            raise StoreError(f"could not create {self.folder}: {e.strerror or e}") from None
        generations = [int(m.group(1)) for p in self.folder.iterdir() if (m := _GRAPH.match(p.name))]
        name = f"index-{max(generations, default=-1) + 1:06d}.usearch"
        tmp = self.folder / f".{name}.tmp-{os.getpid()}"
        try:
            graph.save(str(tmp))
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.folder / name)
        except (OSError, RuntimeError) as e:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"could not write {self.folder / name}: {getattr(e, 'strerror', None) or e}") from None
        fsync_dir(self.folder)
        meta = {**meta, "file": name, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write(self.meta_path, (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
        for path in self.folder.iterdir():
            if (_GRAPH.match(path.name) and path.name != name) or is_temporary(path):
                path.unlink(missing_ok=True)

    # -- querying --------------------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, top_k: int, threshold: float | None = None) -> list[list[Hit]]:
        """Approximate neighbours from the graph (memory-mapped), ranked by their exact scores from the shards."""
        meta = self.read_meta()
        graph = self.open_graph(meta, view=True)
        graph.expansion_search = max(meta["expansion_search"], EXPANSION_SEARCH, OVERSAMPLE * top_k)
        queries = normalize_queries(queries)
        names = sorted(meta["shards"], key=lambda n: meta["shards"][n][0])
        firsts = np.array([meta["shards"][n][0] for n in names], dtype=np.int64)
        files = {name: (npy, meta_path) for name, npy, meta_path in self.store.shards()}
        candidates = []
        for found in neighbour_keys(graph, queries, OVERSAMPLE * top_k):
            shard_of = np.searchsorted(firsts, found, side="right") - 1
            candidates.append({files[names[s]]: found[shard_of == s] - firsts[s] for s in np.unique(shard_of)})
        return score_candidates(self.store, queries, candidates, top_k, threshold)


def _identities(store: EmbeddingStore) -> set[tuple[str, int]]:
    """(name, modification time) of each shard's embeddings: a shard name freed by compaction can be taken again
    by a new shard, which the index must not mistake for the old one."""
    return {(name, npy.stat().st_mtime_ns) for name, npy, _ in store.shards()}


def neighbour_keys(graph: Any, queries: np.ndarray, count: int) -> list[np.ndarray]:
    """The keys of the ``count`` nearest neighbours of each query (fewer where the graph holds fewer)."""
    matches = graph.search(queries, count, threads=0)
    if not hasattr(matches, "counts"):  # one query gives a Matches, several a BatchMatches
        return [np.asarray(matches.keys, dtype=np.int64)]
    return [np.asarray(matches.keys[q][: matches.counts[q]], dtype=np.int64) for q in range(len(queries))]


def update_index_if_present(store: EmbeddingStore, log: Callable[[str], None] | None = None) -> None:
    """After an embed job: update the store's index, if it has one. A failure leaves it stale (search then falls
    back to exact) and is reported, not raised: the embeddings are safely stored either way."""
    index = StoreIndex(store)
    if not index.exists():
        return
    try:
        done = index.update()
    except StoreError as e:
        note(f"the index of {store.root} was not updated ({e}); search is exact until `siglip index` succeeds")
        return
    if log:
        log(f"index updated: {done['added']} rows added, {done['removed']} removed, {done['rows']} indexed")


def note(message: str) -> None:
    """A note on stderr (the "siglip" logger): why a search or dedup did not use the index."""
    log.warning("note: %s", message)


def search_many(
    store: EmbeddingStore,
    queries: np.ndarray,
    top_k: int | None = 10,
    *,
    exact: bool = False,
    threshold: float | None = None,
    block_rows: int | None = None,
) -> list[list[Hit]]:
    """For each (D,) query of ``queries`` (m, D), the ``top_k`` stored rows most similar to it (all rows scoring at
    least ``threshold`` when ``top_k`` is None), as [(row, cosine score)] best first, ties in key order.

    Uses the store's index when it is fresh (unless ``exact``), else an exact search streamed over the shards."""
    queries = np.asarray(queries, dtype=np.float32)
    queries = queries[None] if queries.ndim == 1 else queries  # normalised once, by the search that runs
    dim = store.read_manifest().get("dim")
    if dim is not None and queries.shape[1] != dim:
        raise ValueError(f"the queries are {queries.shape[1]}-d but {store.root} holds {dim}-d embeddings")
    index = StoreIndex(store)
    if not exact and index.exists():
        if top_k is None:
            note("the index answers a fixed number of results; searching exactly for every row above --threshold")
        else:
            try:
                why = index.staleness()
                if why is None:
                    return index.search(queries, top_k, threshold)
                note(f"the index of {store.root} is stale ({why}); searching exactly")
            except StoreError as e:
                note(f"the index of {store.root} can't be used ({e}); searching exactly")
    return exact_search(store, queries, top_k, threshold, block_rows)


def search(
    store: EmbeddingStore,
    query: np.ndarray,
    top_k: int | None = 10,
    *,
    exact: bool = False,
    threshold: float | None = None,
) -> list[Hit]:
    """The ``top_k`` stored rows most similar to one (D,) query embedding: [(row, cosine score)], best first.

    What ``siglip search`` and the HTTP server's ``/v1/search`` call; see ``search_many``."""
    queries = np.asarray(query, dtype=np.float32).reshape(1, -1)
    return search_many(store, queries, top_k, exact=exact, threshold=threshold)[0]
