"""Collections at scale: streamed exact search, the ANN index, dedup, and embedding on Ray Data.

Stores are built with numpy and the store's own writer (fast), or by the `siglip` command on tiny random-weight
checkpoints. Ray tests share one local cluster (``ray_address`` in conftest.py, 2 CPUs).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siglip.cli import main
from siglip.cli_utils import configure_logging
from siglip.dedup import find_duplicates
from siglip.index import StoreIndex, search_many, update_index_if_present
from siglip.store import EmbeddingStore, ShardWriter, StoreError, cosine_top_k, exact_search

from builders import write_checkpoint

REPO = Path(__file__).resolve().parents[1]


def write_store(
    root: Path,
    vectors: np.ndarray,
    rows: list[dict],
    shard_rows: int,
    *,
    kind: str = "image",
    storage_dtype: str = "float32",
    finished: bool = True,
) -> EmbeddingStore:
    """A store of ``vectors`` (normalised here) in shards of ``shard_rows``, as a finished (or killed) job leaves."""
    store = EmbeddingStore(root)
    manifest = {"kind": kind, "model": "m", "dim": vectors.shape[1], "normalized": True, "storage_dtype": storage_dtype}
    store.prepare(manifest)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    writer = ShardWriter(store, shard_rows)
    for start in range(0, len(rows), shard_rows):
        writer.add(rows[start : start + shard_rows], vectors[start : start + shard_rows].astype(np.float32))
    writer.flush()
    if finished:
        store.write_manifest(manifest, rows=len(rows))
    return store


def path_rows(n: int, start: int = 0) -> list[dict]:
    return [{"path": f"/photos/{i:06d}.jpg", "size": 1000 + i, "width": 10, "height": 10} for i in range(start, n)]


def clustered(n: int, dim: int, clusters: int, seed: int = 0, spread: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    return (centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim))).astype(np.float32)


def in_memory(store: EmbeddingStore, query: np.ndarray, k: int) -> list[tuple[str, float]]:
    rows, matrix = store.load()
    top, scores = cosine_top_k(matrix, query, k)
    return [(rows[i][store.key], float(s)) for i, s in zip(top, scores, strict=True)]


def keyed(hits) -> list[tuple[str, float]]:
    return [(row.get("path", row.get("text")), score) for row, score in hits]


# ------------------------------------------------------------------------------------------------------------
# Exact search, streamed
# ------------------------------------------------------------------------------------------------------------


def test_streamed_search_equals_in_memory_search(tmp_path):
    """Same keys, same scores to the bit, same order (ties by key) as cosine_top_k on load(); blocks smaller
    than shards; several queries at once give what each gives alone; --threshold keeps all rows above it."""
    vectors = clustered(2300, 24, 12)
    ties = np.zeros((40, 24), np.float32)
    ties[:, 0], ties[:, 1] = 0.6, 0.8  # 40 equal rows: their scores are exact in any summation order
    rows = path_rows(2340)
    rng = np.random.default_rng(3)
    order = rng.permutation(2340)  # keys in no particular order across shards
    store = write_store(tmp_path / "s", np.concatenate([vectors, ties])[order], [rows[i] for i in order], 500)
    queries = np.concatenate([clustered(5, 24, 12, seed=9), np.eye(24, dtype=np.float32)[:1]])
    for k in (1, 10, 57):
        together = exact_search(store, queries, k, block_rows=137)
        for q, query in enumerate(queries):
            expected = in_memory(store, query, k)
            alone = keyed(exact_search(store, query, k, block_rows=137)[0])
            assert alone == expected
            assert keyed(together[q]) == expected
    tied = keyed(exact_search(store, queries[-1], 12)[0])
    assert [s for _, s in tied] == [np.float32(0.6)] * 12 and [p for p, _ in tied] == sorted(p for p, _ in tied)
    everything = keyed(exact_search(store, queries[0], None, threshold=0.5)[0])
    expected = [(p, s) for p, s in in_memory(store, queries[0], 2340) if s >= np.float32(0.5)]
    assert everything == expected and 0 < len(expected) < 2340
    assert keyed(exact_search(store, queries[0], 3, threshold=0.5)[0]) == expected[:3]


def test_streamed_search_after_an_unfinished_job_skips_stale_duplicates(tmp_path):
    """A killed job leaves a key in two shards and no row count in the manifest: the stream reads the keys first
    and, like load(), uses the newest copy only."""
    vectors = clustered(300, 16, 4)
    rows = path_rows(300)
    store = write_store(tmp_path / "s", vectors, rows, 100, finished=False)
    newer = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    store.append(rows[:5], newer / np.linalg.norm(newer, axis=1, keepdims=True))
    query = newer[0]
    assert keyed(exact_search(store, query, 8, block_rows=64)[0]) == in_memory(store, query, 8)
    assert len(store.load()[0]) == 300


def test_a_batch_written_by_two_workers_is_read_once_and_compacted_to_one_copy(tmp_path):
    """What a Ray batch retried after its first worker had written its shard leaves: the same rows in two shards
    under two writers' names. Readers see one copy; the compaction that ends the job keeps one."""
    vectors = clustered(60, 8, 3)
    rows = path_rows(60)
    store = write_store(tmp_path / "s", vectors[:40], rows[:40], 20, finished=False)
    unit = vectors[40:] / np.linalg.norm(vectors[40:], axis=1, keepdims=True)
    for writer in ("00001a2b3f2a9c1e", "00001a2c77e0b5d4"):
        retried = ShardWriter(store, 100, writer=writer, first_seq=2)
        retried.add(rows[40:], unit)
        retried.flush()
    assert [name for name, _, _ in store.shards()][-2:] == ["000002-00001a2b3f2a9c1e", "000002-00001a2c77e0b5d4"]
    assert len(store.load()[0]) == 60
    assert keyed(exact_search(store, unit[3], 5)[0]) == in_memory(store, unit[3], 5)
    assert store.compact("path") == 60
    assert_no_key_twice(store.root)
    assert len(store.load()[0]) == 60


