"""Collections at scale, measured on this machine: the ANN index, streamed exact search, embedding on Ray.

    python benchmarks/bench_scale.py                   # 10^6 x 768 vectors; a section of benchmarks/RESULTS.md
    python benchmarks/bench_scale.py --quick --out -   # seconds (what the test suite runs)

* Index: a store of ``--vectors`` synthetic clustered 768-d vectors (``--vectors / 100`` Gaussian clusters, noise
  0.7 per dimension around unit-variance centres, written with the store's own writer), indexed with
  ``siglip index`` settings (usearch HNSW, f16 and i8): build time, peak RSS and file size; then ``--queries``
  held-out points searched one at a time through ``siglip.index.search`` (what ``siglip search`` and the server
  call): latency p50 / p95 and recall@10 against exact search.
* Exact search: one query streamed over the shards (memory-mapped blocks) against today's in-memory search
  (``load()`` then one matrix-vector product), in vectors/s and peak RSS, float32 and float16 shards.
* Ray: ``siglip embed`` of the same folder of JPEG files locally and with ``--engine ray`` on 1 and 2 workers (a
  local cluster started beforehand; its start-up is reported apart), with the bundled demo model.

Each measurement that reports memory runs in its own process (peak RSS is per process).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SECTION = "## Collections at scale (issue 17)"
SHARD_ROWS = 8192  # 24 MiB float32 shards at 768-d


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, it starts afresh at exec, not at the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------------------
# The synthetic store
# ------------------------------------------------------------------------------------------------------------


def centres(n_clusters: int, dim: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n_clusters, dim), dtype=np.float32)


def points(centre_table: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(centre_table), n)
    return centre_table[which] + 0.7 * rng.standard_normal((n, centre_table.shape[1]), dtype=np.float32)


def build_store(root: Path, n: int, dim: int, storage_dtype: str) -> float:
    """Write n clustered vectors into a store at ``root`` (reused when it is already complete); seconds taken."""
    from siglip.store import EmbeddingStore, ShardWriter

    store = EmbeddingStore(root)
    if store.exists() and store.read_manifest().get("rows") == n:
        return 0.0
    started = time.perf_counter()
    manifest = {"kind": "image", "model": "synthetic", "dim": dim, "normalized": True, "storage_dtype": storage_dtype}
    store.prepare(manifest)
    table = centres(max(1, n // 100), dim)
    writer = ShardWriter(store, SHARD_ROWS, seconds=float("inf"))
    for start in range(0, n, SHARD_ROWS):
        count = min(SHARD_ROWS, n - start)
        vectors = points(table, count, seed=1 + start)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        writer.add([{"path": f"/synthetic/{i:09d}.jpg"} for i in range(start, start + count)], vectors)
    writer.flush()
    store.write_manifest(manifest, rows=n)
    return time.perf_counter() - started


def queries(n: int, dim: int, count: int) -> np.ndarray:
    return points(centres(max(1, n // 100), dim), count, seed=10**9)


# ------------------------------------------------------------------------------------------------------------
# Workers (each in its own process, for its peak RSS)
# ------------------------------------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> dict:
    from siglip.index import StoreIndex, search_many
    from siglip.store import EmbeddingStore, cosine_top_k, exact_search

    store = EmbeddingStore(args.store)
    qs = np.load(args.query_file)
    out: dict = {}
    if args.worker == "streamed":
        exact_search(store, qs[0], 10)  # warm the page cache like the in-memory case
        started = time.perf_counter()
        for q in qs:
            exact_search(store, q, 10)
        out["seconds_per_query"] = (time.perf_counter() - started) / len(qs)
    elif args.worker == "memory":
        started = time.perf_counter()
        rows, matrix = store.load()
        out["load_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        for q in qs:
            cosine_top_k(matrix, q, 10)
        out["seconds_per_query"] = (time.perf_counter() - started) / len(qs)
    elif args.worker == "build":
        settings = json.loads(args.settings)
        started = time.perf_counter()
        StoreIndex(store).build(**settings)
        out["build_seconds"] = time.perf_counter() - started
        meta = StoreIndex(store).read_meta()
        out["file_mib"] = (store.root / "index" / meta["file"]).stat().st_size / 2**20
    elif args.worker == "ann":
        truth = json.loads(Path(args.truth).read_text())
        latencies, recalls = [], []
        search_many(store, qs[:1], 10)
        for q, expected in zip(qs, truth, strict=True):
            started = time.perf_counter()
            hits = search_many(store, q, 10)[0]
            latencies.append(time.perf_counter() - started)
            recalls.append(len({row["path"] for row, _ in hits} & set(expected)) / len(expected))
        out |= {
            "p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "p95_ms": 1000 * float(np.percentile(latencies, 95)),
            "recall": float(np.mean(recalls)),
        }
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def run_worker(kind: str, store: Path, query_file: Path, **extra: str) -> dict:
    argv = [sys.executable, __file__, "--worker", kind, "--store", str(store), "--query-file", str(query_file)]
    for key, value in extra.items():
        argv += [f"--{key}", value]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"worker {kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------------
# The measurements
# ------------------------------------------------------------------------------------------------------------


def bench_search(rows: list, workdir: Path, n: int, dim: int, n_queries: int, index_dtypes: list[str]) -> None:
    from siglip.index import CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH
    from siglip.store import EmbeddingStore, exact_search

    store_root = workdir / f"store-{n}-{dim}"
    seconds = build_store(store_root, n, dim, "float32")
    store = EmbeddingStore(store_root)
    size = sum(p.stat().st_size for p in store.shard_dir.iterdir()) / 2**20
    print(f"store: {n} x {dim} float32, {size:.0f} MiB, written in {seconds:.0f}s", flush=True)
    qs = queries(n, dim, n_queries)
    query_file = workdir / "queries.npy"
    np.save(query_file, qs)
    started = time.perf_counter()
    truth = [[row["path"] for row, _ in hits] for hits in exact_search(store, qs, 10)]
    batch = time.perf_counter() - started
    truth_file = workdir / "truth.json"
    truth_file.write_text(json.dumps(truth))
    rows.append(
        (
            f"streamed exact search, {n_queries} queries at once",
            f"{n * n_queries / batch:.3g} vec/s",
            f"{batch:.1f}s for all; the recall ground truth",
        )
    )

    few = workdir / "few.npy"
    np.save(few, qs[:3])
    memory = run_worker("memory", store_root, few)
    streamed = run_worker("streamed", store_root, few)
    rows.append(
        (
            "in-memory search (load, then one product), float32",
            f"{n / memory['seconds_per_query']:.3g} vec/s",
            f"peak RSS {memory['peak_rss_mib']:.0f} MiB; load {memory['load_seconds']:.1f}s",
        )
    )
    rows.append(
        (
            "streamed exact search, one query, float32 shards",
            f"{n / streamed['seconds_per_query']:.3g} vec/s",
            f"peak RSS {streamed['peak_rss_mib']:.0f} MiB; "
            f"{memory['seconds_per_query'] / streamed['seconds_per_query']:.2f}x in-memory",
        )
    )
    half_root = workdir / f"store-{n}-{dim}-f16"
    build_store(half_root, n, dim, "float16")
    half = run_worker("streamed", half_root, few)
    rows.append(
        (
            "streamed exact search, one query, float16 shards",
            f"{n / half['seconds_per_query']:.3g} vec/s",
            f"peak RSS {half['peak_rss_mib']:.0f} MiB; "
            f"{memory['seconds_per_query'] / half['seconds_per_query']:.2f}x in-memory; half the disk",
        )
    )

    for dtype in index_dtypes:
        settings = {"dtype": dtype, "progress": False}
        build = run_worker("build", store_root, few, settings=json.dumps(settings))
        ann = run_worker("ann", store_root, query_file, truth=str(truth_file))
        label = f"usearch HNSW {dtype} (M={CONNECTIVITY}, ef_add={EXPANSION_ADD}, ef_search={EXPANSION_SEARCH})"
        rows.append(
            (
                f"index build, {label}",
                f"{build['build_seconds']:.0f} s",
                f"{n / build['build_seconds']:.0f} vec/s; peak RSS {build['peak_rss_mib']:.0f} MiB; "
                f"file {build['file_mib']:.0f} MiB",
            )
        )
        rows.append(
            (
                f"query latency through the index, {dtype}",
                f"p50 {ann['p50_ms']:.1f} ms",
                f"p95 {ann['p95_ms']:.1f} ms; exact scores read back from the shards",
            )
        )
        rows.append(
            (
                f"recall@10 against exact search, {dtype}",
                f"{ann['recall']:.4f}",
                f"{n_queries} held-out queries; peak RSS {ann['peak_rss_mib']:.0f} MiB",
            )
        )
        print(rows[-3:], flush=True)


def bench_ray(rows: list, workdir: Path, n_images: int, address: str | None) -> None:
    import ray
    import ray.data

    from bench_preprocess import write_jpegs
    from siglip.cli import main as siglip_main

    folder = workdir / f"jpegs-{n_images}"
    if not folder.is_dir() or len(list(folder.iterdir())) != n_images:
        folder.mkdir(parents=True, exist_ok=True)
        write_jpegs(folder, n_images)
    cpus = os.cpu_count() or 1
    common = ["--model", "siglip-demo", "-q", "--shard-size", "64"]

    def timed(out: Path, *extra: str) -> float:
        if out.exists():
            shutil.rmtree(out)
        started = time.perf_counter()
        assert siglip_main(["embed", str(folder), "-o", str(out), *common, *extra]) == 0
        return time.perf_counter() - started

    local = timed(workdir / "local.emb")
    rows.append(
        (
            f"local `siglip embed`, {n_images} JPEG 640x480",
            f"{n_images / local:.1f} img/s",
            f"{local:.1f}s, demo model, default decoding workers",
        )
    )
    started = time.perf_counter()
    ray.init(address=address, num_cpus=None if address else cpus, include_dashboard=False, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows.append(("Ray local cluster start", f"{time.perf_counter() - started:.1f} s", "not counted below"))
    for workers in (1, 2):
        share = f"{max(0.25, (cpus - 1) / workers):g}"
        seconds = timed(
            workdir / f"ray{workers}.emb", "--engine", "ray", "--num-workers", str(workers), "--cpus-per-worker", share
        )
        rows.append(
            (
                f"`siglip embed --engine ray`, {workers} worker(s) x {share} CPU",
                f"{n_images / seconds:.1f} img/s",
                f"{seconds:.1f}s; {local / seconds:.2f}x local (actor start-up included)",
            )
        )
        print(rows[-1], flush=True)
    ray.shutdown()


def write_section(out: str, text: str) -> None:
    """Replace this benchmark's section of ``out`` (or append it)."""
    if out == "-":
        return
    path = Path(out)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if SECTION in old:
        before, _, after = old.partition(SECTION)
        rest = after.split("\n## ", 1)
        old = before.rstrip() + ("\n\n## " + rest[1] if len(rest) > 1 else "")
    path.write_text((old.rstrip() + "\n\n" if old.strip() else "") + text, encoding="utf-8")
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds; for the tests)")
    parser.add_argument("--vectors", type=int, default=None, help="vectors in the store (default 10^6)")
    parser.add_argument("--queries", type=int, default=None, help="held-out queries for latency and recall")
    parser.add_argument("--images", type=int, default=None, help="JPEG files for the Ray comparison")
    parser.add_argument("--index-dtypes", default="f16,i8", help="index dtypes to build (default: f16,i8)")
    parser.add_argument("--no-ray", dest="ray", action="store_false", help="skip the Ray comparison")
    parser.add_argument("--ray-address", default=None, help="use this Ray cluster instead of starting one")
    parser.add_argument("--workdir", default=None, help="where stores and images are built (reused between runs)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"), help="markdown file to put the section in, or -")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--truth", help=argparse.SUPPRESS)
    parser.add_argument("--query-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    n = args.vectors or (3000 if args.quick else 10**6)
    n_queries = args.queries or (20 if args.quick else 200)
    n_images = args.images or (8 if args.quick else 400)
    if args.quick and not args.ray_address:
        args.ray = False  # a Ray cluster takes longer to start than the rest of the quick run
    workdir = Path(
        args.workdir or Path(tempfile.gettempdir()) / ("siglip-scale-quick" if args.quick else "siglip-scale")
    )
    workdir.mkdir(parents=True, exist_ok=True)

    import siglip
    from bench_preprocess import cpu_name

    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    machine = f"{cpu_name()}, {os.cpu_count()} cores, {memory:.0f} GiB, numpy {np.__version__}"
    machine += f", usearch {_version('usearch')}, ray {_version('ray')}, siglip {siglip.__version__}"
    print(f"machine: {machine}", flush=True)
    rows: list[tuple[str, str, str]] = []
    started = time.perf_counter()
    load_before = os.getloadavg()
    bench_search(rows, workdir, n, 768, n_queries, [d for d in args.index_dtypes.split(",") if d])
    if args.ray:
        bench_ray(rows, workdir, n_images, args.ray_address)
    load = "load average (1, 5, 15 min) at the start {:.1f} {:.1f} {:.1f}, at the end {:.1f} {:.1f} {:.1f}".format(
        *load_before, *os.getloadavg()
    )
    command = "python benchmarks/bench_scale.py" + (" --quick" if args.quick else "")
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    text = (
        f"{SECTION}\n\nCommand: `{command}` ({time.perf_counter() - started:.0f}s in all)\n\nMachine: {machine}; "
        f"{load} (the machine is shared: ratios are same-run comparisons)\n\n"
        f"Store: {n} synthetic clustered 768-d vectors ({max(1, n // 100)} clusters), float32 shards of "
        f"{SHARD_ROWS} rows; {n_queries} held-out queries.\n\n"
        f"| measurement | value | note |\n|---|---:|---|\n{table}\n"
    )
    print(text)
    write_section(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
