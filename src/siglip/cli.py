"""The ``siglip`` command: ``classify``, ``embed``, ``search``, ``export onnx`` (and ``train``, from ``siglip.train``).

Results go to stdout, progress and logs to stderr. A failure exits non-zero with one line
``siglip: error: <reason>``; unreadable images in batch jobs are skipped, reported on stderr and (for ``embed``)
listed in ``OUT/errors.jsonl``. No tensor code lives here: the work is done by ``pipeline``, ``data`` and ``store``.
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

DEFAULT_MODEL = "google/siglip2-base-patch16-224"
DEMO_MODEL = "siglip-demo"

log = logging.getLogger("siglip")


class CLIError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


# ------------------------------------------------------------------------------------------------------------
# Shared options and model loading
# ------------------------------------------------------------------------------------------------------------


def _default_workers() -> int:
    return min(4, max(0, (os.cpu_count() or 1) - 1))


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
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="weights dtype (default: auto)"
    )
    group.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: 16)")
    group.add_argument(
        "--num-workers",
        type=int,
        default=_default_workers(),
        help="processes decoding images ahead of the model (default: %(default)s; 0 decodes in the main process)",
    )
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bar or info messages")


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise CLIError(f"{name} must be at least 1, got {value}")
    return value


def load_pipeline(args: argparse.Namespace, model: str | None = None) -> Any:
    """The zero-shot pipeline for ``--model`` with ``--device`` / ``--dtype`` / ``--batch-size``."""
    from .hub import CheckpointError
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
            batch_size=_positive("--batch-size", args.batch_size),
        )
    except CheckpointError as e:
        raise CLIError(f"{e} (use --model PATH for a local checkpoint folder, or --model {DEMO_MODEL})") from None
    log.info("loaded %s (%s, %s) in %.1fs", name, pipe.device, pipe.dtype, time.perf_counter() - started)
    return pipe


def _split_sources(items: Sequence[str]) -> tuple[list[str], list[str]]:
    urls = [i for i in items if i.startswith(("http://", "https://"))]
    return urls, [i for i in items if i not in urls]


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
    from .data import find_images, first_line, iter_image_batches
    from .image_processing import load_image
    from .pipelines import check_labels, rank_labels
    from .progress import Progress

    labels = check_labels(_read_labels(args), args.template)
    urls, local = _split_sources(args.images)
    paths = find_images(local) if local else []
    if not paths and not urls:
        raise CLIError(f"no images found in {' '.join(args.images)}")
    pipe = load_pipeline(args)
    label_embeds = pipe.label_embeddings(labels, args.template)
    results: list[tuple[str, list[dict[str, Any]]]] = []
    failures: list[tuple[str, str]] = []

    def score(names: list[str], inputs: dict[str, Any]) -> None:
        image_embeds = pipe.embed_pixels({k: v.to(pipe.device) for k, v in inputs.items()})
        for name, row in zip(names, pipe.scores(image_embeds, label_embeds), strict=True):
            results.append((name, rank_labels(row, labels, args.top_k)))

    with Progress(len(paths) + len(urls), "classifying", unit="img", disable=args.quiet) as bar:
        for url in urls:
            try:
                score([url], pipe.preprocess_images([load_image(url)]))
            except (ValueError, OSError) as e:
                failures.append((url, first_line(e)))
            bar.update()
        for batch in iter_image_batches(paths, pipe.image_processor, args.batch_size, args.num_workers):
            failures.extend(batch.errors)
            if batch.inputs is not None:
                inputs = {k: (v.to(pipe.dtype) if v.is_floating_point() else v) for k, v in batch.inputs.items()}
                score([info.path for info in batch.infos], inputs)
            bar.update(len(batch.infos) + len(batch.errors))
    for _, message in failures:
        print(f"siglip: skipped {message}", file=sys.stderr)
    _print_classification(results, args.format)
    if not results:
        raise CLIError(f"none of the {len(failures)} images could be read")
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


def _manifest(pipe: Any, model_name: str, kind: str) -> dict[str, Any]:
    folder = Path(model_name).expanduser()
    model_id = str(folder.resolve()) if folder.is_dir() else model_name
    return {
        "kind": kind,
        "model": model_id,
        "model_type": pipe.model.config.model_type,
        "dim": pipe._embed_dim(),
        "normalized": True,
        "dtype": "float32",
        "text_length": pipe.text_length,
        "preprocessing": pipe.image_processor.to_dict() if kind == "image" else {"max_length": pipe.text_length},
    }


class _ShardWriter:
    """Buffers rows and writes a shard every ``rows`` rows or ``seconds`` seconds (and on close)."""

    def __init__(self, store: Any, rows: int, seconds: float = 30.0):
        self.store, self.rows, self.seconds = store, rows, seconds
        self.buffer_rows: list[dict[str, Any]] = []
        self.buffer_emb: list[Any] = []
        self.last = time.monotonic()
        self.written = 0

    def add(self, rows: list[dict[str, Any]], embeddings: Any) -> None:
        self.buffer_rows.extend(rows)
        self.buffer_emb.append(embeddings)
        if len(self.buffer_rows) >= self.rows or time.monotonic() - self.last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        import numpy as np

        if self.buffer_rows:
            self.store.append(self.buffer_rows, np.concatenate(self.buffer_emb))
            self.written += len(self.buffer_rows)
        self.buffer_rows, self.buffer_emb = [], []
        self.last = time.monotonic()


def cmd_embed(args: argparse.Namespace) -> int:
    from .store import EmbeddingStore

    if bool(args.texts) == bool(args.inputs):
        raise CLIError("give image files/folders to embed, or --texts FILE (not both)")
    _positive("--shard-size", args.shard_size)
    store = EmbeddingStore(args.output)
    if args.texts:
        return _embed_texts(args, store)
    return _embed_images(args, store)


def _embed_images(args: argparse.Namespace, store: Any) -> int:
    from .data import find_images, iter_image_batches, stat_files
    from .progress import Progress

    paths = find_images(args.inputs)
    pipe = load_pipeline(args)
    manifest = _manifest(pipe, args.model, "image")
    store.prepare(manifest)
    current, unreadable = stat_files(paths)  # broken links and vanished files are skipped and reported
    rows, _, _ = store.read("path")
    unchanged = {
        r["path"]
        for r in rows
        if r["path"] in current
        and r["size"] == current[r["path"]].st_size
        and r["mtime_ns"] == current[r["path"]].st_mtime_ns
    }
    stale = [r["path"] for r in rows if r["path"] not in unchanged]
    kept = store.compact("path", stale)
    todo = [p for p in paths if str(p) in current and str(p) not in unchanged]
    log.info("%d images: %d already embedded, %d to embed, %d stale rows dropped", len(paths), kept, len(todo), len(stale))
    writer = _ShardWriter(store, args.shard_size)
    errors: list[tuple[str, str]] = []

    def skip(failures: list[tuple[str, str]]) -> None:
        errors.extend(failures)
        if not args.quiet:
            for _, message in failures:
                print(f"siglip: skipped {message}", file=sys.stderr)

    skip(unreadable)
    try:
        with Progress(len(todo), "embedding", unit="img", disable=args.quiet) as bar:
            for batch in iter_image_batches(todo, pipe.image_processor, args.batch_size, args.num_workers):
                skip(batch.errors)
                if batch.inputs is not None:
                    inputs = {
                        k: v.to(pipe.device, pipe.dtype if v.is_floating_point() else v.dtype)
                        for k, v in batch.inputs.items()
                    }
                    embeddings = pipe.embed_pixels(inputs).cpu().numpy()
                    writer.add([vars(info) for info in batch.infos], embeddings)
                bar.update(len(batch.infos) + len(batch.errors))
    finally:
        writer.flush()  # on Ctrl-C too: whatever was embedded is kept
        store.write_errors(errors)
    total = kept + writer.written
    store.write_manifest(manifest, rows=total)
    print(
        f"{total} images in {args.output} ({writer.written} new, {len(errors)} unreadable"
        + (f", listed in {Path(args.output) / 'errors.jsonl'}" if errors else "")
        + ")",
        file=sys.stderr,
    )
    return 0


def _embed_texts(args: argparse.Namespace, store: Any) -> int:
    from .progress import Progress

    try:
        lines = Path(args.texts).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CLIError(f"cannot read --texts {args.texts}: {getattr(e, 'strerror', None) or e}") from None
    texts = sorted({line.strip() for line in lines if line.strip()})
    if not texts:
        raise CLIError(f"{args.texts} has no non-empty lines")
    pipe = load_pipeline(args)
    manifest = _manifest(pipe, args.model, "text")
    store.prepare(manifest)
    rows, _, _ = store.read("text")
    have = {r["text"] for r in rows}
    wanted = set(texts)
    kept = store.compact("text", have - wanted)
    todo = [t for t in texts if t not in have]
    writer = _ShardWriter(store, args.shard_size)
    step = max(args.batch_size, 32)
    try:
        with Progress(len(todo), "embedding", unit="text", disable=args.quiet) as bar:
            for start in range(0, len(todo), step):
                chunk = todo[start : start + step]
                writer.add([{"text": t} for t in chunk], pipe.encode_texts(chunk).cpu().numpy())
                bar.update(len(chunk))
    finally:
        writer.flush()
        store.write_errors([])
    store.write_manifest(manifest, rows=kept + writer.written)
    print(f"{kept + writer.written} texts in {args.output} ({writer.written} new)", file=sys.stderr)
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
    from .image_processing import load_image
    from .store import EmbeddingStore, cosine_top_k

    if (args.query is None) == (args.image is None):
        raise CLIError('give a text query or --image PATH (one of them)')
    _positive("--top-k", args.top_k)
    store = EmbeddingStore(args.store)
    manifest = store.read_manifest()
    rows, matrix = store.load()
    pipe = load_pipeline(args, model=args.model or manifest["model"])
    if pipe._embed_dim() != manifest["dim"]:
        raise CLIError(f"--model gives {pipe._embed_dim()}-d embeddings but {args.store} holds {manifest['dim']}-d ones")
    if args.image:
        query = pipe.embed_pixels(pipe.preprocess_images([load_image(args.image)]))[0]
    else:
        query = pipe.encode_texts([args.query])[0]
    top, scores = cosine_top_k(matrix, query.cpu().numpy(), args.top_k)
    key = store.key
    if args.paths_only:
        for i in top:
            print(rows[i][key])
        return 0
    if args.format == "json":
        hits = [{"rank": r + 1, "score": float(s), key: rows[i][key]} for r, (i, s) in enumerate(zip(top, scores, strict=True))]
        print(json.dumps(hits, indent=2, ensure_ascii=False))
        return 0
    print(f"{'rank':>4}  {'score':>7}  {key}")
    for rank, (i, s) in enumerate(zip(top, scores, strict=True), 1):
        print(f"{rank:>4}  {s:>7.4f}  {rows[i][key]}")
    return 0


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
        output = export_onnx(args.model, args.output, opset=args.opset, dtype=args.dtype, quantize=args.quantize,
                             overwrite=args.overwrite)
    except ImportError as e:
        raise CLIError(str(e)) from None
    info = json.loads((output / "onnx_export.json").read_text(encoding="utf-8"))
    for file, check in info["verification"].items():
        diffs = ", ".join(f"{name} {value:.2g}" for name, value in check["max_abs_diff"].items())
        size = (output / file).stat().st_size / 2**20
        print(f"{output / file}  {size:.1f} MiB  max abs diff to PyTorch: {diffs}; min cosine {check['min_cosine']:.6f}")
    return 0


# ------------------------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

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

    p = sub.add_parser("classify", help="zero-shot classify images against labels", epilog=CLASSIFY_EXAMPLES,
                       formatter_class=fmt, description="Score each image against every label (sigmoid scores).")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files, folders (recursive) or URLs")
    p.add_argument("--labels", nargs="+", metavar="LABEL", help="candidate labels")
    p.add_argument("--labels-file", metavar="FILE", help="file with one label per line")
    p.add_argument("--template", default="This is a photo of {}.", help="prompt template (default: %(default)r)")
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="only the K best labels per image")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table", help="output format (default: table)")
    add_model_options(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("embed", help="embed a folder of images (or lines of text) into a resumable store",
                       epilog=EMBED_EXAMPLES, formatter_class=fmt,
                       description="Write L2-normalised embeddings to OUT; re-running updates OUT incrementally.")
    p.add_argument("inputs", nargs="*", metavar="DIR_OR_FILES", help="image files or folders (recursive)")
    p.add_argument("--output", "-o", required=True, metavar="OUT", help="output folder (created or updated)")
    p.add_argument("--texts", metavar="FILE", help="embed the lines of FILE instead of images")
    p.add_argument("--shard-size", type=int, default=1024, metavar="N", help="rows per shard file (default: 1024)")
    add_model_options(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("search", help="exact cosine search in a store made by `siglip embed`",
                       epilog=SEARCH_EXAMPLES, formatter_class=fmt,
                       description="Rank the stored embeddings by cosine similarity to a text or an image.")
    p.add_argument("store", metavar="OUT", help="folder written by `siglip embed`")
    p.add_argument("query", nargs="?", help="text query")
    p.add_argument("--image", metavar="PATH", help="use this image as the query")
    p.add_argument("--top-k", type=int, default=10, metavar="K", help="number of results (default: 10)")
    p.add_argument("--paths-only", action="store_true", help="print only the paths (or texts), one per line")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format (default: table)")
    add_model_options(p, model_default=None)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("export", help="export a model for another runtime (ONNX)",
                       description="Export a model to another runtime's format.")
    formats = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    p = formats.add_parser("onnx", help="ONNX graphs of both towers, checked in ONNX Runtime",
                           epilog=EXPORT_ONNX_EXAMPLES, formatter_class=fmt,
                           description="Export to ONNX through torch.onnx (dynamo) and check every graph in ONNX "
                                       "Runtime against PyTorch on other batch sizes and shapes.")
    p.add_argument("--model", required=True, help=f"checkpoint folder, hub id, or '{DEMO_MODEL}'")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="folder to create")
    p.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset, 18..22 (default: torch's, 20)")
    p.add_argument("--dtype", default="float32", metavar="DTYPE", help="float32 (default) or float16")
    p.add_argument("--quantize", default=None, metavar="MODE", help="int8: dynamic int8 quantization (ONNX Runtime)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in DIR")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress messages")
    p.set_defaults(func=cmd_export_onnx)

    try:
        from .train import add_train_parser
    except ImportError:  # training module not present in a trimmed install
        add_train_parser = None
    if add_train_parser is not None:
        add_train_parser(sub)
    return parser


def _configure_logging(quiet: bool) -> None:
    """Messages of the "siglip" logger on the current stderr (re-bound on every call, for in-process use)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("siglip: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    _configure_logging(quiet=getattr(args, "quiet", False))
    from .hub import CheckpointError
    from .store import StoreError

    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("siglip: interrupted", file=sys.stderr)
        return 130
    except (CLIError, CheckpointError, StoreError, ValueError, FileNotFoundError, OSError) as e:
        message = str(e).strip().splitlines()
        print(f"siglip: error: {message[0] if message else type(e).__name__}", file=sys.stderr)
        for line in message[1:6]:
            print(f"  {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
