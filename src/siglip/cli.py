"""The ``siglip`` command: ``classify``, ``embed``, ``search``, ``index``, ``dedup`` (and ``train``, from
``siglip.train``).

Results go to stdout, progress and logs to stderr. A failure exits non-zero with one line
``siglip: error: <reason>``; unreadable images in batch jobs are skipped, reported on stderr and (for ``embed``)
listed in ``OUT/errors.jsonl``. This module parses arguments and prints: the work is done by ``jobs.py`` (on a
pipeline from ``pipelines.py``); training by ``siglip.train``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli_utils import CLIError, configure_logging, positive, run_reporting_errors
from .data import default_workers
from .files import DEMO_MODEL, CheckpointError
from .version import __version__

DEFAULT_MODEL = "google/siglip2-base-patch16-224"

log = logging.getLogger("siglip")

# ------------------------------------------------------------------------------------------------------------
# Shared options and model loading
# ------------------------------------------------------------------------------------------------------------


def add_model_options(parser: argparse.ArgumentParser, model_default: str | None = DEFAULT_MODEL) -> None:
    group = parser.add_argument_group("model and runtime")
    group.add_argument(
        "--model",
        default=model_default,
        help=f"checkpoint folder, hub id, or '{DEMO_MODEL}' for the bundled demo model (default: {model_default})",
    )
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available; default)")
    group.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights dtype (default: auto)",
    )
    group.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: 16)")
    group.add_argument(
        "--num-workers",
        type=int,
        default=default_workers(),
        help="processes decoding images ahead of the model (default: %(default)s; 0 decodes in the main process); "
        "with embed --engine ray: the number of model actors",
    )
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bar or info messages")


def load_pipeline(args: argparse.Namespace, model: str | None = None) -> Any:
    """The zero-shot pipeline for ``--model`` with ``--device`` / ``--dtype`` / ``--batch-size``."""
    from .pipelines import pipeline

    name = model or args.model
    device_map = "auto" if args.device == "auto" else None
    device = None if args.device == "auto" else args.device
    started = time.perf_counter()
    try:
        pipe = pipeline(
            "zero-shot-image-classification",
            model=name,
            dtype=args.dtype,
            device=device,
            device_map=device_map,
            batch_size=positive("--batch-size", args.batch_size),
        )
    except CheckpointError as e:
        raise CLIError(f"{e} (use --model PATH for a local checkpoint folder, or --model {DEMO_MODEL})") from None
    log.info("loaded %s (%s, %s) in %.1fs", name, pipe.device, pipe.dtype, time.perf_counter() - started)
    return pipe


# ------------------------------------------------------------------------------------------------------------
# classify
# ------------------------------------------------------------------------------------------------------------

CLASSIFY_EXAMPLES = """examples:
  siglip classify cat.jpg --labels cat dog bird
  siglip classify photos/ --labels-file labels.txt --top-k 3 --format csv > scores.csv
  siglip classify shapes.png --model siglip-demo --labels "red circle" "blue square" --template "a {}"
