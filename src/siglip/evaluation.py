"""Checking a model on your own data, measured as CLIP_benchmark measures it (``siglip eval``; callable from Python).

* ``evaluate_classification``: an image-folder tree ``root/<class>/...``. A SigLIP model classifies zero-shot: each
  class name is filled into one or more templates, and several templates are ensembled the standard way (CLIP's,
  which CLIP_benchmark and big_vision use): the mean of the normalised per-template text embeddings, normalised
  again. A fine-tuned ``*ForImageClassification`` checkpoint is evaluated with its own head, folders matched to its
  ``id2label`` by name. Metrics: top-1 and top-5 accuracy, mean per-class recall (scikit-learn's balanced
  accuracy), a per-class table and the confusion matrix.
* ``evaluate_retrieval``: (image, caption) pairs from a ``.csv`` / ``.jsonl`` file (the format ``siglip train``
  reads). Image-to-text and text-to-image recall@1/5/10 as CLIP_benchmark computes them: an image counts as found
  at k when any of its captions is among its k best texts.

Results convert to CLIP_benchmark's JSON (``{"dataset", "model", "task", "metrics"}``, fractions in [0, 1]), with
the details after; ``plot_confusion`` draws the confusion matrix (the ``plot`` extra: matplotlib).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .data import class_folders, read_pair_file
from .jobs import Failures, Pipeline, Reporter, Reports, apply_to_files, image_scorer, on_device
from .pipelines import DEFAULT_TEMPLATE, ImageClassificationPipeline, ZeroShotImageClassificationPipeline
from .progress import Progress

RECALL_AT = (1, 5, 10)

# ------------------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------------------


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (targets, predictions), 1)
    return matrix


def classification_metrics(scores: np.ndarray, targets: np.ndarray) -> dict[str, float | None]:
    """CLIP_benchmark's ``acc1``, ``acc5`` and ``mean_per_class_recall`` of scores (n, k) against targets (n,).

    ``acc5`` is None with fewer than 5 classes (CLIP_benchmark reports NaN: top-5 would be trivially 1). The mean
    per-class recall averages over the classes that have images, as scikit-learn's ``balanced_accuracy_score``.
    """
    n, k = scores.shape
    if n == 0:
        raise ValueError("no images to score")
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = order == targets[:, None]
    recall = per_class_recall(confusion_matrix(targets, order[:, 0], k))
    return {
        "acc1": float(hits[:, 0].mean()),
        "acc5": float(hits[:, :5].any(axis=1).mean()) if k >= 5 else None,
        "mean_per_class_recall": float(np.nanmean(recall)),
    }


def per_class_recall(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class (NaN for a class without images)."""
    totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(confusion) / np.maximum(totals, 1), np.nan)


def retrieval_metrics(
    similarity: np.ndarray, text_image: np.ndarray, recall_at: Sequence[int] = RECALL_AT
) -> dict[str, float]:
    """CLIP_benchmark's retrieval recalls from a (n_images, n_texts) similarity matrix, where text ``j`` describes
    image ``text_image[j]``.

    ``text_retrieval_recall@k`` (image to text): the share of images with at least one of their texts among their
    k most similar texts. ``image_retrieval_recall@k`` (text to image): the share of texts whose image is among
    their k most similar images. k larger than the candidates counts them all.
    """
    n_images, n_texts = similarity.shape
    positive = np.zeros((n_images, n_texts), dtype=bool)
    positive[text_image, np.arange(n_texts)] = True
    texts_ranked = np.argsort(-similarity, axis=1, kind="stable")  # (n_images, n_texts)
    images_ranked = np.argsort(-similarity.T, axis=1, kind="stable")  # (n_texts, n_images)
    text_hits = np.take_along_axis(positive, texts_ranked, axis=1)
    image_hits = images_ranked == text_image[:, None]
    metrics = {}
    for k in recall_at:
        metrics[f"image_retrieval_recall@{k}"] = float(image_hits[:, :k].any(axis=1).mean())
        metrics[f"text_retrieval_recall@{k}"] = float(text_hits[:, :k].any(axis=1).mean())
    return metrics


