"""The ``siglip`` command: ``classify``, ``embed``, ``search``, ``index``, ``dedup``, ``eval``, ``export onnx``,
``serve`` (and ``train``, from ``siglip.train``).

Results go to stdout, progress and logs to stderr. A failure exits non-zero with one line
``siglip: error: <reason>``; unreadable images in batch jobs are skipped, reported on stderr and (for ``embed``)
listed in ``OUT/errors.jsonl``; what decoding warns about is one line ``siglip: warning: ...`` (not with ``-q``).
This module parses arguments and prints: the work is done by ``jobs.py`` and ``evaluation.py`` (on a pipeline from
``pipelines.py``); training by ``siglip.train``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli_utils import CLIError, configure_logging, positive, run_reporting_errors
from .data import SMALL_JOB, default_workers
from .files import DEMO_MODEL, CheckpointError
from .version import __version__

DEFAULT_MODEL = "google/siglip2-base-patch16-224"

log = logging.getLogger("siglip")

# ------------------------------------------------------------------------------------------------------------
# Shared options and model loading
# ------------------------------------------------------------------------------------------------------------


def add_model_options(parser: argparse.ArgumentParser, model_default: str | None = DEFAULT_MODEL) -> None:
    group = parser.add_argument_group("model and runtime")
    default = model_default or f"the store's model; {DEFAULT_MODEL} for a new store"
    group.add_argument(
        "--model",
        default=model_default,
        help=f"checkpoint folder, hub id, ONNX export folder (siglip export onnx), or '{DEMO_MODEL}' for the bundled "
        f"demo model (default: {default})",
    )
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available; default)")
    group.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="compute dtype; auto (default): bfloat16 on CPUs that multiply it natively (AMX, AVX512-BF16), float32 "
        "on other CPUs, the checkpoint's dtype on GPUs",
    )
    group.add_argument(
        "--no-optimize",
        dest="optimize",
        action="store_false",
        help="run the plain model instead of its fused inference twin (siglip.optimize)",
    )
    group.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: 16)")
    group.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help=f"processes decoding images ahead of the model; 0 decodes in the main process (default: 0 for fewer "
        f"than {SMALL_JOB} images, else {default_workers()}); with embed --engine ray: the number of model "
        "actors (default: 1)",
    )
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bar, info messages or warnings")


def _check_runtime(args: argparse.Namespace) -> None:
    positive("--batch-size", args.batch_size)
    if args.num_workers is not None and args.num_workers < 0:
        raise CLIError(f"--num-workers must be 0 or more, got {args.num_workers}")


def resolve_model(name: str) -> tuple[Any, str]:
    """The checkpoint ``--model`` names and its task: ``image-classification`` for a fine-tuned classifier, else
    ``zero-shot-image-classification``."""
    from .files import Checkpoint
    from .pipelines import checkpoint_task

    try:
        checkpoint = Checkpoint.resolve(name)
        return checkpoint, checkpoint_task(checkpoint)
    except CheckpointError as e:
        raise CLIError(f"{e}{_model_hint(name)}") from None


def _model_hint(name: str) -> str:
    """How to point --model at something else, unless the user already gave a path (or the demo)."""
    if name == DEMO_MODEL or Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        return ""
    return f" (use --model PATH for a local checkpoint folder, or --model {DEMO_MODEL})"


def load_pipeline(args: argparse.Namespace, model: str | None = None) -> Any:
    """The zero-shot pipeline for ``--model`` with ``--device`` / ``--dtype`` / ``--batch-size`` (a fine-tuned
    classifier is refused: the commands that take one resolve the model first and call ``_load``)."""
    name = model or args.model
    checkpoint, task = resolve_model(name)
    if task == "image-classification":
        raise CLIError(
            f"--model {name} is a fine-tuned image classifier: it has no text tower, so `siglip {args.command}` "
            "can't use it (`siglip classify` and `siglip eval zero-shot` can)"
        )
    return _load(args, checkpoint, task, name)


def _load(args: argparse.Namespace, checkpoint: Any, task: str, name: str) -> Any:
    from .optimization import command_dtype
    from .pipelines import pipeline

    _check_runtime(args)
    device_map = "auto" if args.device == "auto" else None
    device = None if args.device == "auto" else args.device
    started = time.perf_counter()
    try:
        pipe = pipeline(
            task,
            model=checkpoint,
            dtype=command_dtype(args.dtype, args.device, name),
            device=device,
            device_map=device_map,
            batch_size=args.batch_size,
            optimize=getattr(args, "optimize", True),
        )
    except CheckpointError as e:
        raise CLIError(f"{e}{_model_hint(name)}") from None
    log.info("loaded %s (%s, %s) in %.1fs", name, pipe.device, pipe.dtype, time.perf_counter() - started)
    return pipe


def _reporters(args: argparse.Namespace, skips_when_quiet: bool = False) -> dict[str, Any]:
    """``on_skip`` / ``on_warning`` for a job: one ``siglip: ...`` line each on stderr, silenced by ``-q`` (skips
    too unless ``skips_when_quiet``)."""
    quiet = args.quiet
    return {
        "on_skip": None if quiet and not skips_when_quiet else _print_skipped,
        "on_warning": None if quiet else _print_warnings,
    }


def _print_skipped(failures: list[tuple[str, str]]) -> None:
    for _, message in failures:
        print(f"siglip: skipped {message}", file=sys.stderr)


def _print_warnings(warnings: list[tuple[str, str]]) -> None:
    for _, message in warnings:
        print(f"siglip: warning: {message}", file=sys.stderr)


def _read_lines(path: str, flag: str) -> list[str]:
    """The non-blank lines of a list file, stripped, without ``#`` comment lines."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CLIError(f"cannot read {flag} {path}: {getattr(e, 'strerror', None) or e}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