BOUNDED = r"""
import json, resource, sys
import numpy as np
from siglip.dedup import find_duplicates
from siglip.store import EmbeddingStore, exact_search

def vm_kb():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:"))

what, root, warm_root, cap_mb = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
query = np.load(sys.argv[5]) if len(sys.argv) > 5 else None
warm = EmbeddingStore(warm_root)  # touch every lazy allocator (BLAS, pyarrow) before the cap
exact_search(warm, np.ones(warm.read_manifest()["dim"], np.float32), 3)
find_duplicates(warm, 0.99, exact=True, block_rows=256)
limit = (vm_kb() + cap_mb * 1024) * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
store = EmbeddingStore(root)
try:
    if what == "search":
        print(json.dumps([[row["path"], score] for row, score in exact_search(store, query, 5)[0]]))
    elif what == "dedup":
        groups = find_duplicates(store, 0.99, exact=True, block_rows=512)
        print(json.dumps([[row["path"] for row, _ in group.items] for group in groups]))
    else:
        store.load()
        print("loaded")
except MemoryError:
    print("MemoryError")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
def test_search_and_dedup_run_in_bounded_memory(tmp_path):
    """A 123 MiB store searched, and a 12 MiB store deduplicated, by processes allowed 40 MiB and 6 MiB more address
    space than they use after their imports; loading the store whole in the same cap fails."""
    rng = np.random.default_rng(0)
    search_store = write_store(tmp_path / "big", rng.standard_normal((42000, 768), np.float32), path_rows(42000), 4096)
    dedup_vectors = rng.standard_normal((24000, 128), np.float32)
    dedup_vectors[100:120] = dedup_vectors[1000:1020] + 0.01 * rng.standard_normal((20, 128), np.float32)
    write_store(tmp_path / "dup", dedup_vectors, path_rows(24000), 2048)
    warm = {
        d: write_store(tmp_path / f"warm{d}", rng.standard_normal((600, d)), path_rows(600), 256) for d in (128, 768)
    }
    query = rng.standard_normal(768).astype(np.float32)
    np.save(tmp_path / "q.npy", query)
    sizes = {p: sum(f.stat().st_size for f in (tmp_path / p / "shards").iterdir()) >> 20 for p in ("big", "dup")}
    assert sizes["big"] >= 3 * 40 and sizes["dup"] >= 2 * 6, sizes
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1"}

    def bounded(what: str, root: str, cap_mb: int, dim: int) -> str:
        argv = [sys.executable, "-c", BOUNDED, what, str(tmp_path / root), str(warm[dim].root), str(cap_mb)]
        done = subprocess.run([*argv, str(tmp_path / "q.npy")], capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    expected = [[p, s] for p, s in in_memory(search_store, query, 5)]
    assert json.loads(bounded("search", "big", 40, 768)) == expected
    assert bounded("load", "big", 40, 768) == "MemoryError"
    groups = json.loads(bounded("dedup", "dup", 6, 128))
    assert groups == [[f"/photos/{i:06d}.jpg", f"/photos/{i + 900:06d}.jpg"] for i in range(100, 120)]


# ------------------------------------------------------------------------------------------------------------
# ANN index
# ------------------------------------------------------------------------------------------------------------


def test_index_returns_exact_scores_and_is_updated_incrementally(tmp_path):
    pytest.importorskip("usearch")
    vectors = clustered(3000, 32, 30, seed=1)
    store = write_store(tmp_path / "s", vectors, path_rows(3000), 500)
    for dtype in ("i8", "f16"):  # the second build replaces the first (other settings): a full build
        assert StoreIndex(store).build(dtype=dtype) == {"added": 3000, "removed": 0, "rows": 3000}
    queries = clustered(40, 32, 30, seed=2)
    approximate = search_many(store, queries, 10)
    exact = search_many(store, queries, 10, exact=True)
    every = exact_search(store, queries, None, threshold=-1.0)
    recall = []
    for ann, ex, full in zip(approximate, exact, every, strict=True):
        scores = dict(keyed(full))
        assert all(scores[path] == score for path, score in keyed(ann))  # exact scores, to the bit
        assert [s for _, s in ann] == sorted((s for _, s in ann), reverse=True)
        recall.append(len({p for p, _ in keyed(ann)} & {p for p, _ in keyed(ex)}) / 10)
    assert np.mean(recall) >= 0.9, recall

    # What `siglip embed` does to the shards when files change: two shards rewritten, one added.
    store.prepare(store.read_manifest())
    left = store.compact("path", ["/photos/000007.jpg", "/photos/002222.jpg"])
    new_vectors = clustered(100, 32, 30, seed=3)
    store.append(path_rows(3100, 3000), (new_vectors / np.linalg.norm(new_vectors, axis=1, keepdims=True)))
    store.write_manifest(store.read_manifest(), rows=left + 100)
    assert "update it with `siglip index" in StoreIndex(store).staleness()
    update_index_if_present(store)
    meta = StoreIndex(store).read_meta()
    assert set(meta["shards"]) == {name for name, _, _ in store.shards()} and meta["removed"] == 1000
    assert meta["rows"] == 3098 and meta["next_key"] == 3000 + 998 + 100  # only the changed shards re-added
    assert StoreIndex(store).staleness() is None
    hits = search_many(store, new_vectors[:3], 1)
    assert [keyed(h)[0][0] for h in hits] == [f"/photos/{i:06d}.jpg" for i in range(3000, 3003)]
    found = {p for h in search_many(store, vectors[[7, 2222]], 5) for p, _ in keyed(h)}
    assert not found & {"/photos/000007.jpg", "/photos/002222.jpg"}
    assert len(list((store.root / "index").iterdir())) == 2  # index.json and one graph


def test_a_stale_or_broken_index_falls_back_to_exact_search_with_a_note(tmp_path, capsys, monkeypatch):
    pytest.importorskip("usearch")
    store = write_store(tmp_path / "s", clustered(400, 16, 5), path_rows(400), 100)
    query = clustered(1, 16, 5, seed=4)[0]
    expected = in_memory(store, query, 5)
    StoreIndex(store).build()
    configure_logging(quiet=False)  # notes go to the "siglip" logger on (the captured) stderr
    store.append(path_rows(401, 400), np.eye(16, dtype=np.float32)[:1])  # a job still running
    assert keyed(search_many(store, query, 5)[0])[:5] == in_memory(store, query, 5)
    assert "is stale" in capsys.readouterr().err
    store.compact("path", ["/photos/000400.jpg"])
    assert keyed(search_many(store, query, 5)[0]) == expected and not capsys.readouterr().err

    monkeypatch.setattr("siglip.index._VIEWS", {})  # a process without usearch has no graph open either
    monkeypatch.setattr("siglip.index.require_usearch", lambda: (_ for _ in ()).throw(StoreError("no usearch")))
    assert keyed(search_many(store, query, 5)[0]) == expected
    assert "can't be used (no usearch)" in capsys.readouterr().err
    monkeypatch.undo()
    (store.root / "index" / StoreIndex(store).read_meta()["file"]).unlink()
    assert keyed(search_many(store, query, 5)[0]) == expected
    assert "graph file" in capsys.readouterr().err
    with pytest.raises(StoreError, match="missing; rebuild"):
        StoreIndex(store).update()
    assert StoreIndex(store).build()["rows"] == 400  # a missing graph is rebuilt
    assert keyed(search_many(store, query, 5, exact=True)[0]) == expected


# ------------------------------------------------------------------------------------------------------------
# dedup
# ------------------------------------------------------------------------------------------------------------


def test_dedup_groups_are_the_same_exactly_and_through_the_index(tmp_path):
    pytest.importorskip("usearch")
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((1500, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    basis, _ = np.linalg.qr(np.stack([vectors[10], *rng.standard_normal((2, 32))], axis=1))  # e, u1, u2
    e, u1, u2 = (basis[:, i] * (np.sign(basis[:, 0] @ vectors[10]) if i == 0 else 1) for i in range(3))
    angle = np.arccos(0.99)
    vectors[700] = vectors[10]  # an exact copy
    vectors[701] = np.cos(angle) * e + np.sin(angle) * u1  # a chain: 10 ~ 701 ~ 702 (0.99), but 10 !~ 702 (0.96)
    vectors[702] = np.cos(2 * angle) * e + np.sin(2 * angle) * u1
    vectors[1400] = 0.999 * vectors[5] + np.sqrt(1 - 0.999**2) * u2
    rows = path_rows(1500)
    rows[700] |= {"width": 40, "height": 40}  # the largest of its group
    store = write_store(tmp_path / "s", vectors, rows, 400)
    unit = store.load()[1]
    assert unit[10] @ unit[702] < 0.98 <= min(unit[10] @ unit[701], unit[701] @ unit[702])

    exact = find_duplicates(store, 0.98, exact=True, keep="largest", block_rows=128)
    assert [[row["path"] for row, _ in g.items] for g in exact] == [
        ["/photos/000005.jpg", "/photos/001400.jpg"],
        ["/photos/000010.jpg", "/photos/000700.jpg", "/photos/000701.jpg", "/photos/000702.jpg"],
    ]
    assert [g.keep["path"] for g in exact] == ["/photos/001400.jpg", "/photos/000700.jpg"]  # 1400: more bytes
    assert [row["path"] for row in exact[1].drop()] == [
        "/photos/000010.jpg",
        "/photos/000701.jpg",
        "/photos/000702.jpg",
    ]
    first = find_duplicates(store, 0.98, exact=True, keep="first")
    assert [g.keep["path"] for g in first] == ["/photos/000005.jpg", "/photos/000010.jpg"]
    StoreIndex(store).build()
    through_index = find_duplicates(store, 0.98, keep="largest")
    assert [(g.items, g.keep) for g in through_index] == [(g.items, g.keep) for g in exact]
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        find_duplicates(store, 1.5)


# ------------------------------------------------------------------------------------------------------------
# The commands, on a tiny checkpoint
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("scale") / "model", "siglip", seed=7)


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i:03d}.png"
        h, w = int(rng.integers(8, 60)), int(rng.integers(8, 60))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_embed_index_search_and_dedup_commands(model_dir, tmp_path, capsys):
    pytest.importorskip("usearch")
    images = make_images(tmp_path / "imgs", 12)
    copy = tmp_path / "imgs" / "copy.png"
    Image.open(images[3]).save(copy, compress_level=0)  # the same pixels in a larger file
    out = tmp_path / "store"
    embed = ["embed", tmp_path / "imgs", "-o", out, "--model", model_dir, "--num-workers", "0", "--shard-size", "4"]
    assert run(embed, capsys)[0] == 0
    code, _, err = run(["index", out, "-q"], capsys)
    assert code == 0 and "13 rows indexed" in err

    (tmp_path / "q.txt").write_text("a red square\n\nthe cat\n")
    common = ["--top-k", "3", "-q"]
    code, stdout, err = run(
        ["search", out, "a cat", "--image", images[5], "--texts", tmp_path / "q.txt", *common, "--format", "jsonl"],
        capsys,
    )
    assert code == 0 and "note" not in err
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [(x["query"], x["rank"]) for x in lines[:4]] == [
        ("a cat", 1),
        ("a cat", 2),
        ("a cat", 3),
        (str(images[5]), 1),
    ]
    assert lines[3]["path"] == str(images[5].resolve()) and lines[3]["kind"] == "image" and len(lines) == 12
    assert {"size", "mtime_ns", "width", "height"} <= set(lines[0])
    code, exact_out, _ = run(
        [
            "search",
            out,
            "a cat",
            "--image",
            images[5],
            "--texts",
            tmp_path / "q.txt",
            *common,
            "--format",
            "jsonl",
            "--exact",
        ],
        capsys,
    )
    assert [json.loads(line) for line in exact_out.splitlines()] == lines  # 13 rows: the graph finds them all
    code, stdout, _ = run(["search", out, "--image", images[5], "--format", "csv", *common], capsys)
    table = list(csv.DictReader(io.StringIO(stdout)))
    assert [r["rank"] for r in table] == ["1", "2", "3"] and table[0]["path"] == str(images[5].resolve())
    code, stdout, _ = run(["search", out, "--image", images[3], "--format", "paths", *common], capsys)
    assert sorted(stdout.split()[:2]) == sorted([str(images[3].resolve()), str(copy.resolve())])
    code, stdout, _ = run(["search", out, "a cat", "-q"], capsys)
    assert stdout.splitlines()[0].split() == ["rank", "score", "path"] and len(stdout.splitlines()) == 11
    code, stdout, _ = run(["search", out, "a cat", "--texts", tmp_path / "q.txt", "--format", "table", "-q"], capsys)
    assert stdout.startswith("# text: a cat\n") and "\n# text: the cat\n" in stdout
    code, stdout, _ = run(["search", out, "--image", images[5], "--threshold", "0.2", "--format", "json", "-q"], capsys)
    above = json.loads(stdout)
    assert above and all(h["score"] >= 0.2 for h in above)
    everything = json.loads(
        run(["search", out, "--image", images[5], "--format", "json", "--top-k", "20", "-q"], capsys)[1]
    )
    assert above == [h for h in everything if h["score"] >= np.float32(0.2)]

    code, stdout, _ = run(["dedup", out, "--threshold", "0.9999", "--keep", "largest", "-q"], capsys)
    groups = [json.loads(line) for line in stdout.splitlines()]
    assert len(groups) == 1 and groups[0]["keep"] == str(copy.resolve())
    assert groups[0]["drop"] == [str(images[3].resolve())] and groups[0]["size"] == 2
    code, stdout, _ = run(
        ["dedup", out, "--threshold", "0.9999", "--keep", "first", "--format", "csv", "--exact", "-q"], capsys
    )
    assert list(csv.reader(io.StringIO(stdout))) == [
        ["group", "path", "score", "keep"],
        ["0", str(copy.resolve()), "1", "1"],
        ["0", str(images[3].resolve()), "1", "0"],
    ]

    # embed keeps the index up to date: a file dropped, one added, no rebuild
    images[0].unlink()
    new = make_images(tmp_path / "more", 1, seed=9)[0]
    shutil.move(new, tmp_path / "imgs" / "new.png")
    code, _, err = run(embed, capsys)
    assert code == 0 and "index updated" in err
    assert StoreIndex(EmbeddingStore(out)).staleness() is None
    code, stdout, err = run(
        ["search", out, "--image", tmp_path / "imgs" / "new.png", "--format", "paths", *common], capsys
    )
    assert stdout.split()[0] == str((tmp_path / "imgs" / "new.png").resolve()) and "note" not in err


def test_search_refuses_an_empty_query_and_another_model(model_dir, tmp_path, capsys):
    make_images(tmp_path / "imgs", 3)
    out = tmp_path / "store"
    assert (
        run(["embed", tmp_path / "imgs", "-o", out, "--model", model_dir, "--num-workers", "0", "-q"], capsys)[0] == 0
    )
    code, _, err = run(["search", out, ""], capsys)
    assert code == 1 and "siglip: error: the text query '' is empty" in err
    (tmp_path / "q.txt").write_text("\n \n")
    code, _, err = run(["search", out, "--texts", tmp_path / "q.txt"], capsys)
    assert code == 1 and "--texts" in err and "has no queries" in err
    other = write_checkpoint(tmp_path / "other", "siglip", seed=8)
    code, _, err = run(["search", out, "a cat", "--model", other], capsys)
    assert code == 1 and f"holds embeddings made by {model_dir.resolve()}, not {other}" in err
    code, stdout, _ = run(["search", out, "a cat", "--model", model_dir, "-q", "--format", "paths"], capsys)
    assert code == 0 and len(stdout.split()) == 3  # the same model, named as given


def test_float16_storage_halves_the_shards(model_dir, tmp_path, capsys):
    make_images(tmp_path / "imgs", 6)
    common = ["--model", model_dir, "--num-workers", "0", "-q"]
    assert run(["embed", tmp_path / "imgs", "-o", tmp_path / "f32", *common], capsys)[0] == 0
    assert (
        run(["embed", tmp_path / "imgs", "-o", tmp_path / "f16", "--storage-dtype", "float16", *common], capsys)[0] == 0
    )
    half, full = EmbeddingStore(tmp_path / "f16"), EmbeddingStore(tmp_path / "f32")
    assert {np.load(npy).dtype for _, npy, _ in half.shards()} == {np.dtype(np.float16)}
    assert json.loads((tmp_path / "f16" / "manifest.json").read_text())["storage_dtype"] == "float16"
    rows16, matrix16 = half.load()
    rows32, matrix32 = full.load()
    assert rows16 == rows32 and matrix16.dtype == np.float32
    np.testing.assert_allclose(matrix16, matrix32, atol=1e-3)
    query = matrix32[2]
    assert [p for p, _ in keyed(exact_search(half, query, 3)[0])] == [
        p for p, _ in keyed(exact_search(full, query, 3)[0])
    ]
    code, _, err = run(["embed", tmp_path / "imgs", "-o", tmp_path / "f16", *common], capsys)
    assert code == 1 and "storage_dtype='float16', this run has storage_dtype='float32'" in err


def test_a_missing_extra_is_named(model_dir, tmp_path, capsys, monkeypatch):
    """Without usearch, `siglip index` says which extra to install; without Ray, `embed --engine ray` does (before
    the model loads), and so does the Python entry point."""
    from siglip.distributed import embed_images_on_ray

    make_images(tmp_path / "imgs", 2)
    out = tmp_path / "store"
    embed = ["embed", tmp_path / "imgs", "-o", out, "--model", model_dir, "--num-workers", "0", "-q"]
    assert run(embed, capsys)[0] == 0
    monkeypatch.setitem(sys.modules, "usearch.index", None)  # `import usearch.index` now raises ImportError
    monkeypatch.setitem(sys.modules, "ray", None)
    code, _, err = run(["index", out], capsys)
    assert code == 1 and "siglip: error: the ANN index needs usearch: pip install 'siglip[index]'" in err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the store's model is used; nothing is loaded before the Ray check
    code, _, err = run(["embed", tmp_path / "imgs", "-o", out, "--engine", "ray"], capsys)
    assert code == 1 and "siglip: error: --engine ray needs Ray Data: pip install 'siglip[ray]'" in err
    with pytest.raises(ImportError, match=r"pip install 'siglip\[ray\]'"):
        embed_images_on_ray([tmp_path / "imgs"], out, str(model_dir))


def test_help_of_the_new_commands_has_examples(capsys):
    for command in ("index", "dedup", "search", "embed"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and f"siglip {command}" in text


# ------------------------------------------------------------------------------------------------------------
# Ray
# ------------------------------------------------------------------------------------------------------------


def assert_no_key_twice(out: Path) -> None:
    store = EmbeddingStore(out)
    keys = [row["path"] for _, _, meta in store.shards() for row in store.read_shard_rows(meta)]
    assert len(keys) == len(set(keys)), "a row is stored twice"


def assert_same_store(out: Path, reference: Path) -> None:
    rows, matrix = EmbeddingStore(out).load()
    ref_rows, ref_matrix = EmbeddingStore(reference).load()
    assert rows == ref_rows
    np.testing.assert_allclose(matrix, ref_matrix, rtol=0, atol=1e-6)
    assert (out / "errors.jsonl").read_text() == (reference / "errors.jsonl").read_text()
    manifests = [json.loads((o / "manifest.json").read_text()) for o in (out, reference)]
    assert [{k: v for k, v in m.items() if k != "updated"} for m in manifests] == [
        {k: v for k, v in manifests[1].items() if k != "updated"}
    ] * 2


@pytest.fixture(scope="module")
def ray_folder(model_dir, tmp_path_factory):
    """40 images and 2 bad files, and the store a local `siglip embed` makes of them."""
    root = tmp_path_factory.mktemp("ray")
    make_images(root / "imgs", 40, seed=3)
    (root / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (root / "imgs" / "text.jpg").write_text("not an image")
    reference = root / "reference"
    argv = ["embed", root / "imgs", "-o", reference, "--model", model_dir, "--num-workers", "0", "-q"]
    assert main([str(a) for a in argv]) == 0
    return root / "imgs", reference


def _complete_shards(out: Path) -> list[str]:
    """Names of the shards whose metadata file is written (the shard is then complete)."""
    return sorted(p.stem for p in (out / "shards").glob("*.parquet")) if (out / "shards").is_dir() else []


def _embed_shards_actors() -> dict[int, object]:
    """{pid: process} of the live EmbedShards actors (Ray's workers, children of this process's cluster)."""
    import psutil

    found = {}
    for process in psutil.Process().children(recursive=True):
        try:
            if (process.cmdline() or [""])[0].startswith("ray::MapWorker(MapBatches(EmbedShards))"):
                found[process.pid] = process
        except psutil.Error:  # ended (or a zombie) since it was listed
            pass
    return found


def _writer_pid(shard: str) -> int | None:
    """The process id in a shard's writer name (``distributed.writer_name``); None for the driver's shards."""
    writer = shard.partition("-")[2]
    return int(writer[:8], 16) if writer else None


def _ray_argv(images: Path, out: Path, model: Path, address: str, *extra) -> list[str]:
    return [
        str(a)
        for a in [
            "embed",
            images,
            "-o",
            out,
            "--model",
            model,
            "--engine",
            "ray",
            "--address",
            address,
            "--num-workers",
            "2",
            "--cpus-per-worker",
            "0.5",
            "--batch-size",
            "2",
            "--shard-size",
            "2",
            *extra,
        ]
    ]


DRIVER = r"""
import sys
from siglip.distributed import embed_images_on_ray

