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

from .data import FileInfo, find_images, first_line, iter_image_batches, stat_files
from .image_io import load_image
from .index import search_many, update_index_if_present
from .pipelines import ZeroShotImageClassificationPipeline, rank_labels
from .progress import Progress
from .store import STORAGE_DTYPES, EmbeddingStore, Hit, ShardWriter

Failures = list[tuple[str, str]]  # (item, one-line message)


def on_device(pipe: ZeroShotImageClassificationPipeline, inputs: dict[str, Any]) -> dict[str, Any]:
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
        image_embeds = pipe.embed_pixels(on_device(pipe, inputs))
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


def model_id(model_name: str) -> str:
    """How a store records a model: a checkpoint folder by its absolute path, anything else as given."""
    folder = Path(model_name).expanduser()
    return str(folder.resolve()) if folder.is_dir() else model_name


def store_manifest(
    pipe: ZeroShotImageClassificationPipeline, model_name: str, kind: str, storage_dtype: str = "float32"
) -> dict[str, Any]:
    """What a store records about how its rows were made: model, kind, dimension, preprocessing, storage dtype."""
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage dtype must be one of {', '.join(STORAGE_DTYPES)}, got {storage_dtype!r}")
    return {
        "kind": kind,
        "model": model_id(model_name),
        "model_type": pipe.model.config.model_type,
        "dim": pipe.embed_dim,
        "normalized": True,
        "dtype": "float32",
        "storage_dtype": storage_dtype,
        "text_length": pipe.text_length,
        "preprocessing": pipe.image_processor.to_dict() if kind == "image" else {"max_length": pipe.text_length},
    }


def check_store_model(manifest: dict[str, Any], model_name: str | None, root: Any) -> str:
    """The model to query a store with: ``model_name`` if given and the same as the store's, else the store's.

    Embeddings of two models do not compare, so another model is refused with an error naming both."""
    stored = manifest.get("model")
    if model_name is None or model_name == stored or model_id(model_name) == stored:
        if not stored:
            raise ValueError(f"{root} records no model; pass --model")
        return stored
    raise ValueError(
        f"{root} was embedded with {stored}, not {model_name}: embeddings of different models do not compare "
        "(leave out --model to use the store's, or embed again with the other model into another store)"
    )


@dataclass
class EmbedReport:
    """``total`` rows in the store after the job, ``written`` by it, ``failures`` skipped (path, message)."""

    total: int
    written: int
    failures: Failures = field(default_factory=list)


def _stderr_skip(failures: Failures) -> None:
    for _, message in failures:
        print(f"siglip: skipped {message}", file=sys.stderr)


def image_row(info: FileInfo) -> dict[str, Any]:
    """The store row of an embedded image file: what ``data.FileInfo`` records (path, size, mtime, width,
    height). Local and distributed jobs both make their rows here."""
    return dict(vars(info))


@dataclass
class ImagePlan:
    """What an image job has to do after ``plan_images``: ``todo`` files to embed (new or changed), ``kept``
    rows left as they were, ``stale`` rows dropped, ``unreadable`` files (path, message) found but not statable."""

    found: int
    todo: list[Path]
    kept: int
    stale: int
    unreadable: Failures

    def summary(self) -> str:
        return (
            f"{self.found} images: {self.kept} already embedded, {len(self.todo)} to embed, "
            f"{self.stale} stale rows dropped"
        )


def plan_images(store: EmbeddingStore, paths: Sequence[Path], manifest: dict[str, Any]) -> ImagePlan:
    """Open (or create) the store for ``manifest``, keep rows whose files are unchanged (same size and
    modification time), compact away changed and deleted ones, and list the files left to embed."""
    store.prepare(manifest)
    current, unreadable = stat_files(paths)  # broken links and vanished files are skipped and reported
    rows, _ = store.read_rows("path")
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
    return ImagePlan(len(paths), todo, kept, len(stale), unreadable)


def finish_job(
    store: EmbeddingStore, manifest: dict[str, Any], total: int, log: Callable[[str], None] | None = None
) -> None:
    """Record a finished job (the row count marks the store clean) and bring an index, if there is one, up to
    date with the shards."""
    store.write_manifest(manifest, rows=total)
    update_index_if_present(store, log=log)