# ------------------------------------------------------------------------------------------------------------
# classify
# ------------------------------------------------------------------------------------------------------------

CLASSIFY_EXAMPLES = """examples:
  siglip classify cat.jpg --labels cat dog bird
  siglip classify photos/ --labels-file labels.txt --top-k 3 --format csv > scores.csv
  siglip classify photos/ --labels cat dog --threshold 0.1 --format jsonl
  siglip classify shapes.png --model siglip-demo --labels "red circle" "blue square" --template "a {}"
  siglip classify photos/ --model runs/flowers/checkpoint-0000100       # a classifier from `siglip train`

Zero-shot scores are independent sigmoid probabilities, one per label: they need not sum to 1, and 0.2 for the
right label is normal. A fine-tuned classifier (`siglip train --task classification`) scores its own labels with
its head (softmax, or sigmoid for a multi-label checkpoint); --labels and --template don't apply to it.
Formats: table; json (a list of {image, scores}); jsonl (one {image, scores} per line); csv (one row per image
and label: image, rank, label, score).
"""


def _read_labels(args: argparse.Namespace) -> list[str]:
    labels = list(args.labels or [])
    empty = [i for i, label in enumerate(labels, 1) if not label.strip()]
    if empty:
        raise CLIError(f"--labels: label {empty[0]} is empty; every label needs some text")
    if args.labels_file:
        from_file = _read_lines(args.labels_file, "--labels-file")
        if not from_file:
            raise CLIError(f"--labels-file {args.labels_file} has no labels (blank and # comment lines are skipped)")
        labels += from_file
    if not labels:
        raise CLIError("no labels: pass --labels A B ... or --labels-file FILE")
    return labels


def cmd_classify(args: argparse.Namespace) -> int:
    from .jobs import classify_images
    from .pipelines import DEFAULT_TEMPLATE, check_labels

    positive("--top-k", args.top_k)
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise CLIError(f"--threshold must be between 0 and 1 (scores are probabilities), got {args.threshold}")
    _check_runtime(args)
    checkpoint, task = resolve_model(args.model)
    if task == "image-classification":
        if args.labels or args.labels_file or args.template is not None:
            raise CLIError(
                f"--model {args.model} is a fine-tuned classifier that scores its own labels; leave out --labels, "
                "--labels-file and --template"
            )
        labels = template = None
    else:
        template = DEFAULT_TEMPLATE if args.template is None else args.template
        flag = "--labels" if args.labels else "--labels-file"
        try:
            labels = check_labels(_read_labels(args), template, names=(flag, "--template"))
        except ValueError as e:
            raise CLIError(str(e)) from None
    pipe = _load(args, checkpoint, task, args.model)
    done = classify_images(
        pipe,
        args.images,
        labels,
        template,
        top_k=args.top_k,
        threshold=args.threshold,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        progress=not args.quiet,
        **_reporters(args, skips_when_quiet=True),
    )
    if not done.results:
        raise CLIError(f"none of the {len(done.failures)} images could be read")
    _print_classification(done.results, args.format)
    return 0