def ensemble_label_embeddings(
    pipe: ZeroShotImageClassificationPipeline, classnames: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """(k, D) class embeddings: per class, the mean of its normalised embeddings under each template, normalised
    (CLIP's prompt ensembling; one template gives that template's embeddings unchanged)."""
    per_template = torch.stack([pipe.label_embeddings(list(classnames), t) for t in templates])  # (T, k, D)
    return F.normalize(per_template.mean(0), dim=-1)


# ------------------------------------------------------------------------------------------------------------
# Classification
# ------------------------------------------------------------------------------------------------------------


@dataclass
class ClassificationResult:
    """What ``evaluate_classification`` measured. ``labels`` are the class names scored (the folders' class names,
    or a classifier's ``id2label``), ``folders`` the folder of each label ("" when a classifier label has none);
    ``scores`` (n, k) and ``targets`` (n,) are per image, ``paths`` name them."""

    dataset: str
    model: str
    task: str
    labels: list[str]
    folders: list[str]
    templates: list[str]
    paths: list[str]
    targets: np.ndarray
    scores: np.ndarray
    failures: Failures = field(default_factory=list)
    warnings: Failures = field(default_factory=list)

    @property
    def predictions(self) -> np.ndarray:
        return self.scores.argmax(axis=1)

    @property
    def confusion(self) -> np.ndarray:
        return confusion_matrix(self.targets, self.predictions, len(self.labels))

    @property
    def metrics(self) -> dict[str, float | None]:
        return classification_metrics(self.scores, self.targets)

    def per_class(self) -> list[dict[str, Any]]:
        """One row per label: images, correct, recall, precision (None where undefined) and the label its images
        were most often mistaken for."""
        confusion = self.confusion
        recall = per_class_recall(confusion)
        predicted = confusion.sum(axis=0)
        rows = []
        for i, label in enumerate(self.labels):
            wrong = confusion[i].copy()
            wrong[i] = 0
            rows.append(
                {
                    "label": label,
                    "folder": self.folders[i],
                    "images": int(confusion[i].sum()),
                    "correct": int(confusion[i, i]),
                    "recall": None if np.isnan(recall[i]) else float(recall[i]),
                    "precision": float(confusion[i, i] / predicted[i]) if predicted[i] else None,
                    "confused_with": self.labels[int(wrong.argmax())] if wrong.any() else None,
                }
            )
        return rows

    def to_json(self) -> dict[str, Any]:
        """CLIP_benchmark's result object, then the details: labels, templates, counts, per-class rows, confusion."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "task": self.task,
            "metrics": self.metrics,
            "labels": self.labels,
            "templates": self.templates,
            "images": len(self.paths),
            "skipped": len(self.failures),
            "per_class": self.per_class(),
            "confusion_matrix": self.confusion.tolist(),
        }


def class_tree(
    root: str | Path, classnames: Sequence[str] | None = None, *, zero_shot: bool = True, name: str = "classnames"
) -> tuple[dict[str, list[Path]], list[Path], list[str]]:
    """The class folders of ``root`` (``{folder: images}``, sorted), the images outside them, and the class name of
    each folder (``classnames``, or the folder names), checked before any model is loaded.

    Raises:
        NotADirectoryError: ``root`` is not a folder.
        ValueError: no image in any class folder; ``classnames`` (called ``name`` in the message, the command line
            passes its flag) does not give one name per folder; for ``zero_shot``, fewer than two classes or a name
            given to two folders (a classifier may map several folders to one of its labels).
    """
    folders, stray = class_folders(root)
    names = list(folders)
    shown = f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"
    if not names:
        raise ValueError(f"{root} has no class folders (expected {root}/<class>/<images>)")
    if not any(folders.values()):
        raise ValueError(f"{root}: no images in its class folders ({shown})")
    if classnames is None:
        classnames = names
    elif len(classnames) != len(names):
        raise ValueError(
            f"{name} has {len(classnames)} names for the {len(names)} class folders of {root} ({shown}): give one "
            "name per folder, in that order"
        )
    classnames = list(classnames)
    if zero_shot:
        if len(classnames) < 2:
            raise ValueError(f"{root} has 1 class folder ({shown}); zero-shot evaluation needs at least two")
        repeated = sorted({c for c in classnames if classnames.count(c) > 1})
        if repeated:
            raise ValueError(f"{name} gives two folders the same class name: {', '.join(map(repr, repeated))}")
    return folders, stray, classnames


def evaluate_classification(
    pipe: Pipeline,
    root: str | Path,
    *,
    model_name: str = "",
    classnames: Sequence[str] | None = None,
    templates: Sequence[str] = (DEFAULT_TEMPLATE,),
    batch_size: int = 16,
    num_workers: int | None = None,
    progress: bool = True,
    on_skip: Reporter | None = None,
    on_warning: Reporter | None = None,
) -> ClassificationResult:
    """Classify every image of the tree ``root/<class>/...`` and compare with its folder.

    Args:
        pipe: a zero-shot pipeline (SigLIP model) or an image-classification one (fine-tuned classifier).
        root: one sub-folder per class, searched recursively; for zero-shot every sub-folder is a candidate class,
            an empty one too.
        model_name: recorded in the result.
        classnames: the class name of each sub-folder in sorted order (default: the folder names). For a
            classifier, the ``id2label`` name each folder holds.
        templates: zero-shot prompts with ``{}``; several are ensembled. A classifier takes none.

    Unreadable images (and images lying in ``root`` outside a class) are skipped and reported.
    """
    zero_shot = not isinstance(pipe, ImageClassificationPipeline)
    folders, stray, classnames = class_tree(root, classnames, zero_shot=zero_shot)
    names = list(folders)
    if isinstance(pipe, ImageClassificationPipeline):
        labels, task, used_templates = pipe.labels, "classification", []
        unknown = [c for c in classnames if c not in labels]
        if unknown:
            raise ValueError(
                f"the classifier has no label {', '.join(repr(c) for c in unknown[:5])}: its labels are "
                f"{', '.join(labels[:10])}{', ...' if len(labels) > 10 else ''}; name the folders after them (or "
                "map them with class names)"
            )
        target_of = {folder: labels.index(name) for folder, name in zip(names, classnames, strict=True)}
        label_folders = {labels.index(name): folder for folder, name in zip(names, classnames, strict=True)}
        folder_of = [label_folders.get(i, "") for i in range(len(labels))]
        score = image_scorer(pipe)
    else:
        labels, task, used_templates = classnames, "zeroshot_classification", list(templates)
        target_of = {folder: i for i, folder in enumerate(names)}
        folder_of = names
        score = image_scorer(pipe, ensemble_label_embeddings(pipe, labels, used_templates))
    files = [(path, target_of[folder]) for folder, paths in folders.items() for path in paths]
    target_by_path = {str(path): target for path, target in files}
    paths: list[str] = []
    targets: list[int] = []
    scores: list[torch.Tensor] = []
    with Progress(len(files), "evaluating", unit="img", disable=not progress) as bar:
        reports = Reports(on_skip, on_warning, bar)
        reports.skip([(str(p), f"{p}: not inside a class folder") for p in stray])
        batches = apply_to_files(
            pipe, [p for p, _ in files], score, reports, batch_size=batch_size, num_workers=num_workers
        )
        for names_done, batch_scores in batches:
            paths += names_done
            targets += [target_by_path[name] for name in names_done]
            scores.append(batch_scores.float())
    if not scores:
        raise ValueError(f"none of the {len(files)} images in {root} could be read")
    return ClassificationResult(
        dataset=str(root),
        model=model_name,
        task=task,
        labels=list(labels),
        folders=folder_of,
        templates=used_templates,
        paths=paths,
        targets=np.asarray(targets, dtype=np.int64),
        scores=torch.cat(scores).numpy(),
        failures=reports.failures,
        warnings=reports.warnings,
    )


def json_text(data: dict[str, Any]) -> str:
    """A result as indented JSON in CLIP_benchmark's key order, a confusion matrix written one row per line."""
    body = {k: v for k, v in data.items() if k != "confusion_matrix"}
    text = json.dumps(body, indent=2, ensure_ascii=False)
    if "confusion_matrix" not in data:
        return text + "\n"
    rows = ",\n".join("    " + json.dumps(row) for row in data["confusion_matrix"])
    return text[: -len("\n}")] + ',\n  "confusion_matrix": [\n' + rows + "\n  ]\n}\n"


def plot_confusion(result: ClassificationResult, path: str | Path) -> Path:
    """Draw the confusion matrix (rows normalised to recall, counts written in) to a PNG. Needs matplotlib (the
    ``plot`` extra); without it, an ``ImportError`` that says how to install it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "drawing the confusion matrix needs matplotlib, siglip's plot extra: pip install matplotlib (or "
            "pip install -e '.[plot]' in a checkout)"
        ) from None
    confusion = result.confusion
    k = len(result.labels)
    totals = np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    side = min(4 + 0.35 * k, 30)
    figure = Figure(figsize=(side + 1.5, side))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(confusion / totals, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    axes.set_xticks(range(k), result.labels, rotation=90, fontsize=8)
    axes.set_yticks(range(k), result.labels, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    metrics = result.metrics
    axes.set_title(f"{Path(result.dataset).name or result.dataset}: top-1 {metrics['acc1']:.1%}, {result.model}")
    if k <= 30:
        for i, j in zip(*np.nonzero(confusion), strict=True):
            dark = confusion[i, j] / totals[i, 0] > 0.5
            axes.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7, color="w" if dark else "k")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path


# ------------------------------------------------------------------------------------------------------------
# Retrieval
# ------------------------------------------------------------------------------------------------------------


@dataclass
class RetrievalResult:
    """What ``evaluate_retrieval`` measured: the images and texts used (text ``j`` describes
    ``images[text_image[j]]``) and their (n_images, n_texts) cosine similarities."""

    dataset: str
    model: str
    images: list[str]
    texts: list[str]
    text_image: np.ndarray
    similarity: np.ndarray
    failures: Failures = field(default_factory=list)
    warnings: Failures = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float]:
        return retrieval_metrics(self.similarity, self.text_image)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model": self.model,
            "task": "zeroshot_retrieval",
            "metrics": self.metrics,
            "images": len(self.images),
            "texts": len(self.texts),
            "skipped": len(self.failures),
        }


def evaluate_retrieval(
    pipe: ZeroShotImageClassificationPipeline,
    pairs: str | Path,
    *,
    model_name: str = "",
    batch_size: int = 16,
    num_workers: int | None = None,
    progress: bool = True,
    on_skip: Reporter | None = None,
    on_warning: Reporter | None = None,
) -> RetrievalResult:
    """Embed the images and captions of a pairs file and rank each against the other.

    ``pairs`` is a ``.csv`` (header ``image,caption``) or ``.jsonl`` file, image paths relative to it; an image may
    have several captions (one row each). Rows that can't be used and images that don't decode are skipped and
    reported (with their captions).
    """
    if isinstance(pipe, ImageClassificationPipeline):
        raise ValueError("retrieval needs a SigLIP model with a text tower, not a fine-tuned image classifier")
    rows, skipped = read_pair_file(pairs)
    unique = list(dict.fromkeys(image for image, _ in rows))
    embeddings: dict[str, torch.Tensor] = {}

    def embed(inputs: dict[str, Any]) -> torch.Tensor:
        return pipe.embed_pixels(on_device(pipe, inputs)).cpu()

    with Progress(len(unique), "embedding images", unit="img", disable=not progress) as bar:
        reports = Reports(on_skip, on_warning, bar)
        reports.skip([(where, f"{where}: {reason}") for where, reason in skipped])
        for names, batch in apply_to_files(
            pipe, [Path(p) for p in unique], embed, reports, batch_size=batch_size, num_workers=num_workers
        ):
            embeddings.update(zip(names, batch, strict=True))
    images = [image for image in unique if image in embeddings]
    if not images:
        raise ValueError(f"none of the {len(unique)} images of {pairs} could be read")
    index = {image: i for i, image in enumerate(images)}
    kept = [(image, caption) for image, caption in rows if image in index]
    texts = [caption for _, caption in kept]
    text_embeds = pipe.encode_texts(texts).cpu()
    image_embeds = torch.stack([embeddings[image] for image in images])
    return RetrievalResult(
        dataset=str(pairs),
        model=model_name,
        images=images,
        texts=texts,
        text_image=np.asarray([index[image] for image, _ in kept], dtype=np.int64),
        similarity=(image_embeds @ text_embeds.T).numpy(),
        failures=reports.failures,
        warnings=reports.warnings,
    )
