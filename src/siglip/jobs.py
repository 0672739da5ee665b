"""The batch jobs behind the ``siglip`` commands, callable from Python: classify image files, embed a folder (or
lines of text) into a resumable store, search a store.

Each job takes a loaded pipeline, shows progress on stderr, skips and reports unreadable items instead of failing,
and (for ``embed``) writes shards atomically, so an interrupted job keeps what it wrote and a rerun resumes. Files
are decoded as an image viewer shows them (``data.ImageFiles``: 16-bit and float images scaled to 8 bits), and the
warnings decoding raises come back as one-line messages (``on_warning``) instead of Python warnings. The command
line (``cli.py``) parses arguments, calls these and prints their results.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Batch, find_images, first_line, iter_image_batches, stat_files, warnings_as_lines, workers_for
from .image_io import load_image
from .index import search_many, update_index_if_present
from .pipelines import ImageClassificationPipeline, ZeroShotImageClassificationPipeline, rank_labels
from .progress import Progress
from .store import (
    STORAGE_DTYPES,
    EmbeddingStore,
    Hit,
    ShardWriter,
    StoreError,
    image_key,
    image_root,
    image_row,
    source_path,
)

Failures = list[tuple[str, str]]  # (item, one-line message)
Reporter = Callable[[Failures], None]
Pipeline = ZeroShotImageClassificationPipeline | ImageClassificationPipeline


class JobInterrupted(KeyboardInterrupt):
    """Ctrl-C during a job that saved its work first; the message says what was kept and how to resume."""


def on_device(pipe: Pipeline, inputs: dict[str, Any]) -> dict[str, Any]:
    """Image inputs on the model's device, floating ones in its dtype."""
    return {k: v.to(pipe.device, pipe.dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}


def split_sources(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """(http(s) URLs, everything else) in the given order."""
    urls = [i for i in items if i.startswith(("http://", "https://"))]
    return urls, [i for i in items if i not in urls]


def _stderr_skip(failures: Failures) -> None:
    for _, message in failures:
        print(f"siglip: skipped {message}", file=sys.stderr)


@dataclass
class Reports:
    """What a job skipped and what decoding warned about, kept and passed on as they happen: to ``on_skip`` /
    ``on_warning`` (None: only kept), with the progress bar ``bar`` cleared first so lines don't mix."""

    on_skip: Reporter | None = _stderr_skip
    on_warning: Reporter | None = None
    bar: Progress | None = None
    failures: Failures = field(default_factory=list)
    warnings: Failures = field(default_factory=list)

    def skip(self, items: Failures) -> None:
        self.failures.extend(items)
        self._tell(self.on_skip, items)

    def warn(self, items: Failures) -> None:
        self.warnings.extend(items)
        self._tell(self.on_warning, items)

    def batch(self, batch: Batch) -> None:
        self.warn(batch.warnings)
        self.skip(batch.errors)

    def _tell(self, reporter: Reporter | None, items: Failures) -> None:
        if reporter and items:
            if self.bar is not None:
                self.bar.clear()
            reporter(items)


# ------------------------------------------------------------------------------------------------------------
# classify
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Classification:
    """``results``: (image, [{"score", "label"}, ...] best first) per readable image; ``failures``: the others;
    ``warnings``: what decoding said about readable ones (converted 16-bit images, huge images, ...)."""

    results: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    failures: Failures = field(default_factory=list)
    warnings: Failures = field(default_factory=list)


def image_scorer(pipe: Pipeline, label_embeds: torch.Tensor | None = None) -> Callable[[dict[str, Any]], torch.Tensor]:
    """Scores (n, k) on the CPU of preprocessed images: a fine-tuned classifier's head (softmax or sigmoid, as its
    config says), or zero-shot sigmoid scores against the normalised text embeddings ``label_embeds`` (k, D)."""
    if isinstance(pipe, ImageClassificationPipeline):
        return lambda inputs: pipe.classify_pixels(on_device(pipe, inputs))
    if label_embeds is None:
        raise ValueError("zero-shot scores need label_embeds")
    return lambda inputs: pipe.scores(pipe.embed_pixels(on_device(pipe, inputs)), label_embeds)


def apply_to_files(
    pipe: Pipeline,
    paths: Sequence[Path],
    model: Callable[[dict[str, Any]], torch.Tensor],
    reports: Reports,
    *,
    batch_size: int = 16,
    num_workers: int | None = None,
) -> Iterator[tuple[list[str], torch.Tensor]]:
    """(paths, ``model(inputs)``) a batch at a time for the files that decode (with ``image_scorer``'s function:
    scores (n, k)); the others go to ``reports``, which also advances its bar."""
    for batch in iter_image_batches(paths, pipe.image_processor, batch_size, workers_for(len(paths), num_workers)):
        reports.batch(batch)
        if batch.inputs is not None:
            yield [info.path for info in batch.infos], model(batch.inputs)
        if reports.bar is not None:
            reports.bar.update(len(batch.infos) + len(batch.errors))


def classify_images(
    pipe: Pipeline,
    sources: Sequence[str],
    labels: Sequence[str] | None = None,
    template: str | None = None,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    batch_size: int = 16,
    num_workers: int | None = None,
    progress: bool = True,
    on_skip: Reporter | None = None,
    on_warning: Reporter | None = None,
) -> Classification:
    """Scores of image files, folders (searched recursively) and URLs: zero-shot against ``labels`` (filled into
    ``template``), or by a fine-tuned classifier's head over its own labels (then ``labels`` must be None).

    Results keep the order of ``sources`` (folders' files sorted) and name files as given. Each image keeps its
    ``top_k`` best labels, and of those the ones scoring at least ``threshold``. ``num_workers`` None picks by job
    size (``data.workers_for``).
    """
    urls, local = split_sources(sources)
    paths = find_images(local) if local else []
    if not paths and not urls:
        raise ValueError(f"no images found in {' '.join(sources)}")
    if isinstance(pipe, ImageClassificationPipeline):
        if labels:
            raise ValueError("a fine-tuned classifier scores its own labels; don't pass labels")
        labels = pipe.labels
        score = image_scorer(pipe)
    else:
        if not labels or template is None:
            raise ValueError("zero-shot classification needs labels and a template")
        score = image_scorer(pipe, pipe.label_embeddings(list(labels), template))
    labels = list(labels)
    out = Classification()

    def keep(names: list[str], scores: torch.Tensor) -> None:
        for name, row in zip(names, scores, strict=True):
            ranked = rank_labels(row, labels, top_k)
            if threshold is not None:
                ranked = [item for item in ranked if item["score"] >= threshold]
            out.results.append((name, ranked))

    with Progress(len(paths) + len(urls), "classifying", unit="img", disable=not progress) as bar:
        reports = Reports(on_skip, on_warning, bar, out.failures, out.warnings)
        for url in urls:
            try:
                with warnings_as_lines(url) as said:
                    image = load_image(url, rescale_wide=True)
                reports.warn(said)
                keep([url], score(pipe.preprocess_images([image])))
            except (ValueError, OSError) as e:
                reports.skip([(url, first_line(e))])
            bar.update()
        for names, scores in apply_to_files(
            pipe, paths, score, reports, batch_size=batch_size, num_workers=num_workers
        ):
            keep(names, scores)
    return out


# ------------------------------------------------------------------------------------------------------------
# embed
# ------------------------------------------------------------------------------------------------------------


def model_id(model_name: str) -> str:
    """How a store records the model that made it: a local folder as its absolute path, a hub id or the demo
    name as given."""
    folder = Path(model_name).expanduser()
    return str(folder.resolve()) if folder.is_dir() else model_name


def store_model(store: EmbeddingStore, model: str | None, default: str) -> str:
    """The model to use with ``store``: the one that made it when ``model`` is None (``default`` for a store that
    does not exist yet); a different model is a ``StoreError``, since two models' embeddings don't compare."""
    if not store.exists():
        return model or default
    made_with = store.read_manifest().get("model")
    if model is None:
        return made_with
    if model_id(model) != made_with:
        raise StoreError(
            f"{store.root} holds embeddings made by {made_with}, not {model}: scores between two models' embeddings "
            f"mean nothing. Leave out --model to use {made_with}, or use another store folder"
        )
    return model


def store_manifest(
    pipe: ZeroShotImageClassificationPipeline,
    model_name: str,
    kind: str,
    root: str | Path | None = None,
    storage_dtype: str = "float32",
) -> dict[str, Any]:
    """What a store records about how its rows were made: model, kind, dimension, compute and storage dtypes,
    preprocessing, and for images the folder their keys are relative to (``root``)."""
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage dtype must be one of {', '.join(STORAGE_DTYPES)}, got {storage_dtype!r}")
    manifest = {
        "kind": kind,
        "model": model_id(model_name),
        "model_type": pipe.model.config.model_type,
        "dim": pipe.embed_dim,
        "normalized": True,
        "dtype": "float32",
        "model_dtype": str(pipe.dtype).removeprefix("torch."),  # the compute dtype: embed refuses to mix them
        "storage_dtype": storage_dtype,
        "text_length": pipe.text_length,
        "preprocessing": pipe.image_processor.to_dict() if kind == "image" else {"max_length": pipe.text_length},
    }
    if root is not None:
        manifest["root"] = str(root)
    return manifest


@dataclass
class EmbedReport:
    """``total`` rows in the store after the job, ``written`` by it, ``failures`` skipped (path, message),
    ``warnings`` about files that were embedded (path, message)."""

    total: int
    written: int
    failures: Failures = field(default_factory=list)
    warnings: Failures = field(default_factory=list)


def _interrupted(written: int, total: int, what: str, store: EmbeddingStore) -> JobInterrupted:
    return JobInterrupted(
        f"{written} new {what} embedded and kept ({total} rows in {store.root}); run the same command again to "
        "resume where it stopped"
    )


@dataclass
class ImagePlan:
    """What an image job has to do after ``plan_images``: ``todo`` files to embed (new or changed), ``kept``
    rows left as they were, ``stale`` rows dropped, ``unreadable`` files (path, message) found but not statable;
    rows are keyed relative to ``root``."""

    found: int
    todo: list[Path]
    kept: int
    stale: int
    unreadable: Failures
    root: Path

    def summary(self) -> str:
        return (
            f"{self.found} images: {self.kept} already embedded, {len(self.todo)} to embed, "
            f"{self.stale} stale rows dropped"
        )


def plan_images(store: EmbeddingStore, paths: Sequence[Path], manifest: dict[str, Any]) -> ImagePlan:
    """Open (or create) the store for ``manifest`` (whose ``root`` the keys are relative to), keep rows whose files
    are unchanged (same size and modification time), compact away changed and deleted ones, and list the files
    left to embed. Local and Ray jobs both start here."""
    root = Path(manifest["root"])
    store.prepare(manifest)
    current, unreadable = stat_files(paths)  # broken links and vanished files are skipped and reported
    keys = {str(p): image_key(p, root) for p in paths}
    stats = {keys[p]: stat for p, stat in current.items()}
    rows, _ = store.read_rows("path")
    unchanged = {
        r["path"]
        for r in rows
        if (stat := stats.get(r["path"])) and (r["size"], r["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)
    }
    stale = [r["path"] for r in rows if r["path"] not in unchanged]
    kept = store.compact("path", stale)
    todo = [p for p in paths if str(p) in current and keys[str(p)] not in unchanged]
    return ImagePlan(len(paths), todo, kept, len(stale), unreadable, root)


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
    num_workers: int | None = None,
    shard_size: int = 1024,
    storage_dtype: str = "float32",
    progress: bool = True,
    on_skip: Reporter | None = _stderr_skip,
    on_warning: Reporter | None = None,
    log: Callable[[str], None] | None = None,
) -> EmbedReport:
    """Embed the images under ``inputs`` into ``store``, incrementally: files already embedded with the same size
    and modification time are kept, changed and deleted ones are dropped, new ones added.

    Rows are keyed by path relative to the inputs' common folder (``store.image_root``, kept in the manifest), so
    a moved folder needs no new embeddings. Ctrl-C keeps what was embedded and raises ``JobInterrupted``.
    """
    paths = find_images(inputs)
    if not paths:
        raise ValueError(f"no images found in {' '.join(map(str, inputs))}")
    manifest = store_manifest(pipe, model_name, "image", image_root(inputs), storage_dtype)
    plan = plan_images(store, paths, manifest)
    if log:
        log(plan.summary())
    writer = ShardWriter(store, shard_size)
    reports = Reports(on_skip, on_warning)
    reports.skip(plan.unreadable)
    interrupted = False
    try:
        with Progress(len(plan.todo), "embedding", unit="img", disable=not progress) as reports.bar:
            workers = workers_for(len(plan.todo), num_workers)
            for batch in iter_image_batches(plan.todo, pipe.image_processor, batch_size, workers):
                reports.batch(batch)
                if batch.inputs is not None:
                    embeddings = pipe.embed_pixels(on_device(pipe, batch.inputs)).cpu().numpy()
                    writer.add([image_row(root=plan.root, **vars(info)) for info in batch.infos], embeddings)
                reports.bar.update(len(batch.infos) + len(batch.errors))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        writer.flush()  # on Ctrl-C too: whatever was embedded is kept
        store.write_errors(reports.failures)
    total = plan.kept + writer.written
    if interrupted:
        store.write_manifest(manifest, rows=total)
        raise _interrupted(writer.written, total, "images", store)
    finish_job(store, manifest, total, log)
    return EmbedReport(total, writer.written, reports.failures, reports.warnings)


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
    """Embed ``texts`` (each once) into ``store``, incrementally: stored texts no longer wanted are dropped.
    Ctrl-C keeps what was embedded and raises ``JobInterrupted``."""
    wanted = sorted(set(texts))
    manifest = store_manifest(pipe, model_name, "text", storage_dtype=storage_dtype)
    store.prepare(manifest)
    rows, _ = store.read_rows("text")
    have = {r["text"] for r in rows}
    kept = store.compact("text", have - set(wanted))
    todo = [t for t in wanted if t not in have]
    writer = ShardWriter(store, shard_size)
    interrupted = False
    try:
        with Progress(len(todo), "embedding", unit="text", disable=not progress) as bar:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                writer.add([{"text": t} for t in chunk], pipe.encode_texts(chunk).cpu().numpy())
                bar.update(len(chunk))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        writer.flush()
        store.write_errors([])
    total = kept + writer.written
    if interrupted:
        store.write_manifest(manifest, rows=total)
        raise _interrupted(writer.written, total, "texts", store)
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
    """(m, D) float32 embeddings of text and image queries, in order (see ``check_queries``). Query images are
    read as the stored ones were (16-bit and float images scaled to 8 bits)."""
    queries = check_queries(queries)
    texts = [value for kind, value in queries if kind == "text"]
    text_embeddings = iter(pipe.encode_texts(texts).cpu().numpy()) if texts else iter(())
    out = []
    for kind, value in queries:
        if kind == "text":
            out.append(next(text_embeddings))
        else:
            image = load_image(value, rescale_wide=True)
            out.append(pipe.embed_pixels(pipe.preprocess_images([image]))[0].cpu().numpy())
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
    ``index.search_many``: the store's index when it is fresh, else exact search streamed over the shards). An
    image row's ``path`` is the file's path (the store keeps it relative to the embedded folder)."""
    manifest = store.read_manifest()
    if pipe.embed_dim != manifest["dim"]:
        raise ValueError(
            f"the model gives {pipe.embed_dim}-d embeddings but {store.root} holds {manifest['dim']}-d ones"
        )
    results = search_many(store, embed_queries(pipe, queries), top_k, threshold=threshold, exact=exact)
    if manifest.get("kind") == "image":
        results = [[({**row, "path": source_path(manifest, row["path"])}, s) for row, s in hits] for hits in results]
    return results


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