def _print_classification(results: list[tuple[str, list[dict[str, Any]]]], fmt: str) -> None:
    out = sys.stdout
    if fmt == "json":
        json.dump([{"image": name, "scores": ranked} for name, ranked in results], out, indent=2, ensure_ascii=False)
        out.write("\n")
    elif fmt == "jsonl":
        for name, ranked in results:
            out.write(json.dumps({"image": name, "scores": ranked}, ensure_ascii=False) + "\n")
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
    from .jobs import store_model
    from .store import EmbeddingStore

    if bool(args.texts) == bool(args.inputs):
        raise CLIError("give image files/folders to embed, or --texts FILE (not both)")
    positive("--shard-size", args.shard_size)
    store = EmbeddingStore(args.output)
    args.model = store_model(store, args.model, DEFAULT_MODEL)  # an existing store's model unless told otherwise
    if args.texts:
        if args.engine != "local":
            raise CLIError("--engine ray embeds images; embed --texts without it")
        return _embed_texts(args, store)
    if args.engine == "ray":
        return _embed_images_on_ray(args, store)
    return _embed_images(args, store)


def _embed_images(args: argparse.Namespace, store: Any) -> int:
    from .jobs import embed_images

    pipe = load_pipeline(args)
    started = time.perf_counter()
    report = embed_images(
        pipe, args.inputs, store, args.model, num_workers=args.num_workers, **_image_job_options(args)
    )
    _print_embed_report(args, report, started)
    return 0


def _image_job_options(args: argparse.Namespace, warnings: bool = True) -> dict[str, Any]:
    """What a local and a Ray image job take alike from the command line (a Ray job reports no decoding
    warnings: they stay in its workers)."""
    reporters = _reporters(args)
    return {
        "batch_size": args.batch_size,
        "shard_size": args.shard_size,
        "storage_dtype": args.storage_dtype,
        "progress": not args.quiet,
        "log": log.info,
        **(reporters if warnings else {"on_skip": reporters["on_skip"]}),
    }


def _embed_images_on_ray(args: argparse.Namespace, store: Any) -> int:
    from .distributed import embed_images_on_ray, require_ray

    try:
        require_ray()
    except ImportError as e:
        raise CLIError(str(e)) from None
    num_workers = 1 if args.num_workers is None else positive("--num-workers", args.num_workers)
    if args.cpus_per_worker <= 0 or args.gpus_per_worker < 0:
        raise CLIError("--cpus-per-worker must be more than 0 and --gpus-per-worker at least 0")
    args.device = "cpu"  # the driver's copy of the model only describes the store; the actors run it
    pipe = load_pipeline(args)
    started = time.perf_counter()
    report = embed_images_on_ray(
        args.inputs,
        store,
        args.model,
        pipe=pipe,
        address=args.address,
        num_workers=num_workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        dtype=args.dtype,
        **_image_job_options(args, warnings=False),
    )
    _print_embed_report(args, report, started)
    return 0


def _print_embed_report(args: argparse.Namespace, report: Any, started: float) -> None:
    where = f", listed in {Path(args.output) / 'errors.jsonl'}" if report.failures else ""
    rate = report.written / max(time.perf_counter() - started, 1e-9)  # listing, decoding and the model together
    new = f"{report.written} new at {rate:.1f} img/s" if report.written else "0 new"
    summary = f"{report.total} images in {args.output} ({new}, {len(report.failures)} unreadable{where})"
    if not report.total and report.failures:
        raise CLIError(f"none of the {len(report.failures)} images could be read; {summary}")
    print(summary, file=sys.stderr)


def _embed_texts(args: argparse.Namespace, store: Any) -> int:
    from .jobs import embed_texts

    try:
        lines = Path(args.texts).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CLIError(f"cannot read --texts {args.texts}: {getattr(e, 'strerror', None) or e}") from None
    stripped = [line.strip() for line in lines]
    texts = list(dict.fromkeys(t for t in stripped if t))
    if not texts:
        raise CLIError(f"{args.texts} has no non-empty lines")
    blank, repeated = stripped.count(""), sum(1 for t in stripped if t) - len(texts)
    if blank or repeated:
        log.info(
            "%s: %d lines, %d texts to embed; dropped %d blank line(s) and %d repeated text(s) (a store holds each "
            "text once)",
            args.texts,
            len(lines),
            len(texts),
            blank,
            repeated,
        )
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
        texts = _read_lines(args.texts, "--texts")
        if not texts:
            raise CLIError(f"--texts {args.texts} has no queries (only blank or # comment lines)")
        queries += [("text", text) for text in texts]
    if not queries:
        raise CLIError("give a text query, --image PATH or --texts FILE")
    return queries


