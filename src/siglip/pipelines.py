"""Zero-shot image classification and embedding helpers: ``siglip.pipeline("zero-shot-image-classification")``,
and ``siglip.pipeline("image-classification")`` for fine-tuned ``*ForImageClassification`` checkpoints.

Same calls and outputs as transformers' ``ZeroShotImageClassificationPipeline``
(``pipelines/zero_shot_image_classification.py``) and ``ImageClassificationPipeline``
(``pipelines/image_classification.py``), with two differences that matter in practice:

* label embeddings are computed once per set of (labels, template) and cached on the pipeline, and images are
  batched, so n images x k labels costs n image passes and k text passes (transformers re-encodes every label
  for every image);
* the text length is the model's own position-table size (transformers hard-codes 64, which overflows
  checkpoints with a 16-token table such as siglip-so400m-patch14-224).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .auto import AutoImageProcessor, AutoModel, AutoModelForImageClassification, AutoTokenizer
from .files import Checkpoint, is_onnx_export, split_hub_kwargs
from .image_io import load_image
from .onnx_backend import OnnxModel, load_onnx_export
from .optimization import optimize as optimize_model
from .weights import resolve_device

DEFAULT_TEMPLATE = "This is a photo of {}."
TASKS = ("zero-shot-image-classification", "image-classification")
TEXT_INPUT_NAMES = ("input_ids", "attention_mask")  # what the text tower takes from a tokenizer's output


def resolve_pipeline_device(device: Any) -> torch.device:
    """transformers' conventions: an int is a CUDA index (-1 = CPU); strings and torch.device as usual."""
    if device == -1:
        return torch.device("cpu")
    if isinstance(device, int) and not isinstance(device, bool) and not torch.cuda.is_available():
        raise ValueError(f"device={device} asks for CUDA GPU {device}, but CUDA is not available on this machine")
    return resolve_device(device, None)


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_labels(
    candidate_labels: Any,
    hypothesis_template: Any,
    names: tuple[str, str] = ("candidate_labels", "hypothesis_template"),
) -> list[str]:
    """Validate labels and template with errors that name the problem, and the argument by ``names`` (the command
    line passes its flags, ``("--labels", "--template")``)."""
    labels_name, template_name = names
    if isinstance(candidate_labels, str):
        candidate_labels = [candidate_labels]
    if not isinstance(candidate_labels, (list, tuple)):
        raise ValueError(f"{labels_name} must be a list of strings, got {type(candidate_labels).__name__}")
    if not candidate_labels:
        raise ValueError(f"{labels_name} is empty: give at least one label")
    bad = [label for label in candidate_labels if not isinstance(label, str)]
    if bad:
        raise ValueError(f"{labels_name} must all be strings; got {bad[:3]!r}")
    duplicates = sorted({label for label in candidate_labels if candidate_labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"{labels_name} has duplicates: {duplicates}")
    if not isinstance(hypothesis_template, str) or "{}" not in hypothesis_template:
        raise ValueError(
            f"{template_name} must contain '{{}}' where the label goes, got {hypothesis_template!r} "
            "(pass '{}' if the labels are already full sentences)"
        )
    return list(candidate_labels)


class _ImagePipeline:
    """What the two pipelines share: a model in eval mode, its image processor, device, dtype, image loading."""

    def __init__(self, model: Any, image_processor: Any, batch_size: int = 8) -> None:
        self.model = model.eval()
        self.image_processor = image_processor
        self.batch_size = _check_batch_size(batch_size)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def preprocess_images(self, images: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Model inputs for a list of already-loaded images, on the model's device and dtype."""
        batch = self.image_processor(list(images), return_tensors="pt")
        return dict(batch.to(self.device).to(self.dtype))

    def _image_batches(
        self, images: Any, batch_size: int | None, timeout: float | None
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Model inputs for paths, URLs, PIL images, arrays or tensors (single or a list), a batch at a time. Paths,
        URLs and PIL images go through ``load_image`` first, as in transformers' pipelines: the EXIF orientation is
        applied and alpha is dropped (not composited). Arrays and tensors go to the processor as is."""
        from PIL import Image

        items = list(images) if isinstance(images, (list, tuple)) else [images]
        for chunk in _batches(items, _check_batch_size(batch_size or self.batch_size)):
            loaded = [load_image(x, timeout) if isinstance(x, (str, os.PathLike, Image.Image)) else x for x in chunk]
            yield self.preprocess_images(loaded)


class ZeroShotImageClassificationPipeline(_ImagePipeline):
    """Scores images against free-text labels with a SigLIP / SigLIP2 model (independent sigmoid scores).

    Args:
        model: a loaded ``SiglipModel`` / ``Siglip2Model``.
        tokenizer, image_processor: its preprocessing.
        batch_size: images per forward pass.
    """

    task = "zero-shot-image-classification"

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, batch_size: int = 8) -> None:
        if not hasattr(model, "get_image_features") or not hasattr(model, "logit_scale"):
            raise ValueError(
                f"zero-shot classification needs a SiglipModel or Siglip2Model, got {type(model).__name__}"
            )
        super().__init__(model, image_processor, batch_size)
        self.tokenizer = tokenizer
        self._label_cache: dict[tuple[tuple[str, ...], str], torch.Tensor] = {}

    @property
    def text_length(self) -> int:
        return self.model.config.text_config.max_position_embeddings

    # -- embeddings ----------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_texts(
        self, texts: str | Sequence[str], normalize: bool = True, batch_size: int | None = None
    ) -> torch.Tensor:
        """Text embeddings (N, D) for a string or list of strings, padded to the model's trained length."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise ValueError(f"texts must be strings; got {bad[:3]!r}")
        out = []
        for chunk in _batches(texts, _check_batch_size(batch_size or max(self.batch_size, 32))):
            emb = self.model.get_text_features(**self.tokenize(chunk))
            out.append(F.normalize(emb.float(), dim=-1) if normalize else emb.float())
        if not out:
            return torch.empty(0, self.embed_dim)
        return torch.cat(out)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Text-tower inputs on the model's device: ``input_ids`` padded to the trained length, plus
        ``attention_mask`` when the tokenizer returns one (its ``model_input_names`` say so), exactly as
        transformers' pipeline passes them to the model."""
        tokens = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.text_length, return_tensors="pt"
        )
        return {k: tokens[k].to(self.device) for k in TEXT_INPUT_NAMES if k in tokens}

    @torch.inference_mode()
    def embed_pixels(self, inputs: dict[str, torch.Tensor], normalize: bool = True) -> torch.Tensor:
        emb = self.model.get_image_features(**inputs).float()
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_images(
        self, images: Any, normalize: bool = True, batch_size: int | None = None, timeout: float | None = None
    ) -> torch.Tensor:
        """Image embeddings (N, D) for paths, URLs, PIL images, arrays or tensors (single or a list).

        Paths, URLs and PIL images go through ``load_image`` first, as in transformers' pipeline: the EXIF
        orientation is applied and alpha is dropped (not composited). Arrays and tensors go to the processor as is.
        """
        out = [self.embed_pixels(inputs, normalize) for inputs in self._image_batches(images, batch_size, timeout)]
        if not out:
            return torch.empty(0, self.embed_dim)
        return torch.cat(out)

    @property
    def embed_dim(self) -> int:
        """Width of the embeddings (the text head's output, which the image embeddings match)."""
        return self.model.config.text_config.projection_size

    def label_embeddings(self, candidate_labels: Sequence[str], hypothesis_template: str) -> torch.Tensor:
        """Normalised (k, D) embeddings of the filled-in template, cached per (labels, template)."""
        key = (tuple(candidate_labels), hypothesis_template)
        if key not in self._label_cache:
            sentences = [hypothesis_template.format(label) for label in candidate_labels]
            self._label_cache[key] = self.encode_texts(sentences)
        return self._label_cache[key]

    # -- classification --------------------------------------------------------------------------------------------
    def scores(self, image_embeds: torch.Tensor, label_embeds: torch.Tensor) -> torch.Tensor:
        """Sigmoid scores (n, k) from normalised embeddings: sigmoid(img . txt * exp(scale) + bias)."""
        scale = self.model.logit_scale.detach().float().exp().cpu()
        bias = self.model.logit_bias.detach().float().cpu()
        logits = image_embeds.cpu() @ label_embeds.cpu().t() * scale + bias
        return torch.sigmoid(logits)

    def __call__(
        self,
        image: Any = None,
        candidate_labels: Sequence[str] | None = None,
        hypothesis_template: str = DEFAULT_TEMPLATE,
        batch_size: int | None = None,
        top_k: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Classify one image (returns a list of {"score", "label"}) or a list of images (a list of such lists)."""
        if image is None:
            image = kwargs.pop("images", None)
        kwargs.pop("tokenizer_kwargs", None)  # accepted and ignored, as transformers 5 does
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        if image is None:
            raise ValueError("zero-shot-image-classification needs an image (a path, URL, PIL image or a list)")
        if candidate_labels is None:
            raise ValueError("zero-shot-image-classification needs candidate_labels")
        labels = check_labels(candidate_labels, hypothesis_template)
        single = not isinstance(image, (list, tuple))
        label_embeds = self.label_embeddings(labels, hypothesis_template)
        image_embeds = self.encode_images(image, batch_size=batch_size, timeout=timeout)
        results = [rank_labels(row, labels, top_k) for row in self.scores(image_embeds, label_embeds)]
        return results[0] if single else results


def rank_labels(scores: torch.Tensor, labels: Sequence[str], top_k: int | None = None) -> list[dict[str, Any]]:
    """[{"score", "label"}] sorted by descending score (stable for ties, as transformers)."""
    ranked = sorted(zip(scores.tolist(), labels, strict=True), key=lambda pair: -pair[0])
    if top_k is not None:
        ranked = ranked[: max(int(top_k), 0)]
    return [{"score": score, "label": label} for score, label in ranked]


SCORE_FUNCTIONS = ("sigmoid", "softmax", "none")


class ImageClassificationPipeline(_ImagePipeline):
    """Classifies images with a fine-tuned ``SiglipForImageClassification`` / ``Siglip2ForImageClassification``
    (what ``siglip train --task classification`` writes): its head's scores over its ``id2label``.

    Scores are transformers' ``ImageClassificationPipeline``'s: a sigmoid per label when the config's
    ``problem_type`` is ``multi_label_classification`` (or there is one label), the raw logits for
    ``regression``, else a softmax over the labels.

    Args:
        model: a loaded ``*ForImageClassification``.
        image_processor: its preprocessing.
        batch_size: images per forward pass.
    """

    task = "image-classification"

    def __init__(self, model: Any, image_processor: Any, batch_size: int = 8) -> None:
        if not hasattr(model, "classifier"):
            raise ValueError(
                f"image classification needs a SiglipForImageClassification or Siglip2ForImageClassification, got "
                f"{type(model).__name__}"
            )
        super().__init__(model, image_processor, batch_size)

    @property
    def labels(self) -> list[str]:
        """The class names in head order (``config.id2label``)."""
        id2label = self.model.config.id2label
        return [id2label[i] for i in range(len(id2label))]

    @property
    def score_function(self) -> str:
        """``sigmoid``, ``softmax`` or ``none``, from the config as transformers decides it."""
        config = self.model.config
        if config.problem_type == "regression":
            return "none"
        if config.problem_type == "multi_label_classification" or config.num_labels == 1:
            return "sigmoid"
        return "softmax"

    @torch.inference_mode()
    def classify_pixels(self, inputs: dict[str, torch.Tensor], function_to_apply: str | None = None) -> torch.Tensor:
        """Scores (n, num_labels), float32 on the CPU, for preprocessed images."""
        function = (function_to_apply or self.score_function).lower()
        if function not in SCORE_FUNCTIONS:
            raise ValueError(f"function_to_apply must be one of {', '.join(SCORE_FUNCTIONS)}, got {function!r}")
        logits = self.model(**inputs).logits.float().cpu()
        if function == "sigmoid":
            return torch.sigmoid(logits)
        return logits.softmax(-1) if function == "softmax" else logits

    def __call__(
        self,
        image: Any = None,
        top_k: int | None = 5,
        function_to_apply: str | None = None,
        timeout: float | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Classify one image (a list of {"score", "label"}, best first, ``top_k`` of them) or a list of images."""
        if image is None:
            image = kwargs.pop("images", None)
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        if image is None:
            raise ValueError("image-classification needs an image (a path, URL, PIL image or a list)")
        labels = self.labels
        results = [
            rank_labels(row, labels, top_k)
            for inputs in self._image_batches(image, batch_size, timeout)
            for row in self.classify_pixels(inputs, function_to_apply)
        ]
        return results[0] if not isinstance(image, (list, tuple)) else results


def checkpoint_task(checkpoint: str | os.PathLike | Checkpoint) -> str:
    """``image-classification`` for a fine-tuned classifier (``config.json`` names a ``*ForImageClassification``
    architecture), else ``zero-shot-image-classification``."""
    architectures = Checkpoint.resolve(checkpoint).config_dict().get("architectures") or []
    if any(str(name).endswith("ForImageClassification") for name in architectures):
        return "image-classification"
    return "zero-shot-image-classification"


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def load_model_and_preprocessing(
    model: str | os.PathLike | Checkpoint,
    dtype: Any = None,
    device: Any = None,
    device_map: Any = None,
    task: str = "zero-shot-image-classification",
    **kwargs: Any,
) -> tuple[Any, Any, Any]:
    """Model, tokenizer and image processor from one folder or hub id, resolved once (each file parsed once).
    For ``task="image-classification"``: the ``*ForImageClassification`` model, no tokenizer (None). An ONNX export
    folder (``siglip export onnx``) gives an ``OnnxModel``; ``providers=`` picks its ONNX Runtime execution
    providers."""
    checkpoint = Checkpoint.resolve(model, **split_hub_kwargs(kwargs))
    if is_onnx_export(checkpoint.folder):  # run by ONNX Runtime
        return load_onnx_export(checkpoint, dtype=dtype, device=device, device_map=device_map, **kwargs)
    if device_map is None:
        device = resolve_pipeline_device(device)
    table = AutoModelForImageClassification if task == "image-classification" else AutoModel
    loaded = table.from_pretrained(checkpoint, dtype=dtype, device=device, device_map=device_map, **kwargs)
    tokenizer = None if task == "image-classification" else AutoTokenizer.from_pretrained(checkpoint)
    return loaded, tokenizer, AutoImageProcessor.from_pretrained(checkpoint)


def pipeline(
    task: str | None = None,
    model: Any = None,
    *,
    tokenizer: Any = None,
    image_processor: Any = None,
    processor: Any = None,
    dtype: Any = None,
    device: Any = None,
    device_map: Any = None,
    batch_size: int = 8,
    optimize: bool = True,
    **kwargs: Any,
) -> ZeroShotImageClassificationPipeline | ImageClassificationPipeline:
    """``pipeline("zero-shot-image-classification", model="google/siglip2-base-patch16-224")``, or
    ``pipeline("image-classification", model="runs/flowers/checkpoint-0000100")`` for a fine-tuned classifier.

    ``model`` is a folder, a hub id, ``"siglip-demo"`` (the bundled demo model) or a loaded model (then pass
    ``tokenizer`` and ``image_processor``, or a ``processor``). Without ``task``, a checkpoint whose
    ``config.json`` names a ``*ForImageClassification`` gets the image-classification pipeline, any other the
    zero-shot one. ``dtype`` / ``device`` / ``device_map`` are as in ``from_pretrained`` (an int device is a CUDA
    index, as in transformers). ``optimize`` (default) runs the model through ``siglip.optimize``: the pipeline's
    ``model`` is then the fast inference-only twin, and a loaded model passed in is left as it was (converted
    copies go to the twin). ``optimize=False`` uses the plain model, moved and cast in place as transformers does.
    A folder written by ``siglip export onnx`` runs in ONNX Runtime (``providers=`` picks execution providers).
    """
    if model is None:
        raise ValueError("pipeline() needs model=: a checkpoint folder, a hub id or a loaded model")
    named = isinstance(model, (str, os.PathLike, Checkpoint))
    if task is None and named:
        model = Checkpoint.resolve(model, **split_hub_kwargs(kwargs))
        task = checkpoint_task(model)
    elif task is None:
        task = "image-classification" if hasattr(model, "classifier") else "zero-shot-image-classification"
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not supported; siglip provides {', '.join(TASKS)}")
    legacy_dtype = kwargs.pop("torch_dtype", None)  # transformers' older name for dtype
    dtype = dtype if dtype is not None else legacy_dtype
    if named:
        loaded, tok, proc = load_model_and_preprocessing(
            model, dtype=dtype, device=device, device_map=device_map, task=task, **kwargs
        )
        tokenizer = tokenizer or tok
        image_processor = image_processor or proc
        # an ONNX export is run by ONNX Runtime as exported: there is no PyTorch model to optimize
        model = optimize_model(loaded) if optimize and not isinstance(loaded, OnnxModel) else loaded
    else:
        if processor is not None:
            tokenizer = tokenizer or processor.tokenizer
            image_processor = image_processor or processor.image_processor
        if image_processor is None or (tokenizer is None and task != "image-classification"):
            raise ValueError("with a loaded model, pass tokenizer= and image_processor= (or processor=)")
        target = device if device is not None else device_map
        target = resolve_pipeline_device(target) if target is not None else None
        dtype = dtype if dtype not in (None, "auto") else None
        if optimize:
            model = optimize_model(model, dtype=dtype, device=target)
        else:
            model = model.to(target) if target is not None else model
            model = model.to(dtype) if dtype is not None else model
    if task == "image-classification":
        return ImageClassificationPipeline(model, image_processor, batch_size=batch_size)
    return ZeroShotImageClassificationPipeline(model, tokenizer, image_processor, batch_size=batch_size)