"""


def _read_labels(args: argparse.Namespace) -> list[str]:
    labels = list(args.labels or [])
    if args.labels_file:
        try:
            text = Path(args.labels_file).read_text(encoding="utf-8")
        except OSError as e:
            raise CLIError(f"cannot read --labels-file {args.labels_file}: {e.strerror or e}") from None
        labels += [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise CLIError("no labels: pass --labels A B ... or --labels-file FILE")
    return labels


def cmd_classify(args: argparse.Namespace) -> int:
    from .jobs import classify_images
    from .pipelines import check_labels

    labels = check_labels(_read_labels(args), args.template)
    pipe = load_pipeline(args)
    done = classify_images(
        pipe,
        args.images,
        labels,
        args.template,
        top_k=args.top_k,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        progress=not args.quiet,
    )
    for _, message in done.failures:
        print(f"siglip: skipped {message}", file=sys.stderr)
    _print_classification(done.results, args.format)
    if not done.results:
        raise CLIError(f"none of the {len(done.failures)} images could be read")
    return 0


def _print_classification(results: list[tuple[str, list[dict[str, Any]]]], fmt: str) -> None:
    out = sys.stdout
    if fmt == "json":
        json.dump([{"image": name, "scores": ranked} for name, ranked in results], out, indent=2, ensure_ascii=False)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["image", "rank", "label", "score"])
        for name, ranked in results:
            for rank, item in enumerate(ranked, 1):
                writer.writerow([name, rank, item["label"], f"{item['score']:.6g}"])
    else:
        width = max([len("image")] + [len(name) for name, _ in results])
        k = max((len(r) for _, r in results), default=0)
        header = "image".ljust(width) + "".join(f"  {'#' + str(i + 1):<24}" for i in range(k))
        out.write(header.rstrip() + "\n")
        for name, ranked in results:
            cells = "".join(f"  {item['label'][:16] + ' ' + format(item['score'], '.4f'):<24}" for item in ranked)
            out.write((name.ljust(width) + cells).rstrip() + "\n")


# ------------------------------------------------------------------------------------------------------------
# embed
# ------------------------------------------------------------------------------------------------------------

EMBED_EXAMPLES = """examples:
  siglip embed photos/ --output photos.emb            # every image under photos/, recursively
  siglip embed photos/ --output photos.emb            # again: only new or changed files are embedded
  siglip embed --texts captions.txt --output captions.emb
  siglip embed a.jpg b.png --output small.emb --model siglip-demo --num-workers 0
  siglip embed photos/ --output photos.emb --storage-dtype float16    # half the disk and I/O
  siglip embed /nfs/photos --output /nfs/photos.emb --engine ray --address auto --num-workers 8 --gpus-per-worker 1

Output: OUT/manifest.json, OUT/shards/NNNNNN.npy (+ .parquet or .jsonl metadata: path, size, mtime, width,
height), OUT/errors.jsonl (files that could not be read). Interrupted runs resume where they stopped.
With --engine ray, Ray Data decodes the files and a pool of --num-workers actors runs the model; OUT and the
images must be on storage every node of the cluster sees. An index in OUT (`siglip index`) is kept up to date.
"""


def cmd_embed(args: argparse.Namespace) -> int:
    from .store import EmbeddingStore

    if bool(args.texts) == bool(args.inputs):
        raise CLIError("give image files/folders to embed, or --texts FILE (not both)")
    positive("--shard-size", args.shard_size)
    store = EmbeddingStore(args.output)
    if args.texts:
        if args.engine != "local":
            raise CLIError("--engine ray embeds images; embed --texts without it")
        return _embed_texts(args, store)
    if args.engine == "ray":
        return _embed_images_on_ray(args, store)
    return _embed_images(args, store)


def _embed_images(args: argparse.Namespace, store: Any) -> int:
    from .jobs import embed_images

    options = _image_job_options(args)
    report = embed_images(load_pipeline(args), args.inputs, store, args.model, num_workers=args.num_workers, **options)
    _print_embed_report(args, report)
    return 0


def _image_job_options(args: argparse.Namespace) -> dict[str, Any]:
    """What a local and a Ray image job take alike from the command line."""
    return {
        "batch_size": args.batch_size,
        "shard_size": args.shard_size,
        "storage_dtype": args.storage_dtype,
        "progress": not args.quiet,
        "on_skip": None if args.quiet else _print_skipped,
        "log": log.info,
    }


def _embed_images_on_ray(args: argparse.Namespace, store: Any) -> int:
    from .distributed import embed_images_on_ray, require_ray

    try:
        require_ray()
    except ImportError as e:
        raise CLIError(str(e)) from None
    positive("--num-workers", args.num_workers)
    if args.cpus_per_worker <= 0 or args.gpus_per_worker < 0:
        raise CLIError("--cpus-per-worker must be more than 0 and --gpus-per-worker at least 0")
    args.device = "cpu"  # the driver's copy of the model only describes the store; the actors run it
    report = embed_images_on_ray(
        args.inputs,
        store,
        args.model,
        pipe=load_pipeline(args),
        address=args.address,
        num_workers=args.num_workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        dtype=args.dtype,
        **_image_job_options(args),
    )
    _print_embed_report(args, report)
    return 0


def _print_embed_report(args: argparse.Namespace, report: Any) -> None:
    where = f", listed in {Path(args.output) / 'errors.jsonl'}" if report.failures else ""
    print(
        f"{report.total} images in {args.output} ({report.written} new, {len(report.failures)} unreadable{where})",
        file=sys.stderr,
    )


def _print_skipped(failures: list[tuple[str, str]]) -> None:
    for _, message in failures:
        print(f"siglip: skipped {message}", file=sys.stderr)


def _text_lines(path: str) -> list[str]:
    """The non-empty lines of a --texts file, stripped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CLIError(f"cannot read --texts {path}: {getattr(e, 'strerror', None) or e}") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise CLIError(f"{path} has no non-empty lines")
    return texts