def cmd_search(args: argparse.Namespace) -> int:
    from .jobs import check_queries, search_queries, store_model
    from .store import EmbeddingStore

    queries = check_queries(_search_queries(args))  # before the model loads
    positive("--top-k", args.top_k)
    top_k = args.top_k if args.top_k is not None or args.threshold is not None else 10
    if args.threshold is not None and not -1 <= args.threshold <= 1:
        raise CLIError(f"--threshold is a cosine similarity in [-1, 1], got {args.threshold}")
    store = EmbeddingStore(args.store)
    store.read_manifest()  # a missing or broken store is the error, before the model loads
    pipe = load_pipeline(args, model=store_model(store, args.model, DEFAULT_MODEL))
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
    from .store import EmbeddingStore, source_path

    store = EmbeddingStore(args.store)
    key = store.key
    groups = find_duplicates(store, args.threshold, exact=args.exact, keep=args.keep, progress=not args.quiet)
    manifest = store.read_manifest()
    if key == "path":  # image rows are keyed relative to the embedded folder: print the files' paths
        for group in groups:
            shown = {id(row): {**row, key: source_path(manifest, row[key])} for row, _ in group.items}
            group.items = [(shown[id(row)], score) for row, score in group.items]
            group.keep = shown[id(group.keep)] if group.keep is not None else None  # drop() compares identities
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
# eval
# ------------------------------------------------------------------------------------------------------------

EVAL_EXAMPLES = """examples:
  siglip eval zero-shot photos/ --model google/siglip2-base-patch16-224     # photos/<class>/*.jpg
  siglip eval zero-shot photos/ --templates templates.txt --classnames names.txt --output result.json
  siglip eval zero-shot flowers/ --model runs/flowers/checkpoint-0000100    # a classifier: its own head
  siglip eval retrieval pairs.csv --output retrieval.json                   # columns image,caption

Zero-shot: every sub-folder of ROOT is a class (an empty one too: a distractor label), named after the folder or
by --classnames (one name per line, in the folders' sorted order). Several --templates are ensembled: the mean of
the normalised per-template text embeddings, normalised. A fine-tuned classifier is evaluated with its head, the
folders named after its labels. --output writes CLIP_benchmark's JSON ({dataset, model, task, metrics: {acc1,
acc5, mean_per_class_recall}}, fractions in [0, 1]; acc5 is null below 5 classes) with the per-class table and the
confusion matrix, and a PNG of the matrix beside it (needs matplotlib, the plot extra).
Retrieval: image->text and text->image recall@1/5/10 over a .csv / .jsonl of image,caption (paths relative to it).
"""


def cmd_eval_zero_shot(args: argparse.Namespace) -> int:
    from .evaluation import class_tree, evaluate_classification
    from .pipelines import DEFAULT_TEMPLATE

    checkpoint, task = resolve_model(args.model)
    classnames = _read_lines(args.classnames, "--classnames") if args.classnames else None
    if args.templates and args.template is not None:
        raise CLIError("give --template or --templates, not both")
    templates: list[str] = []
    if task == "image-classification":
        if args.templates or args.template is not None:
            raise CLIError(f"--model {args.model} is a fine-tuned classifier: it uses its head, not templates")
    else:
        templates = _read_lines(args.templates, "--templates") if args.templates else []
        templates = templates or [DEFAULT_TEMPLATE if args.template is None else args.template]
        flag = "--templates" if args.templates else "--template"
        for template in templates:
            if "{}" not in template:
                raise CLIError(f"{flag}: {template!r} has no {{}} where the class name goes")
    if not Path(args.root).expanduser().is_dir():
        raise CLIError(f"{args.root}: not a folder (expected ROOT/<class>/<images>)")
    flag = f"--classnames {args.classnames}" if args.classnames else "--classnames"
    try:  # the tree and the names checked before the model is loaded
        class_tree(args.root, classnames, zero_shot=task != "image-classification", name=flag)
    except ValueError as e:
        raise CLIError(str(e)) from None
    pipe = _load(args, checkpoint, task, args.model)
    result = evaluate_classification(
        pipe,
        args.root,
        model_name=args.model,
        classnames=classnames,
        templates=templates,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        progress=not args.quiet,
        **_reporters(args, skips_when_quiet=True),
    )
    _print_classification_eval(result)
    if args.output:
        _write_eval_json(args.output, result.to_json())
        _plot(result, Path(args.output).with_suffix(".png"))
    return 0


