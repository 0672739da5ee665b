"""Embedding a folder on a Ray cluster: ``siglip embed ROOT --output STORE --engine ray``.

The driver lists the files once and decides what is new, changed or stale exactly as a local job does
(``jobs.plan_images``). Ray Data then reads and decodes the files in parallel tasks (``data.ImageFiles``, the
local decoder: same images, same skip-and-report messages), and an actor pool runs the model: one pipeline per
actor, ``shard_size`` rows per Ray batch, ``batch_size`` images per forward pass. Each actor writes its batches
as shards straight into the store, under its own writer name (``000012-00001a2b3f2a9c1e``: its process id and a
random part), so the driver never holds the embeddings and workers never write the same file. The store must be
on storage that every node sees (NFS, a shared disk, or one machine).

Ray retries a batch whose actor died; if the actor had already written the shard, the retry writes the rows
again, and the compaction the driver runs at the end (or the next run's, if the driver died) keeps one copy.
A killed job, or a killed worker, therefore re-embeds only what is missing and never leaves a row twice; rows
are made by ``store.image_row``, keyed relative to the same root (the same rows as a local run). Ray is
imported only here, when a job runs.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data import FileInfo, ImageFiles, collate, find_images
from .jobs import (
    EmbedReport,
    Failures,
    finish_job,
    model_id,
    on_device,
    plan_images,
    store_manifest,
)
from .progress import Progress
from .store import EmbeddingStore, ShardWriter, image_root, image_row

DECODE_CPUS = 1.0  # each decoding task


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or an ImportError naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError("--engine ray needs Ray Data: pip install 'siglip[ray]'") from None
    return ray


def _pack(inputs: dict[str, Any]) -> bytes:
    """One image's model inputs (tensors) as .npz bytes, to travel through Ray's object store without pickles."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: v.numpy() for k, v in inputs.items()})
    return buffer.getvalue()


def _unpack(data: bytes) -> dict[str, Any]:
    import torch

    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return {k: torch.from_numpy(arrays[k]) for k in arrays.files}


def decode_files(batch: dict[str, np.ndarray], image_processor: Any) -> dict[str, np.ndarray]:
    """Ray Data task: decode and preprocess a batch of files. Each comes back with its ``FileInfo`` (JSON) and
    packed inputs, or with the one-line message a local job would report."""
    files = ImageFiles([Path(p) for p in batch["path"]], image_processor)
    paths, infos, errors, inputs = [], [], [], []
    for i in range(len(files)):
        info, item, error, _warnings = files[i]  # decoding warnings stay in the worker
        paths.append(str(files.paths[i]))
        infos.append(json.dumps(vars(info)) if info is not None else "")
        errors.append(error[1] if error is not None else "")
        inputs.append(_pack(item) if item is not None else b"")
    return {
        "path": np.array(paths, dtype=object),
        "info": np.array(infos, dtype=object),
        "error": np.array(errors, dtype=object),
        "inputs": np.array(inputs, dtype=object),
    }


def writer_name() -> str:
    """A writer name unique across the cluster: this process's id (8 hex digits, so a shard says which worker wrote
    it) and 8 random hex digits (process ids repeat across nodes and restarts)."""
    return f"{os.getpid() & 0xFFFFFFFF:08x}{uuid.uuid4().hex[:8]}"


