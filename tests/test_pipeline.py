"""The zero-shot pipeline and embedding helpers against transformers' pipeline on the same checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import siglip

from builders import resave_tokenizer_with_transformers, write_checkpoint

FAMILIES = ["siglip", "fixres", "siglip2"]
LABELS = ["a cat", "a dog", "a red square", "two parrots", "a landscape"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {family: write_checkpoint(root / family, family, seed=3) for family in FAMILIES}


def _images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(40, 50), (64, 64), (90, 30), (17, 200)]
    return [Image.fromarray(rng.integers(0, 256, (*sizes[i % 4], 3), dtype=np.uint8)) for i in range(n)]


def _assert_same(ours, theirs):
    assert [r["label"] for r in ours] == [r["label"] for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert abs(a["score"] - b["score"]) <= 1e-5 * max(1.0, abs(b["score"]))


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_shot_matches_transformers_pipeline(folders, family, tmp_path):
    ours = siglip.pipeline("zero-shot-image-classification", model=str(folders[family]), batch_size=2)
    ref = transformers.pipeline("zero-shot-image-classification", model=str(folders[family]))
    images = _images(3)
    path = tmp_path / "image.png"
    images[0].save(path)
    # a list of PIL images, a single path, a custom template
    for a, b in zip(ours(images, candidate_labels=LABELS), ref(images, candidate_labels=LABELS), strict=True):
        _assert_same(a, b)
    _assert_same(ours(str(path), candidate_labels=LABELS), ref(str(path), candidate_labels=LABELS))
    template = "a blurry picture of {}"
    _assert_same(
        ours(images[1], candidate_labels=LABELS, hypothesis_template=template),
        ref(images[1], candidate_labels=LABELS, hypothesis_template=template),
    )


def test_bf16_pipeline_is_close_to_transformers(folders):
    ours = siglip.pipeline("zero-shot-image-classification", model=str(folders["siglip"]), dtype=torch.bfloat16)
    ref = transformers.pipeline("zero-shot-image-classification", model=str(folders["siglip"]), dtype=torch.bfloat16)
    assert ours.dtype == torch.bfloat16
    a, b = ours(_images(1)[0], candidate_labels=LABELS), ref(_images(1)[0], candidate_labels=LABELS)
    scores_a = {r["label"]: r["score"] for r in a}
    for r in b:
        assert abs(scores_a[r["label"]] - r["score"]) < 2e-2


def test_labels_are_encoded_once_and_images_are_batched(folders, monkeypatch):
    pipe = siglip.pipeline("zero-shot-image-classification", model=str(folders["siglip"]), batch_size=4)
    calls = {"text": 0, "image": 0, "images_seen": 0}
    text_fn, image_fn = pipe.model.get_text_features, pipe.model.get_image_features

    def count_text(**kw):
        calls["text"] += kw["input_ids"].shape[0]
        return text_fn(**kw)

    def count_image(**kw):
        calls["image"] += 1
        calls["images_seen"] += kw["pixel_values"].shape[0]
        return image_fn(**kw)

    monkeypatch.setattr(pipe.model, "get_text_features", count_text)
    monkeypatch.setattr(pipe.model, "get_image_features", count_image)
    images = _images(8)
    pipe(images, candidate_labels=LABELS)
    assert calls == {"text": len(LABELS), "image": 2, "images_seen": 8}  # n image passes in batches, k text passes
    pipe(images[:2], candidate_labels=LABELS)  # same labels and template: cached, no text pass
    assert calls["text"] == len(LABELS)
    pipe(images[:1], candidate_labels=LABELS, hypothesis_template="{}")
    assert calls["text"] == 2 * len(LABELS)


def test_text_length_comes_from_the_model_config(tmp_path):
    # A 16-token position table (as siglip-so400m-patch14-224): transformers' hard-coded 64 would overflow.
    folder = write_checkpoint(tmp_path / "short", "siglip", text={"max_position_embeddings": 16})
    pipe = siglip.pipeline("zero-shot-image-classification", model=str(folder))
    assert pipe.text_length == 16
    long_label = "a very long label " * 10
    result = pipe(_images(1)[0], candidate_labels=[long_label, "cat"])
    assert {r["label"] for r in result} == {long_label, "cat"}
    ref = transformers.pipeline("zero-shot-image-classification", model=str(folder))
    with pytest.raises(Exception):  # noqa: B017 - transformers fails here (64 tokens > 16 positions)
        ref(_images(1)[0], candidate_labels=["cat"])


def test_encode_helpers_match_model_embeddings(folders):
    pipe = siglip.pipeline("zero-shot-image-classification", model=str(folders["siglip2"]))
    images = _images(3)
    emb = pipe.encode_images(images, batch_size=2)
    raw = pipe.encode_images(images, normalize=False)
    assert emb.shape == (3, 32)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(emb, torch.nn.functional.normalize(raw, dim=-1))
    proc = siglip.AutoProcessor.from_pretrained(folders["siglip2"])
    model = siglip.AutoModel.from_pretrained(folders["siglip2"])
    with torch.no_grad():
        direct = model(**proc(text=["a cat"], images=images, return_tensors="pt"))
    torch.testing.assert_close(emb, direct.image_embeds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pipe.encode_texts("a cat"), direct.text_embeds, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(candidate_labels=[]), "candidate_labels is empty"),
        (dict(candidate_labels=["cat", 3]), "must all be strings"),
        (dict(candidate_labels=["cat", "cat"]), "duplicates: \\['cat'\\]"),
        (dict(candidate_labels=["cat"], hypothesis_template="a photo"), "must contain '\\{\\}'"),
        (dict(candidate_labels=None), "needs candidate_labels"),
    ],
)
def test_bad_labels_give_clear_errors(folders, kwargs, message):
    pipe = siglip.pipeline("zero-shot-image-classification", model=str(folders["siglip"]))
    with pytest.raises(ValueError, match=message):
        pipe(_images(1)[0], **kwargs)


def test_pipeline_arguments(folders):
    with pytest.raises(ValueError, match="task 'image-to-text' is not supported"):
        siglip.pipeline("image-to-text", model=str(folders["siglip"]))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device=0 asks for CUDA GPU 0, but CUDA is not available"):
            siglip.pipeline("zero-shot-image-classification", model=str(folders["siglip"]), device=0)
    model = siglip.AutoModel.from_pretrained(folders["siglip"])
    processor = siglip.AutoProcessor.from_pretrained(folders["siglip"])
    pipe = siglip.pipeline(model=model, processor=processor)
    direct = siglip.pipeline("zero-shot-image-classification", model=str(folders["siglip"]))
    _assert_same(pipe(_images(1)[0], candidate_labels=LABELS), direct(_images(1)[0], candidate_labels=LABELS))
    with pytest.raises(ValueError, match="pass tokenizer= and image_processor="):
        siglip.pipeline(model=model)
    top = pipe(_images(1)[0], candidate_labels=LABELS, top_k=2)
    assert len(top) == 2 and top[0]["score"] >= top[1]["score"]


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("family", ["siglip2", "fixres"])
def test_tokenizer_attention_mask_reaches_the_model(tmp_path, family, padding_side):
    """A tokenizer saved by transformers' Siglip2Tokenizer returns an attention mask; transformers' pipeline passes
    it to the model, and so must ours (scores, encode_texts), on left- and right-padded folders."""
    folder = resave_tokenizer_with_transformers(write_checkpoint(tmp_path / "ck", family, seed=5), padding_side)
    ours = siglip.pipeline("zero-shot-image-classification", model=str(folder))
    ref = transformers.pipeline("zero-shot-image-classification", model=str(folder))
    tokens = ours.tokenize(["a cat", "two parrots on a branch"])
    assert set(tokens) == {"input_ids", "attention_mask"}
    pad = 0 if padding_side == "left" else -1
    assert tokens["attention_mask"][0, pad] == 0  # the short label is padded on the chosen side
    images = _images(2)
    for a, b in zip(ours(images, candidate_labels=LABELS), ref(images, candidate_labels=LABELS), strict=True):
        _assert_same(a, b)
    model = transformers.AutoModel.from_pretrained(folder)
    hf_tokens = transformers.AutoTokenizer.from_pretrained(folder)(
        LABELS, padding="max_length", max_length=64, truncation=True, return_tensors="pt"
    )
    assert "attention_mask" in hf_tokens
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.get_text_features(**hf_tokens).pooler_output, dim=-1)
        without_mask = torch.nn.functional.normalize(
            model.get_text_features(input_ids=hf_tokens["input_ids"]).pooler_output, dim=-1
        )
    got = ours.encode_texts(LABELS)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert float((without_mask - expected).abs().max()) > 1e-4  # the mask matters on this checkpoint