def _print_classification_eval(result: Any) -> None:
    metrics = result.metrics
    acc5 = "n/a (fewer than 5 classes)" if metrics["acc5"] is None else f"{metrics['acc5']:.4f}"
    print(f"{result.task} on {result.dataset}: {len(result.paths)} images, {len(result.labels)} classes")
    print(f"acc@1                  {metrics['acc1']:.4f}")
    print(f"acc@5                  {acc5}")
    print(f"mean per-class recall  {metrics['mean_per_class_recall']:.4f}")
    print()
    rows = result.per_class()
    width = max(len("class"), *(len(r["label"]) for r in rows))
    print(f"{'#':>3}  {'class':<{width}}  {'images':>6}  {'recall':>6}  {'precision':>9}  most confused with")
    for i, r in enumerate(rows):
        recall = "-" if r["recall"] is None else f"{r['recall']:.4f}"
        precision = "-" if r["precision"] is None else f"{r['precision']:.4f}"
        confused = r["confused_with"] or ""
        print(f"{i:>3}  {r['label']:<{width}}  {r['images']:>6}  {recall:>6}  {precision:>9}  {confused}".rstrip())
    print()
    confusion = result.confusion
    cell = max(3, len(str(confusion.max())))
    print("confusion matrix (rows: true class #, columns: predicted class #)")
    print(" " * 4 + "".join(f" {j:>{cell}}" for j in range(len(rows))))
    for i, counts in enumerate(confusion):
        print(f"{i:>3} " + "".join(f" {c:>{cell}}" if c else f" {'.':>{cell}}" for c in counts))


def _write_eval_json(path: str, data: dict[str, Any]) -> None:
    from .evaluation import json_text
    from .files import atomic_write_text

    try:
        atomic_write_text(path, json_text(data))
    except OSError as e:
        raise CLIError(f"could not write --output {path}: {e.strerror or e}") from None
    log.info("wrote %s", path)


def _plot(result: Any, path: Path) -> None:
    from .evaluation import plot_confusion

    try:
        plot_confusion(result, path)
    except ImportError as e:
        log.warning("confusion-matrix PNG skipped: %s", e)
        return
    log.info("wrote %s", path)


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from .evaluation import RECALL_AT, evaluate_retrieval

    pairs = Path(args.pairs).expanduser()
    if not pairs.is_file() or pairs.suffix.lower() not in (".csv", ".jsonl"):
        raise CLIError(f"{args.pairs}: expected a .csv or .jsonl file with columns image,caption")
    pipe = load_pipeline(args)
    result = evaluate_retrieval(
        pipe,
        pairs,
        model_name=args.model,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        progress=not args.quiet,
        **_reporters(args, skips_when_quiet=True),
    )
    metrics = result.metrics
    print(f"zeroshot_retrieval on {result.dataset}: {len(result.images)} images, {len(result.texts)} texts")
    print(f"{'':<12}" + "".join(f"  {'R@' + str(k):>6}" for k in RECALL_AT))
    for name, key in (("image->text", "text_retrieval_recall"), ("text->image", "image_retrieval_recall")):
        print(f"{name:<12}" + "".join(f"  {metrics[f'{key}@{k}']:.4f}" for k in RECALL_AT))
    if args.output:
        _write_eval_json(args.output, result.to_json())
    return 0


# ------------------------------------------------------------------------------------------------------------
# serve
# ------------------------------------------------------------------------------------------------------------

