"""Groups of near-duplicates in an embedding store (``siglip dedup``).

Two rows are near-duplicates when their cosine similarity is at least a threshold; a group is a connected set of
such pairs (A~B and B~C put A, B and C in one group). Pairs are found either exactly, block against block over the
memory-mapped shards (memory: two blocks and their score matrix, plus a few bytes per row for the groups), or
through a fresh ANN index (each row's nearest neighbours, then their exact scores), which scales to stores where
comparing every pair would take too long.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .index import StoreIndex, neighbour_keys, note
from .progress import Progress
from .store import SCREEN_MARGIN, Block, EmbeddingStore

KEEP = ("first", "largest")
BLOCK_ROWS = 2048  # rows per block: two blocks and a 2048 x 2048 float32 score matrix, about 16 MiB + 2 blocks
NEIGHBOURS = 16  # neighbours asked of the index per row
PAIR_CHUNK = 16384  # candidate pairs scored at a time


def pair_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine scores of row pairs (a[i], b[i]), in ``store.cosine_scores``' arithmetic (the same bits)."""
    return np.einsum("ij,ij->i", a, b)


@dataclass
class DuplicateGroup:
    """Near-duplicate rows in key order, each with its best score against another member; ``keep`` is the row
    to keep (when asked for), the others are ``drop``."""

    items: list[tuple[dict[str, Any], float]]
    keep: dict[str, Any] | None = None

    def drop(self) -> list[dict[str, Any]]:
        return [row for row, _ in self.items if row is not self.keep]


class _Groups:
    """Union-find over row positions, with each row's best score against a partner."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)
        self.best = np.full(n, -np.inf, dtype=np.float32)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def add(self, a: np.ndarray, b: np.ndarray, scores: np.ndarray) -> None:
        np.maximum.at(self.best, a, scores)
        np.maximum.at(self.best, b, scores)
        for i, j in zip(a.tolist(), b.tolist(), strict=True):
            ri, rj = self.find(i), self.find(j)
            if ri != rj:
                self.parent[max(ri, rj)] = min(ri, rj)

    def members(self) -> dict[int, list[int]]:
        """{root: positions} of the groups with at least two rows."""
        paired = np.flatnonzero(self.best > -np.inf)
        out: dict[int, list[int]] = {}
        for i in paired.tolist():
            out.setdefault(self.find(i), []).append(i)
        return out


def find_duplicates(
    store: EmbeddingStore,
    threshold: float,
    *,
    exact: bool = False,
    keep: str | None = None,
    block_rows: int = BLOCK_ROWS,
    neighbours: int = NEIGHBOURS,
    progress: bool = False,
) -> list[DuplicateGroup]:
    """Groups of rows whose cosine similarity is at least ``threshold``, ordered by their first key.

    Through the store's index when it is fresh (unless ``exact``), else exactly, block by block. ``keep`` picks
    the row to keep in each group: ``"first"`` (first key) or ``"largest"`` (most pixels, then most bytes, for
    images; the longest text for texts)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"the threshold is a cosine similarity in (0, 1], got {threshold}")
    if keep is not None and keep not in KEEP:
        raise ValueError(f"keep must be one of {', '.join(KEEP)}, got {keep!r}")
    blocks = store.blocks(block_rows)
    offsets = np.cumsum([0] + [len(b) for b in blocks])
    groups = _Groups(int(offsets[-1]))
    index = StoreIndex(store)
    use_index = not exact and index.exists()
    if use_index:
        why = index.staleness()
        if why is not None:
            note(f"the index of {store.root} is stale ({why}); comparing every pair exactly")
            use_index = False
    pairs = _index_pairs if use_index else _exact_pairs
    with Progress(len(blocks), "comparing", unit="block", disable=not progress) as bar:
        for a, b, scores in pairs(store, blocks, offsets, np.float32(threshold), neighbours, bar.update):
            groups.add(a, b, scores)
    return _resolve(store, blocks, offsets, groups, keep)


def _exact_pairs(
    store: EmbeddingStore,
    blocks: list[Block],
    offsets: np.ndarray,
    threshold: np.float32,
    neighbours: int,
    done: Callable[[int], None],
):
    """(positions, positions, scores) of every pair at or above the threshold, block against block: screened
    with one matrix product, then scored with ``cosine_scores``' arithmetic (what search reports)."""
    for i, block in enumerate(blocks):
        left = store.block_embeddings(block)
        for j in range(i, len(blocks)):
            right = left if j == i else store.block_embeddings(blocks[j])
            rows, cols = np.nonzero(left @ right.T >= threshold - SCREEN_MARGIN)
            if j == i:
                upper = rows < cols
                rows, cols = rows[upper], cols[upper]
            for start in range(0, len(rows), PAIR_CHUNK):
                r, c = rows[start : start + PAIR_CHUNK], cols[start : start + PAIR_CHUNK]
                scores = pair_scores(left[r], right[c])
                close = scores >= threshold
                if close.any():
                    yield offsets[i] + r[close], offsets[j] + c[close], scores[close]
        done(1)