images, out, model, address = sys.argv[1:]
embed_images_on_ray([images], out, model, address=address, num_workers=1, batch_size=2, shard_size=2, progress=False)
"""


def _kill_a_writing_worker(out: Path, job: threading.Thread, deadline: float) -> tuple[int | None, list[str]]:
    """SIGKILL the first live EmbedShards actor that has written a shard of ``out``; (its pid, the shards then)."""
    while job.is_alive() and time.monotonic() < deadline:
        shards = _complete_shards(out)
        actors = _embed_shards_actors()
        writers = [pid for pid in map(_writer_pid, shards) if pid in actors]
        if writers:
            actors[writers[0]].send_signal(signal.SIGKILL)
            return writers[0], shards
        time.sleep(0.01)
    return None, []


def test_a_pool_the_local_cluster_can_never_schedule_is_refused(ray_address, caplog):
    """Ray would wait forever for actors that a cluster started by the job can't place: the job refuses them, naming
    the flags; on a cluster given by --address (which may grow) it only warns."""
    import ray

    from siglip.distributed import _check_resources

    with pytest.raises(ValueError, match=r"needs 5 CPUs \(4 workers x 1 \+ 1 for decoding\); the cluster has 2 CPUs"):
        _check_resources(ray, 4, 1.0, 0.0, local=True)
    with pytest.raises(ValueError, match=r"needs 1 GPUs \(1 workers x 1\); the cluster has 2 CPUs and 0 GPUs"):
        _check_resources(ray, 1, 0.5, 1.0, local=True)
    _check_resources(ray, 2, 0.5, 0.0, local=True)  # what the tests below run
    _check_resources(ray, 4, 1.0, 0.0, local=False)
    assert "waiting for the autoscaler" in caplog.text


def test_ray_embed_resumes_after_a_killed_driver_and_survives_a_killed_worker(
    ray_address, ray_folder, model_dir, tmp_path, capsys
):
    """A Ray job's driver (the Python entry point, in its own process) is killed with SIGKILL after a few shards.
    `siglip embed --engine ray` then resumes it, embedding only what is missing, while one of its workers that has
    written shards is killed too (Ray retries that worker's batch elsewhere). The store equals the local run's:
    same rows, embeddings within 1e-6, the same errors.jsonl, no row twice."""
    images, reference = ray_folder
    out = tmp_path / "ray"
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(images), str(out), str(model_dir), ray_address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    try:
        while len(_complete_shards(out)) < 3:
            assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the driver wrote no shard in 300 s"
            time.sleep(0.01)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    while _embed_shards_actors():  # Ray ends a dead driver's actors; one job writes a store at a time
        assert time.monotonic() < deadline, "the killed driver's actors live on"
        time.sleep(0.1)
    partial = len(EmbeddingStore(out).load()[0])
    assert 0 < partial < 30, "the kill must land in the middle of the run"

    capsys.readouterr()
    done: list[int] = []
    job = threading.Thread(target=lambda: done.append(main(_ray_argv(images, out, model_dir, ray_address, "-q"))))
    job.start()
    killed, before = _kill_a_writing_worker(out, job, deadline)
    job.join(timeout=600)
    assert done == [0] and killed is not None, "a worker that wrote shards must be killed during the job"
    later = {name for name, _, _ in EmbeddingStore(out).shards()} - set(before)
    assert {_writer_pid(name) for name in later} - {killed, None}, "other workers wrote shards after the kill"
    summary = re.search(
        rf"40 images in {re.escape(str(out))} \((\d+) new at [\d.]+ img/s, (\d+) unreadable", capsys.readouterr().err
    )
    assert summary and summary.groups() == (str(40 - partial), "2")  # only the missing
    assert_no_key_twice(out)
    assert_same_store(out, reference)


# ------------------------------------------------------------------------------------------------------------
# Benchmark
# ------------------------------------------------------------------------------------------------------------


def test_scale_benchmark_runs_quick(tmp_path):
    pytest.importorskip("usearch")
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_scale.py"),
            "--quick",
            "--index-dtypes",
            "f16",
            "--workdir",
            str(tmp_path),
            "--out",
            str(tmp_path / "r.md"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "r.md").read_text()
    for row in ("index build", "recall@10", "query latency", "streamed exact search", "in-memory search"):
        assert row in report, row