SERVE_EXAMPLES = """examples:
  siglip serve --model siglip-demo                          # http://127.0.0.1:8000, API docs at /docs
  SIGLIP_API_KEY=secret siglip serve --store photos.emb     # + POST /v1/search; every route but /health needs the key
  siglip serve --host 0.0.0.0 --max-batch-size 64 --max-wait-ms 20 --allow-urls

Endpoints: POST /v1/embeddings (OpenAI-compatible), /v1/classify, /v1/search; GET /health, /metrics, /v1/models.
SIGTERM or Ctrl-C stops accepting connections and finishes the requests in flight.
"""


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import ServeConfig, require_serve_extra, serve

    try:
        require_serve_extra()
    except ImportError as e:
        raise CLIError(str(e)) from None
    config = ServeConfig(
        model=args.model,
        store=args.store,
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get("SIGLIP_API_KEY") or None,
        dtype=args.dtype,
        device=args.device,
        optimize=args.optimize,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_items=args.max_items,
        max_labels=args.max_labels,
        max_text_chars=args.max_text_chars,
        max_image_pixels=args.max_image_pixels,
        max_body_bytes=args.max_body_bytes,
        request_timeout=args.request_timeout,
        allow_urls=args.allow_urls,
        quiet=args.quiet,
    )
    return serve(config)


def add_serve_parser(sub: Any) -> None:
    from .serve import ServeConfig

    defaults = ServeConfig(model=DEFAULT_MODEL)
    p = sub.add_parser(
        "serve",
        help="HTTP service: embeddings, zero-shot classification and search",
        epilog=SERVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve a model over HTTP with dynamic batching (needs the serve extra: "
        "pip install 'siglip[serve]').",
    )
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"checkpoint folder, hub id, or '{DEMO_MODEL}' (default: {DEFAULT_MODEL})",
    )
    p.add_argument("--store", metavar="DIR", help="an embedding store from `siglip embed`: enables POST /v1/search")
    p.add_argument(
        "--host", default=defaults.host, help="address to listen on (default: %(default)s, this machine only)"
    )
    p.add_argument("--port", type=int, default=defaults.port, help="port (default: %(default)s)")
    p.add_argument(
        "--api-key",
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' on every route but /health (default: $SIGLIP_API_KEY; "
        "prefer the variable: arguments are visible to other users in ps)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available; default)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="compute dtype; auto (default): bfloat16 on CPUs that multiply it natively (AMX, AVX512-BF16), float32 "
        "on other CPUs, the checkpoint's dtype on GPUs",
    )
    p.add_argument(
        "--no-optimize",
        dest="optimize",
        action="store_false",
        help="run the plain model instead of its fused inference twin (siglip.optimize)",
    )
    group = p.add_argument_group("batching and limits")
    limits = [
        ("--max-batch-size", int, "items per forward pass"),
        ("--max-wait-ms", float, "how long a request waits for others to share its forward pass"),
        ("--max-queue", int, "requests admitted at once; more get 503 with Retry-After"),
        ("--max-items", int, "texts or images per request"),
        ("--max-labels", int, "candidate_labels per classify request"),
        ("--max-text-chars", int, "characters per text, label or template"),
        ("--max-image-pixels", int, "pixels per decoded image (checked before decoding)"),
        ("--max-body-bytes", int, "request body size (and the most an image URL may send)"),
        ("--request-timeout", float, "seconds until a request is answered 504"),
    ]
    for flag, kind, text in limits:
        default = getattr(defaults, flag[2:].replace("-", "_"))
        group.add_argument(flag, type=kind, default=default, metavar="N", help=f"{text} (default: {default})")
    group.add_argument(
        "--allow-urls",
        action="store_true",
        help="accept http(s) image URLs (only to public addresses, checked after DNS and redirects)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors (no access log)")
    p.set_defaults(func=cmd_serve)


# ------------------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------------------

