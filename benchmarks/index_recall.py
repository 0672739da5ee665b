"""recall@10 of a store's ANN index against exact search, at several ``expansion_search`` values (issue 17).

Takes a store indexed by ``siglip index`` (e.g. the 10^6-vector one ``bench_scale.py`` builds in its workdir), the
held-out queries (``queries.npy``, (m, D) float32) and each query's exact top 10 (``truth.json``: a list of m lists
of row keys), and searches through ``siglip.index.StoreIndex.search`` as ``siglip search`` does, overriding only
the graph's ``expansion_search`` (a query-time setting: no rebuild).

    python benchmarks/index_recall.py /tmp/scale_bench/full/store-1000000-768 /tmp/scale_bench/full 128 512 2048
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from siglip import index
from siglip.store import EmbeddingStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", help="an indexed store")
    parser.add_argument("workdir", help="folder with queries.npy and truth.json")
    parser.add_argument("expansion", nargs="+", type=int, help="expansion_search values to try")
    args = parser.parse_args(argv)
    queries = np.load(Path(args.workdir) / "queries.npy")
    truth = json.loads((Path(args.workdir) / "truth.json").read_text())
    store_index = index.StoreIndex(EmbeddingStore(args.store))
    stored = store_index.read_meta
    floor = index.EXPANSION_SEARCH
    try:
        for expansion in args.expansion:
            index.EXPANSION_SEARCH = expansion  # the search uses max(stored, this, 3 x top k)
            store_index.read_meta = lambda e=expansion: {**stored(), "expansion_search": e}  # noqa: B023
            started = time.perf_counter()
            hits = store_index.search(queries, 10)
            per_query = (time.perf_counter() - started) / len(queries)
            found = [len({row["path"] for row, _ in h} & set(t[:10])) / 10 for h, t in zip(hits, truth, strict=True)]
            print(f"expansion_search {expansion}: recall@10 {np.mean(found):.4f}, {per_query * 1000:.0f} ms a query")
    finally:
        index.EXPANSION_SEARCH = floor
    return 0


if __name__ == "__main__":
    sys.exit(main())