class EmbedShards:
    """Ray Data actor: one loaded pipeline; embeds each batch it gets and writes it as a shard of the store."""

    def __init__(
        self, model: str, dtype: Any, device: str, root: str, images: str, first_seq: int, batch_size: int
    ) -> None:
        from .pipelines import pipeline

        self.pipe = pipeline("zero-shot-image-classification", model=model, dtype=dtype, device=device)
        self.batch_size = batch_size
        self.images = Path(images)  # the folder row keys are relative to (the manifest's root)
        store = EmbeddingStore(root)
        # Shards named after this actor: its process id and a random part (a restarted actor gets a new name),
        # numbered on from the driver's last shard.
        self.writer = ShardWriter(
            store, rows=sys.maxsize, seconds=float("inf"), writer=writer_name(), first_seq=first_seq
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        good = [i for i, error in enumerate(batch["error"]) if not error]
        for start in range(0, len(good), self.batch_size):
            chunk = good[start : start + self.batch_size]
            infos = [FileInfo(**json.loads(batch["info"][i])) for i in chunk]
            inputs = collate(
                [(info, _unpack(batch["inputs"][i]), None, []) for info, i in zip(infos, chunk, strict=True)]
            )
            embeddings = self.pipe.embed_pixels(on_device(self.pipe, inputs.inputs)).cpu().numpy()
            self.writer.add([image_row(root=self.images, **vars(info)) for info in infos], embeddings)
        self.writer.flush()  # the batch is one shard: written whole, or (if the actor dies first) retried
        return {"path": batch["path"], "error": batch["error"]}


def _check_resources(ray: Any, num_workers: int, cpus: float, gpus: float, local: bool) -> None:
    """On a local cluster, refuse a pool that can never be scheduled (Ray would wait forever)."""
    have = ray.cluster_resources()
    need_cpus, need_gpus = num_workers * cpus + DECODE_CPUS, num_workers * gpus
    short = []
    if need_cpus > have.get("CPU", 0):
        short.append(f"{need_cpus:g} CPUs ({num_workers} workers x {cpus:g} + {DECODE_CPUS:g} for decoding)")
    if need_gpus > have.get("GPU", 0):
        short.append(f"{need_gpus:g} GPUs ({num_workers} workers x {gpus:g})")
    if short:
        message = f"the Ray pool needs {' and '.join(short)}; the cluster has {have.get('CPU', 0):g} CPUs and " + (
            f"{have.get('GPU', 0):g} GPUs: lower --num-workers, --cpus-per-worker or --gpus-per-worker"
        )
        if local:
            raise ValueError(message)
        logging.getLogger("siglip").warning("%s (waiting for the autoscaler, if there is one)", message)


def embed_images_on_ray(
    inputs: Sequence[str | os.PathLike],
    store: EmbeddingStore | str | os.PathLike,
    model_name: str,
    *,
    pipe: Any = None,
    address: str | None = None,
    num_workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    dtype: Any = "auto",
    batch_size: int = 16,
    shard_size: int = 1024,
    storage_dtype: str = "float32",
    progress: bool = True,
    on_skip: Callable[[Failures], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> EmbedReport:
    """Embed the images under ``inputs`` into ``store`` on Ray: the store a local ``jobs.embed_images`` run gives
    (same rows, embeddings equal to fp32 noise), incremental and resumable in the same way.

    Args:
        store: the output folder (an ``EmbeddingStore`` or its path), on storage every node of the cluster sees.
        address: a running cluster (``"auto"``, ``"HOST:PORT"``, ``"ray://HOST:10001"``); None joins the cluster
            this process is connected to, or ``RAY_ADDRESS``, or starts a local one.
        num_workers, cpus_per_worker, gpus_per_worker: the actor pool (one loaded model per actor).
        dtype: the weights dtype each actor loads ``model_name`` in ("auto" resolves on the actor's device, as
            a local run does on its own).
        pipe: a pipeline loaded on the driver for the store's manifest and preprocessing (loaded on the CPU
            from ``model_name`` when None); only its preprocessing and dimensions are used.
    """
    from .optimization import command_dtype
    from .pipelines import pipeline

    for name, value in (("num_workers", num_workers), ("batch_size", batch_size), ("shard_size", shard_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise ValueError("cpus_per_worker must be > 0 and gpus_per_worker >= 0")
    ray = require_ray()
    store = store if isinstance(store, EmbeddingStore) else EmbeddingStore(store)
    paths = find_images(inputs)
    if not paths:
        raise ValueError(f"no images found in {' '.join(map(str, inputs))}")
    device = "cuda" if gpus_per_worker else "cpu"  # where the actors run the model
    dtype = command_dtype(dtype, device, str(model_name))  # "auto" resolved once, for the actors and the manifest
    if pipe is None:
        pipe = pipeline("zero-shot-image-classification", model=model_name, dtype=dtype, device="cpu")
    manifest = store_manifest(pipe, model_name, "image", image_root(inputs), storage_dtype)
    plan = plan_images(store, paths, manifest)
    if log:
        log(plan.summary())
    failures: Failures = list(plan.unreadable)
    if on_skip and failures:
        on_skip(failures)
    written = 0
    started = False
    try:
        if plan.todo:
            if not ray.is_initialized():
                ray.init(address=address, logging_level=logging.WARNING if not progress else logging.INFO)
                started = True
            _check_resources(ray, num_workers, cpus_per_worker, gpus_per_worker, local=started and address is None)
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            dataset = ray.data.from_items([{"path": str(p)} for p in plan.todo])
            dataset = dataset.map_batches(
                decode_files,
                fn_kwargs={"image_processor": pipe.image_processor},
                batch_size=batch_size,
                batch_format="numpy",
                num_cpus=DECODE_CPUS,
            )
            dataset = dataset.map_batches(
                EmbedShards,
                fn_constructor_kwargs={
                    "model": model_id(model_name),  # a folder by its absolute path: workers start elsewhere
                    "dtype": dtype,
                    "device": device,
                    "root": str(store.root.resolve()),
                    "images": str(plan.root),
                    "first_seq": store.next_seq(),
                    "batch_size": batch_size,
                },
                batch_size=shard_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=num_workers),
                num_cpus=cpus_per_worker,
                num_gpus=gpus_per_worker,
            )
            decode_errors: Failures = []
            with Progress(len(plan.todo), "embedding", unit="img", disable=not progress) as bar:
                for out in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                    errors = [(str(p), str(e)) for p, e in zip(out["path"], out["error"], strict=True) if e]
                    decode_errors += errors
                    if on_skip and errors:
                        on_skip(errors)
                    written += len(out["path"]) - len(errors)
                    bar.update(len(out["path"]))
            failures += sorted(decode_errors, key=lambda error: Path(error[0]))  # path order, as a local run
    finally:
        store.write_errors(failures)
        if started:
            ray.shutdown()
    total = store.compact("path")  # a batch retried after its shard was written leaves rows twice: keep one
    finish_job(store, manifest, total, log)
    return EmbedReport(total, written, failures)