EXPORT_ONNX_EXAMPLES = """examples:
  siglip export onnx --model google/siglip2-base-patch16-naflex --output siglip2-naflex-onnx
  siglip export onnx --model runs/photos --output photos-onnx --quantize int8
  siglip export onnx --model siglip-demo --output demo-onnx --dtype float16 --opset 18
  siglip classify cat.jpg --labels cat dog --model siglip2-naflex-onnx    # run by ONNX Runtime

Output: DIR/text_model.onnx and DIR/vision_model.onnx (one graph per tower, dynamic batch; NaFlex also a dynamic
patch count), config.json, the tokenizer and preprocessor files, and onnx_export.json (options, logit_scale /
logit_bias, the check against PyTorch). Every graph is checked in ONNX Runtime before DIR appears.
"""


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from .export import export_onnx

    try:
        output = export_onnx(
            args.model,
            args.output,
            opset=args.opset,
            dtype=args.dtype,
            quantize=args.quantize,
            overwrite=args.overwrite,
        )
    except ImportError as e:
        raise CLIError(str(e)) from None
    info = json.loads((output / "onnx_export.json").read_text(encoding="utf-8"))
    for file, check in info["verification"].items():
        diffs = ", ".join(f"{name} {value:.2g}" for name, value in check["max_abs_diff"].items())
        size = (output / file).stat().st_size / 2**20
        print(
            f"{output / file}  {size:.1f} MiB  max abs diff to PyTorch: {diffs}; min cosine {check['min_cosine']:.6f}"
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
        description="SigLIP / SigLIP2 image-text models: zero-shot classification, embeddings, search, ONNX export, "
        "training.",
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
    p.add_argument("--labels-file", metavar="FILE", help="file with one label per line (# starts a comment line)")
    p.add_argument("--template", help="prompt template with {} for the label (default: 'This is a photo of {}.')")
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="only the K best labels per image")
    p.add_argument("--threshold", type=float, metavar="T", help="only labels scoring at least T (0 to 1)")
    p.add_argument(
        "--format", choices=["table", "json", "jsonl", "csv"], default="table", help="output format (default: table)"
    )
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
    add_model_options(p, model_default=None)
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

    p = sub.add_parser(
        "eval",
        help="measure a model on your own data: zero-shot (or fine-tuned) classification, retrieval",
        epilog=EVAL_EXAMPLES,
        formatter_class=fmt,
        description="Accuracy on an image-folder tree, or recall on image-caption pairs (CLIP_benchmark's metrics).",
    )
    tasks = p.add_subparsers(dest="eval_task", metavar="TASK", required=True)
    e = tasks.add_parser(
        "zero-shot",
        help="classify ROOT/<class>/* and compare with the folders",
        epilog=EVAL_EXAMPLES,
        formatter_class=fmt,
        description="acc@1, acc@5, mean per-class recall, per-class table and confusion matrix.",
    )
    e.add_argument("root", metavar="ROOT", help="folder with one sub-folder of images per class")
    e.add_argument("--template", help="one prompt template with {} (default: 'This is a photo of {}.')")
    e.add_argument("--templates", metavar="FILE", help="prompt templates, one per line, ensembled")
    e.add_argument("--classnames", metavar="FILE", help="class names, one per line, in the folders' sorted order")
    e.add_argument("--output", "-o", metavar="JSON", help="write the result as JSON (and the confusion matrix PNG)")
    add_model_options(e)
    e.set_defaults(func=cmd_eval_zero_shot)
    e = tasks.add_parser(
        "retrieval",
        help="image->text and text->image recall@1/5/10 on image-caption pairs",
        epilog=EVAL_EXAMPLES,
        formatter_class=fmt,
        description="Recall@1/5/10 both ways over the pairs of a .csv / .jsonl file (columns image, caption).",
    )
    e.add_argument("pairs", metavar="PAIRS", help=".csv or .jsonl with image,caption (image paths relative to it)")
    e.add_argument("--output", "-o", metavar="JSON", help="write the result as JSON")
    add_model_options(e)
    e.set_defaults(func=cmd_eval_retrieval)

    p = sub.add_parser(
        "export",
        help="export a model for another runtime (ONNX)",
        description="Export a model to another runtime's format.",
    )
    formats = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    p = formats.add_parser(
        "onnx",
        help="ONNX graphs of both towers, checked in ONNX Runtime",
        epilog=EXPORT_ONNX_EXAMPLES,
        formatter_class=fmt,
        description="Export to ONNX through torch.onnx (dynamo) and check every graph in ONNX "
        "Runtime against PyTorch on other batch sizes and shapes.",
    )
    p.add_argument("--model", required=True, help=f"checkpoint folder, hub id, or '{DEMO_MODEL}'")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="folder to create")
    p.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset, 18..22 (default: torch's, 20)")
    p.add_argument("--dtype", default="float32", metavar="DTYPE", help="float32 (default) or float16")
    p.add_argument("--quantize", default=None, metavar="MODE", help="int8: dynamic int8 quantization (ONNX Runtime)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in DIR")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress messages")
    p.set_defaults(func=cmd_export_onnx)

    add_serve_parser(sub)

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