def _embed_texts(args: argparse.Namespace, store: Any) -> int:
    from .jobs import embed_texts

    texts = _text_lines(args.texts)
    pipe = load_pipeline(args)
    report = embed_texts(
        pipe,
        texts,
        store,
        args.model,
        batch_size=max(args.batch_size, 32),
        shard_size=args.shard_size,
        storage_dtype=args.storage_dtype,
        progress=not args.quiet,
        log=log.info,
    )
    print(f"{report.total} texts in {args.output} ({report.written} new)", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------------------
# search
# ------------------------------------------------------------------------------------------------------------

SEARCH_EXAMPLES = """examples:
  siglip search photos.emb "a dog on a beach"
  siglip search photos.emb --image query.jpg --top-k 5
  siglip search photos.emb "sunset" --format paths | xargs -I{} cp {} picks/
  siglip search photos.emb --texts queries.txt --threshold 0.12 --format jsonl > hits.jsonl
  siglip search photos.emb "a red car" --exact          # ignore the index: exact search, streamed

Queries: a text, --image PATH (repeatable), --texts FILE (one query a line); one block of results each.
The model is the store's (--model must name the same one). With an index (`siglip index`) that is up to date,
the search is approximate and its results carry their exact scores; otherwise it is exact, streamed over the
shards with bounded memory. --threshold keeps results scoring at least T (all of them unless --top-k is given).
"""

INDEX_EXAMPLES = """examples:
  siglip index photos.emb                       # HNSW (usearch), cosine, float16 vectors
  siglip index photos.emb --dtype i8            # int8 vectors: a quarter of float32's memory

The index lives in OUT/index/ and covers the store's shards; `siglip embed` updates it when it adds, changes or
drops rows (no rebuild). Running `siglip index` again updates it, or rebuilds it with other settings.
"""

DEDUP_EXAMPLES = """examples:
  siglip dedup photos.emb --threshold 0.95                     # JSON Lines, one group a line
  siglip dedup photos.emb --threshold 0.95 --keep largest --format csv > dupes.csv
  siglip dedup photos.emb --threshold 0.98 --keep first | jq -r '.drop[]'

Groups are connected sets of rows with cosine >= T. With a fresh index, each row's nearest neighbours are
compared (fast on large stores); --exact (or no index) compares every pair, block by block, in bounded memory.
--keep first keeps the first path in each group, --keep largest the one with the most pixels (then bytes).
"""

SEARCH_FORMATS = ("table", "json", "jsonl", "csv", "paths")


def _search_queries(args: argparse.Namespace) -> list[tuple[str, str]]:
    queries = [] if args.query is None else [("text", args.query)]
    queries += [("image", image) for image in args.image or []]
    if args.texts:
        queries += [("text", text) for text in _text_lines(args.texts)]
    if not queries:
        raise CLIError("give a text query, --image PATH or --texts FILE")
    return queries


def cmd_search(args: argparse.Namespace) -> int:
    from .jobs import check_queries, check_store_model, search_queries
    from .store import EmbeddingStore

    queries = check_queries(_search_queries(args))  # before the model loads
    positive("--top-k", args.top_k)
    top_k = args.top_k if args.top_k is not None or args.threshold is not None else 10
    if args.threshold is not None and not -1 <= args.threshold <= 1:
        raise CLIError(f"--threshold is a cosine similarity in [-1, 1], got {args.threshold}")
    store = EmbeddingStore(args.store)
    pipe = load_pipeline(args, model=check_store_model(store.read_manifest(), args.model, args.store))
    results = search_queries(pipe, store, queries, top_k=top_k, threshold=args.threshold, exact=args.exact)
    _print_search(queries, results, store.key, "paths" if args.paths_only else args.format)
    return 0


def _print_search(queries: list[tuple[str, str]], results: list[list[Any]], key: str, fmt: str) -> None:
    out = sys.stdout
    several = len(queries) > 1
    if fmt == "json":
        blocks = [
            [{"rank": r + 1, "score": score, key: row[key]} for r, (row, score) in enumerate(hits)] for hits in results
        ]
        data = [{"query": q, "kind": kind, "results": b} for (kind, q), b in zip(queries, blocks, strict=True)]
        json.dump(data if several else blocks[0], out, indent=2, ensure_ascii=False)
        out.write("\n")
    elif fmt == "jsonl":
        for (kind, query), hits in zip(queries, results, strict=True):
            for rank, (row, score) in enumerate(hits, 1):
                line = {"query": query, "kind": kind, "rank": rank, "score": score, **row}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["query", "kind", "rank", "score", key])
        for (kind, query), hits in zip(queries, results, strict=True):
            for rank, (row, score) in enumerate(hits, 1):
                writer.writerow([query, kind, rank, f"{score:.6g}", row[key]])
    else:
        for i, ((kind, query), hits) in enumerate(zip(queries, results, strict=True)):
            if several:
                out.write(("\n" if i else "") + (f"# {kind}: {query}\n" if fmt == "table" else ""))
            if fmt == "paths":
                out.writelines(f"{row[key]}\n" for row, _ in hits)
                continue
            out.write(f"{'rank':>4}  {'score':>7}  {key}\n")
            out.writelines(f"{rank:>4}  {score:>7.4f}  {row[key]}\n" for rank, (row, score) in enumerate(hits, 1))


