"""The batch jobs behind the ``siglip`` commands, callable from Python: classify image files, embed a folder (or
lines of text) into a resumable store, search a store.

Each job takes a loaded pipeline, shows progress on stderr, skips and reports unreadable items instead of failing,
and (for ``embed``) writes shards atomically, so an interrupted job keeps what it wrote and a rerun resumes. The
command line (``cli.py``) parses arguments, calls these and prints their results.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import find_images, first_line, iter_image_batches, stat_files
from .image_io import load_image
from .pipelines import ZeroShotImageClassificationPipeline, rank_labels
from .progress import Progress
from .store import EmbeddingStore, ShardWriter, cosine_top_k

Failures = list[tuple[str, str]]  # (item, one-line message)


def _on_device(pipe: ZeroShotImageClassificationPipeline, inputs: dict[str, Any]) -> dict[str, Any]:
    """Image inputs on the model's device, floating ones in its dtype."""
    return {k: v.to(pipe.device, pipe.dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}


def split_sources(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """(http(s) URLs, everything else) in the given order."""
    urls = [i for i in items if i.startswith(("http://", "https://"))]
    return urls, [i for i in items if i not in urls]


# ------------------------------------------------------------------------------------------------------------
# classify
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Classification:
    """``results``: (image, [{"score", "label"}, ...] best first) per readable image; ``failures``: the others."""

    results: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    failures: Failures = field(default_factory=list)


def classify_images(
    pipe: ZeroShotImageClassificationPipeline,
    sources: Sequence[str],
    labels: Sequence[str],
    template: str,
    *,
    top_k: int | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
) -> Classification:
    """Zero-shot scores of image files, folders (searched recursively) and URLs against ``labels``."""
    urls, local = split_sources(sources)
    paths = find_images(local) if local else []
    if not paths and not urls:
        raise ValueError(f"no images found in {' '.join(sources)}")
    label_embeds = pipe.label_embeddings(list(labels), template)
    out = Classification()

    def score(names: list[str], inputs: dict[str, Any]) -> None:
        image_embeds = pipe.embed_pixels(_on_device(pipe, inputs))
        for name, row in zip(names, pipe.scores(image_embeds, label_embeds), strict=True):
            out.results.append((name, rank_labels(row, list(labels), top_k)))

    with Progress(len(paths) + len(urls), "classifying", unit="img", disable=not progress) as bar:
        for url in urls:
            try:
                score([url], pipe.preprocess_images([load_image(url)]))
            except (ValueError, OSError) as e:
                out.failures.append((url, first_line(e)))
            bar.update()
        for batch in iter_image_batches(paths, pipe.image_processor, batch_size, num_workers):
            out.failures.extend(batch.errors)
            if batch.inputs is not None:
                score([info.path for info in batch.infos], batch.inputs)
            bar.update(len(batch.infos) + len(batch.errors))
    return out


# ------------------------------------------------------------------------------------------------------------
# embed
# ------------------------------------------------------------------------------------------------------------


def store_manifest(pipe: ZeroShotImageClassificationPipeline, model_name: str, kind: str) -> dict[str, Any]:
    """What a store records about how its rows were made: model, kind, dimension, compute dtype, preprocessing."""
    folder = Path(model_name).expanduser()
    model_id = str(folder.resolve()) if folder.is_dir() else model_name
    return {
        "kind": kind,
        "model": model_id,
        "model_type": pipe.model.config.model_type,
        "dim": pipe.embed_dim,
        "normalized": True,
        "dtype": "float32",
        "model_dtype": str(pipe.dtype).removeprefix("torch."),  # the compute dtype: embed refuses to mix them
        "text_length": pipe.text_length,
        "preprocessing": pipe.image_processor.to_dict() if kind == "image" else {"max_length": pipe.text_length},
    }


@dataclass
class EmbedReport:
    """``total`` rows in the store after the job, ``written`` by it, ``failures`` skipped (path, message)."""

    total: int
    written: int
    failures: Failures = field(default_factory=list)


def _stderr_skip(failures: Failures) -> None:
    for _, message in failures:
        print(f"siglip: skipped {message}", file=sys.stderr)


def embed_images(
    pipe: ZeroShotImageClassificationPipeline,
    inputs: Sequence[str],
    store: EmbeddingStore,
    model_name: str,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    shard_size: int = 1024,
    progress: bool = True,
    on_skip: Callable[[Failures], None] | None = _stderr_skip,
    log: Callable[[str], None] | None = None,
) -> EmbedReport:
    """Embed the images under ``inputs`` into ``store``, incrementally: files already embedded with the same size
    and modification time are kept, changed and deleted ones are dropped, new ones added."""
    paths = find_images(inputs)
    manifest = store_manifest(pipe, model_name, "image")
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
    if log:
        log(f"{len(paths)} images: {kept} already embedded, {len(todo)} to embed, {len(stale)} stale rows dropped")
    writer = ShardWriter(store, shard_size)
    failures: Failures = []

    def skip(items: Failures) -> None:
        failures.extend(items)
        if on_skip and items:
            on_skip(items)

    skip(unreadable)
    try:
        with Progress(len(todo), "embedding", unit="img", disable=not progress) as bar:
            for batch in iter_image_batches(todo, pipe.image_processor, batch_size, num_workers):
                skip(batch.errors)
                if batch.inputs is not None:
                    embeddings = pipe.embed_pixels(_on_device(pipe, batch.inputs)).cpu().numpy()
                    writer.add([vars(info) for info in batch.infos], embeddings)
                bar.update(len(batch.infos) + len(batch.errors))
    finally:
        writer.flush()  # on Ctrl-C too: whatever was embedded is kept
        store.write_errors(failures)
    total = kept + writer.written
    store.write_manifest(manifest, rows=total)
    return EmbedReport(total, writer.written, failures)


def embed_texts(
    pipe: ZeroShotImageClassificationPipeline,
    texts: Sequence[str],
    store: EmbeddingStore,
    model_name: str,
    *,
    batch_size: int = 32,
    shard_size: int = 1024,
    progress: bool = True,
) -> EmbedReport:
    """Embed ``texts`` (each once) into ``store``, incrementally: stored texts no longer wanted are dropped."""
    wanted = sorted(set(texts))
    manifest = store_manifest(pipe, model_name, "text")
    store.prepare(manifest)
    rows, _, _ = store.read("text")
    have = {r["text"] for r in rows}
    kept = store.compact("text", have - set(wanted))
    todo = [t for t in wanted if t not in have]
    writer = ShardWriter(store, shard_size)
    try:
        with Progress(len(todo), "embedding", unit="text", disable=not progress) as bar:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                writer.add([{"text": t} for t in chunk], pipe.encode_texts(chunk).cpu().numpy())
                bar.update(len(chunk))
    finally:
        writer.flush()
        store.write_errors([])
    total = kept + writer.written
    store.write_manifest(manifest, rows=total)
    return EmbedReport(total, writer.written)


# ------------------------------------------------------------------------------------------------------------
# search
# ------------------------------------------------------------------------------------------------------------


def search(
    pipe: ZeroShotImageClassificationPipeline,
    store: EmbeddingStore,
    *,
    text: str | None = None,
    image: str | None = None,
    top_k: int = 10,
) -> list[tuple[dict[str, Any], float]]:
    """The ``top_k`` stored rows most similar (cosine) to a text or an image query, best first."""
    manifest = store.read_manifest()
    rows, matrix = store.load()
    if pipe.embed_dim != manifest["dim"]:
        raise ValueError(
            f"the model gives {pipe.embed_dim}-d embeddings but {store.root} holds {manifest['dim']}-d ones"
        )
    if image is not None:
        query = pipe.embed_pixels(pipe.preprocess_images([load_image(image)]))[0]
    else:
        query = pipe.encode_texts([text])[0]
    top, scores = cosine_top_k(matrix, query.cpu().numpy().astype(np.float32), top_k)
    return [(rows[i], float(s)) for i, s in zip(top, scores, strict=True)]
