"""The ``siglip`` command: ``classify``, ``embed``, ``search``, ``export onnx`` (and ``train``, from ``siglip.train``).

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
import os
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
        help=f"checkpoint folder, hub id, ONNX export folder (siglip export onnx), or '{DEMO_MODEL}' for the bundled "
        f"demo model (default: {model_default})",
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
        default=default_workers(),
        help="processes decoding images ahead of the model (default: %(default)s; 0 decodes in the main process)",
    )
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bar or info messages")


def load_pipeline(args: argparse.Namespace, model: str | None = None) -> Any:
    """The zero-shot pipeline for ``--model`` with ``--device`` / ``--dtype`` / ``--batch-size`` / ``--no-optimize``."""
    from .optimization import command_dtype
    from .pipelines import pipeline

    name = model or args.model
    device_map = "auto" if args.device == "auto" else None
    device = None if args.device == "auto" else args.device
    started = time.perf_counter()
    try:
        pipe = pipeline(
            "zero-shot-image-classification",
            model=name,
            dtype=command_dtype(args.dtype, args.device, name),
            device=device,
            device_map=device_map,
            batch_size=positive("--batch-size", args.batch_size),
            optimize=getattr(args, "optimize", True),
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

Output: OUT/manifest.json, OUT/shards/NNNNNN.npy (+ .parquet or .jsonl metadata: path, size, mtime, width,
height), OUT/errors.jsonl (files that could not be read). Interrupted runs resume where they stopped.
"""


def cmd_embed(args: argparse.Namespace) -> int:
    from .store import EmbeddingStore

    if bool(args.texts) == bool(args.inputs):
        raise CLIError("give image files/folders to embed, or --texts FILE (not both)")
    positive("--shard-size", args.shard_size)
    store = EmbeddingStore(args.output)
    if args.texts:
        return _embed_texts(args, store)
    return _embed_images(args, store)


def _embed_images(args: argparse.Namespace, store: Any) -> int:
    from .jobs import embed_images

    pipe = load_pipeline(args)
    started = time.perf_counter()
    report = embed_images(
        pipe,
        args.inputs,
        store,
        args.model,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        shard_size=args.shard_size,
        progress=not args.quiet,
        on_skip=None if args.quiet else _print_skipped,
        log=log.info,
    )
    where = f", listed in {Path(args.output) / 'errors.jsonl'}" if report.failures else ""
    rate = report.written / max(time.perf_counter() - started, 1e-9)  # listing, decoding and the model together
    print(
        f"{report.total} images in {args.output} ({report.written} new at {rate:.1f} img/s, "
        f"{len(report.failures)} unreadable{where})",
        file=sys.stderr,
    )
    return 0


def _print_skipped(failures: list[tuple[str, str]]) -> None:
    for _, message in failures:
        print(f"siglip: skipped {message}", file=sys.stderr)


def _embed_texts(args: argparse.Namespace, store: Any) -> int:
    from .jobs import embed_texts

    try:
        lines = Path(args.texts).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CLIError(f"cannot read --texts {args.texts}: {getattr(e, 'strerror', None) or e}") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise CLIError(f"{args.texts} has no non-empty lines")
    pipe = load_pipeline(args)
    report = embed_texts(
        pipe,
        texts,
        store,
        args.model,
        batch_size=max(args.batch_size, 32),
        shard_size=args.shard_size,
        progress=not args.quiet,
    )
    print(f"{report.total} texts in {args.output} ({report.written} new)", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------------------
# search
# ------------------------------------------------------------------------------------------------------------

SEARCH_EXAMPLES = """examples:
  siglip search photos.emb "a dog on a beach"
  siglip search photos.emb --image query.jpg --top-k 5
  siglip search photos.emb "sunset" --paths-only | xargs -I{} cp {} picks/
"""


def cmd_search(args: argparse.Namespace) -> int:
    from .jobs import search
    from .store import EmbeddingStore

    if (args.query is None) == (args.image is None):
        raise CLIError("give a text query or --image PATH (one of them)")
    positive("--top-k", args.top_k)
    store = EmbeddingStore(args.store)
    manifest = store.read_manifest()
    pipe = load_pipeline(args, model=args.model or manifest["model"])
    if pipe.embed_dim != manifest["dim"]:
        raise CLIError(f"--model gives {pipe.embed_dim}-d embeddings but {args.store} holds {manifest['dim']}-d ones")
    hits = search(pipe, store, text=args.query, image=args.image, top_k=args.top_k)
    key = store.key
    if args.paths_only:
        for row, _ in hits:
            print(row[key])
        return 0
    if args.format == "json":
        ranked = [{"rank": r + 1, "score": score, key: row[key]} for r, (row, score) in enumerate(hits)]
        print(json.dumps(ranked, indent=2, ensure_ascii=False))
        return 0
    print(f"{'rank':>4}  {'score':>7}  {key}")
    for rank, (row, score) in enumerate(hits, 1):
        print(f"{rank:>4}  {score:>7.4f}  {row[key]}")
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
    add_model_options(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "search",
        help="exact cosine search in a store made by `siglip embed`",
        epilog=SEARCH_EXAMPLES,
        formatter_class=fmt,
        description="Rank the stored embeddings by cosine similarity to a text or an image.",
    )
    p.add_argument("store", metavar="OUT", help="folder written by `siglip embed`")
    p.add_argument("query", nargs="?", help="text query")
    p.add_argument("--image", metavar="PATH", help="use this image as the query")
    p.add_argument("--top-k", type=int, default=10, metavar="K", help="number of results (default: 10)")
    p.add_argument("--paths-only", action="store_true", help="print only the paths (or texts), one per line")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format (default: table)")
    add_model_options(p, model_default=None)
    p.set_defaults(func=cmd_search)

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