def embed_images(
    pipe: ZeroShotImageClassificationPipeline,
    inputs: Sequence[str],
    store: EmbeddingStore,
    model_name: str,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    shard_size: int = 1024,
    storage_dtype: str = "float32",
    progress: bool = True,
    on_skip: Callable[[Failures], None] | None = _stderr_skip,
    log: Callable[[str], None] | None = None,
) -> EmbedReport:
    """Embed the images under ``inputs`` into ``store``, incrementally: files already embedded with the same size
    and modification time are kept, changed and deleted ones are dropped, new ones added."""
    paths = find_images(inputs)
    manifest = store_manifest(pipe, model_name, "image", storage_dtype)
    plan = plan_images(store, paths, manifest)
    if log:
        log(plan.summary())
    writer = ShardWriter(store, shard_size)
    failures: Failures = []

    def skip(items: Failures) -> None:
        failures.extend(items)
        if on_skip and items:
            on_skip(items)

    skip(plan.unreadable)
    try:
        with Progress(len(plan.todo), "embedding", unit="img", disable=not progress) as bar:
            for batch in iter_image_batches(plan.todo, pipe.image_processor, batch_size, num_workers):
                skip(batch.errors)
                if batch.inputs is not None:
                    embeddings = pipe.embed_pixels(on_device(pipe, batch.inputs)).cpu().numpy()
                    writer.add([image_row(info) for info in batch.infos], embeddings)
                bar.update(len(batch.infos) + len(batch.errors))
    finally:
        writer.flush()  # on Ctrl-C too: whatever was embedded is kept
        store.write_errors(failures)
    total = plan.kept + writer.written
    finish_job(store, manifest, total, log)
    return EmbedReport(total, writer.written, failures)


def embed_texts(
    pipe: ZeroShotImageClassificationPipeline,
    texts: Sequence[str],
    store: EmbeddingStore,
    model_name: str,
    *,
    batch_size: int = 32,
    shard_size: int = 1024,
    storage_dtype: str = "float32",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> EmbedReport:
    """Embed ``texts`` (each once) into ``store``, incrementally: stored texts no longer wanted are dropped."""
    wanted = sorted(set(texts))
    manifest = store_manifest(pipe, model_name, "text", storage_dtype)
    store.prepare(manifest)
    rows, _ = store.read_rows("text")
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
    finish_job(store, manifest, total, log)
    return EmbedReport(total, writer.written)


# ------------------------------------------------------------------------------------------------------------
# search
# ------------------------------------------------------------------------------------------------------------


Query = tuple[str, str]  # ("text", a text) or ("image", a path or URL)


def check_queries(queries: Sequence[Query]) -> list[Query]:
    """The queries, if each is ("text", words) or ("image", path); an empty text is refused by name."""
    for kind, value in queries:
        if kind not in ("text", "image") or not isinstance(value, str):
            raise ValueError(f"a query is ('text', str) or ('image', path), got {(kind, value)!r}")
        if kind == "text" and not value.strip():
            raise ValueError(f"the text query {value!r} is empty: give words to search for")
    return list(queries)


def embed_queries(pipe: ZeroShotImageClassificationPipeline, queries: Sequence[Query]) -> np.ndarray:
    """(m, D) float32 embeddings of text and image queries, in order (see ``check_queries``)."""
    queries = check_queries(queries)
    texts = [value for kind, value in queries if kind == "text"]
    text_embeddings = iter(pipe.encode_texts(texts).cpu().numpy()) if texts else iter(())
    out = []
    for kind, value in queries:
        if kind == "text":
            out.append(next(text_embeddings))
        else:
            out.append(pipe.embed_pixels(pipe.preprocess_images([load_image(value)]))[0].cpu().numpy())
    return np.stack(out).astype(np.float32) if out else np.zeros((0, pipe.embed_dim), np.float32)


def search_queries(
    pipe: ZeroShotImageClassificationPipeline,
    store: EmbeddingStore,
    queries: Sequence[Query],
    *,
    top_k: int | None = 10,
    threshold: float | None = None,
    exact: bool = False,
) -> list[list[Hit]]:
    """For each text or image query, the ``top_k`` stored rows most similar (cosine) to it, best first (see
    ``index.search_many``: the store's index when it is fresh, else exact search streamed over the shards)."""
    manifest = store.read_manifest()
    if pipe.embed_dim != manifest["dim"]:
        raise ValueError(
            f"the model gives {pipe.embed_dim}-d embeddings but {store.root} holds {manifest['dim']}-d ones"
        )
    return search_many(store, embed_queries(pipe, queries), top_k, threshold=threshold, exact=exact)


def search(
    pipe: ZeroShotImageClassificationPipeline,
    store: EmbeddingStore,
    *,
    text: str | None = None,
    image: str | None = None,
    top_k: int | None = 10,
    threshold: float | None = None,
    exact: bool = False,
) -> list[Hit]:
    """The ``top_k`` stored rows most similar (cosine) to a text or an image query, best first."""
    query = ("image", image) if image is not None else ("text", text)
    return search_queries(pipe, store, [query], top_k=top_k, threshold=threshold, exact=exact)[0]