def cmd_index(args: argparse.Namespace) -> int:
    from .index import StoreIndex
    from .store import EmbeddingStore

    store = EmbeddingStore(args.store)
    store.read_manifest()
    started = time.perf_counter()
    done = StoreIndex(store).build(backend=args.backend, metric=args.metric, dtype=args.dtype, progress=not args.quiet)
    print(
        f"{done['rows']} rows indexed in {Path(args.store) / 'index'} ({args.backend}, {args.metric}, {args.dtype}): "
        f"{done['added']} added, {done['removed']} removed in {time.perf_counter() - started:.1f}s",
        file=sys.stderr,
    )
    return 0


def cmd_dedup(args: argparse.Namespace) -> int:
    from .dedup import find_duplicates
    from .store import EmbeddingStore

    store = EmbeddingStore(args.store)
    key = store.key
    groups = find_duplicates(store, args.threshold, exact=args.exact, keep=args.keep, progress=not args.quiet)
    out = sys.stdout
    if args.format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["group", key, "score"] + (["keep"] if args.keep else []))
        for number, group in enumerate(groups):
            for row, score in group.items:
                keep = [int(row is group.keep)] if args.keep else []
                writer.writerow([number, row[key], f"{score:.6g}", *keep])
    else:
        for number, group in enumerate(groups):
            line: dict[str, Any] = {
                "group": number,
                "size": len(group.items),
                "items": [{key: row[key], "score": score} for row, score in group.items],
            }
            if args.keep:
                line |= {"keep": group.keep[key], "drop": [row[key] for row in group.drop()]}
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    duplicates = sum(len(g.items) - 1 for g in groups)
    print(
        f"{len(groups)} groups of near-duplicates (cosine >= {args.threshold:g}), {duplicates} rows could go",
        file=sys.stderr,
    )
    return 0


# ------------------------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------------------------