def _index_pairs(
    store: EmbeddingStore,
    blocks: list[Block],
    offsets: np.ndarray,
    threshold: np.float32,
    neighbours: int,
    done: Callable[[int], None],
):
    """Pairs among each row's nearest neighbours in the index, with their exact scores."""
    index = StoreIndex(store)
    meta = index.read_meta()
    graph = index.open_graph(meta, view=True)
    graph.expansion_search = max(meta["expansion_search"], neighbours)
    # A fresh index covers a clean store, whose blocks are whole shards in order: key -> position.
    names = sorted(meta["shards"], key=lambda n: meta["shards"][n][0])
    firsts = np.array([meta["shards"][n][0] for n in names], dtype=np.int64)
    shard_start = {}
    for block, offset in zip(blocks, offsets, strict=False):
        shard_start.setdefault(block.shard, int(offset) - block.start)
    starts = np.array([shard_start[n] for n in names], dtype=np.int64)
    for i, block in enumerate(blocks):
        vectors = store.block_embeddings(block)
        found = neighbour_keys(graph, vectors, neighbours + 1)
        rows = np.concatenate([np.full(len(keys), r) for r, keys in enumerate(found)])
        keys = np.concatenate(found)
        shard = np.searchsorted(firsts, keys, side="right") - 1
        positions = starts[shard] + keys - firsts[shard]
        # Every neighbour but the row itself: the graph's neighbour lists are not symmetric (B may be among A's
        # neighbours but not A among B's), so a pair is kept from whichever side finds it (possibly both).
        pair = positions != offsets[i] + rows
        rows, positions = rows[pair], positions[pair]
        if len(rows):
            partners, which = np.unique(positions, return_inverse=True)
            scores = pair_scores(vectors[rows], _vectors(store, blocks, offsets, partners)[which])
            close = scores >= threshold
            if close.any():
                yield offsets[i] + rows[close], positions[close], scores[close]
        done(1)


def _vectors(store: EmbeddingStore, blocks: list[Block], offsets: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Float32 embeddings of the rows at sorted ``positions`` (read from their shards)."""
    which = np.searchsorted(offsets, positions, side="right") - 1
    parts = []
    for b in np.unique(which):
        block = blocks[b]
        parts.append(store.vectors_at(block.npy, block.positions(positions[which == b] - offsets[b])))
    return np.concatenate(parts)


def _resolve(
    store: EmbeddingStore, blocks: list[Block], offsets: np.ndarray, groups: _Groups, keep: str | None
) -> list[DuplicateGroup]:
    """Metadata rows of the grouped positions (each shard's metadata read once), groups in key order."""
    members = groups.members()
    root_of = {p: root for root, positions in members.items() for p in positions}
    items: dict[int, list[tuple[dict[str, Any], float]]] = {root: [] for root in members}
    wanted = np.array(sorted(root_of), dtype=np.int64)
    shard, rows = None, []
    for p, b in zip(wanted.tolist(), (np.searchsorted(offsets, wanted, side="right") - 1).tolist(), strict=True):
        block = blocks[b]
        if block.shard != shard:  # positions are sorted and blocks in shard order: each shard is read once
            shard, rows = block.shard, store.read_shard_rows(block.meta)
        row = rows[int(block.positions(np.array([p - offsets[b]]))[0])]
        items[root_of[p]].append((row, float(groups.best[p])))
    key = store.key
    out = []
    for group in items.values():
        group.sort(key=lambda item: item[0][key])
        out.append(DuplicateGroup(group, _choose(group, keep, key)))
    out.sort(key=lambda g: g.items[0][0][key])
    return out


def _choose(group: list[tuple[dict[str, Any], float]], keep: str | None, key: str) -> dict[str, Any] | None:
    """The row to keep: the first key, or the largest (max keeps the first of equals)."""
    if keep is None:
        return None
    rows = [row for row, _ in group]
    if keep == "first":
        return rows[0]
    if key == "text":
        return max(rows, key=lambda row: len(row["text"]))
    return max(rows, key=lambda row: (row.get("width", 0) * row.get("height", 0), row.get("size", 0)))