def _store_command(sub: Any, name: str, epilog: str, **texts: str) -> argparse.ArgumentParser:
    """A subcommand that works on a store: its parser, with the store argument."""
    p = sub.add_parser(name, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter, **texts)
    p.add_argument("store", metavar="OUT", help="folder written by `siglip embed`")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siglip",
        description="SigLIP / SigLIP2 image-text models: zero-shot classification, embeddings, search, training.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="run `siglip COMMAND --help` for a command's options and examples",
    )
    parser.add_argument("--version", action="version", version=f"siglip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "classify",
        help="zero-shot classify images against labels",
        epilog=CLASSIFY_EXAMPLES,
        formatter_class=fmt,
        description="Score each image against every label (sigmoid scores).",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files, folders (recursive) or URLs")
    p.add_argument("--labels", nargs="+", metavar="LABEL", help="candidate labels")
    p.add_argument("--labels-file", metavar="FILE", help="file with one label per line")
    p.add_argument("--template", default="This is a photo of {}.", help="prompt template (default: %(default)r)")
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="only the K best labels per image")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table", help="output format (default: table)")
    add_model_options(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser(
        "embed",
        help="embed a folder of images (or lines of text) into a resumable store",
        epilog=EMBED_EXAMPLES,
        formatter_class=fmt,
        description="Write L2-normalised embeddings to OUT; re-running updates OUT incrementally.",
    )
    p.add_argument("inputs", nargs="*", metavar="DIR_OR_FILES", help="image files or folders (recursive)")
    p.add_argument("--output", "-o", required=True, metavar="OUT", help="output folder (created or updated)")
    p.add_argument("--texts", metavar="FILE", help="embed the lines of FILE instead of images")
    p.add_argument("--shard-size", type=int, default=1024, metavar="N", help="rows per shard file (default: 1024)")
    p.add_argument(
        "--storage-dtype",
        choices=["float32", "float16"],
        default="float32",
        help="dtype of the stored embeddings (float16 halves disk and I/O; default: float32, fixed per store)",
    )
    add_model_options(p)
    ray_group = p.add_argument_group("distributed embedding on Ray Data (pip install 'siglip[ray]')")
    ray_group.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process (default); ray: Ray Data decodes, an actor pool of --num-workers runs the model",
    )
    ray_group.add_argument(
        "--address", metavar="ADDR", help="Ray cluster to join: auto, HOST:PORT or ray://HOST:10001 (default: local)"
    )
    ray_group.add_argument(
        "--cpus-per-worker", type=float, default=1.0, metavar="C", help="CPUs each model actor reserves (default: 1)"
    )
    ray_group.add_argument(
        "--gpus-per-worker", type=float, default=0.0, metavar="G", help="GPUs each model actor uses (default: 0)"
    )
    p.set_defaults(func=cmd_embed)

    p = _store_command(
        sub,
        "search",
        SEARCH_EXAMPLES,
        help="cosine search in a store made by `siglip embed` (through its index when it has one)",
        description="Rank the stored embeddings by cosine similarity to texts or images.",
    )
    p.add_argument("query", nargs="?", help="text query")
    p.add_argument("--image", metavar="PATH", action="append", help="an image as a query (repeatable)")
    p.add_argument("--texts", metavar="FILE", help="text queries, one a line")
    p.add_argument("--top-k", type=int, metavar="K", help="results per query (default: 10; all with --threshold)")
    p.add_argument("--threshold", type=float, metavar="T", help="only results with cosine >= T")
    p.add_argument("--exact", action="store_true", help="exact search even when the store has an index")
    p.add_argument("--format", choices=SEARCH_FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--paths-only", action="store_true", help="the same as --format paths")
    add_model_options(p, model_default=None)
    p.set_defaults(func=cmd_search)

    p = _store_command(
        sub,
        "index",
        INDEX_EXAMPLES,
        help="build or update the ANN index of a store (pip install 'siglip[index]')",
        description="Index a store for fast approximate search; `siglip embed` keeps the index up to date.",
    )
    p.add_argument("--backend", choices=["usearch"], default="usearch", help="index library (default: usearch)")
    p.add_argument("--metric", choices=["cos"], default="cos", help="similarity (default: cos)")
    p.add_argument(
        "--dtype", choices=["f16", "i8", "f32"], default="f16", help="dtype of the indexed vectors (default: f16)"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_index)

    p = _store_command(
        sub,
        "dedup",
        DEDUP_EXAMPLES,
        help="groups of near-duplicates in a store",
        description="Find groups of rows whose embeddings have cosine similarity >= --threshold.",
    )
    p.add_argument("--threshold", type=float, required=True, metavar="T", help="cosine similarity, in (0, 1]")
    p.add_argument("--keep", choices=["first", "largest"], help="say which row of each group to keep")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="output format (default: jsonl)")
    p.add_argument("--exact", action="store_true", help="compare every pair even when the store has an index")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_dedup)

    from .train.cli import add_train_parser

    add_train_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    configure_logging(quiet=getattr(args, "quiet", False))
    return run_reporting_errors(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
