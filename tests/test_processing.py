"""Processors (tokenizer + image processor) against transformers' SiglipProcessor / Siglip2Processor."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import siglip

from builders import write_checkpoint

FAMILIES = ["siglip", "fixres", "siglip2"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("processors")
    return {family: write_checkpoint(root / family, family) for family in FAMILIES}


def _images():
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (120, 33, 3), dtype=np.uint8)),
    ]


CALLS = [
    dict(text=["a photo of 2 cats", "A Dog!"], padding="max_length"),
    dict(text="This is a photo of a Pallas cat.", padding="max_length"),
    dict(text=["short", "a much longer caption about nothing"], padding=True),
    dict(text=["a", "b c"], padding="max_length", max_length=8, truncation=True),
    dict(text=["one"], text_kwargs={"padding": "max_length", "max_length": 12}),
    dict(text=["x " * 100], padding="max_length", truncation=True),
    dict(images=True),
    dict(images=True, text=["a cat", "a dog"], padding="max_length"),
]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("call", range(len(CALLS)))
def test_processor_matches_transformers(folders, family, call):
    kwargs = dict(CALLS[call])
    if kwargs.pop("images", False):
        kwargs["images"] = _images()
    ours = siglip.AutoProcessor.from_pretrained(folders[family])
    ref = transformers.AutoProcessor.from_pretrained(folders[family])
    assert type(ours).__name__ == type(ref).__name__
    a = ours(return_tensors="pt", **kwargs)
    b = ref(return_tensors="pt", **kwargs)
    assert sorted(a.keys()) == sorted(b.keys())
    for key in b:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def test_siglip_processor_does_not_pad_by_default_and_siglip2_does(folders):
    v1 = siglip.AutoProcessor.from_pretrained(folders["siglip"])
    v2 = siglip.AutoProcessor.from_pretrained(folders["siglip2"])
    assert 1 < len(v1(text="a cat")["input_ids"]) < 64  # a single string gives a flat list, as transformers
    assert v2(text="a cat", return_tensors="pt")["input_ids"].shape == (1, 64)
    with pytest.raises(ValueError, match="different lengths"):
        v1(text=["a", "a much longer text"], return_tensors="pt")


def test_siglip2_defaults_win_over_saved_image_settings_like_transformers(folders, tmp_path):
    folder = tmp_path / "patch8"
    shutil.copytree(folders["siglip2"], folder)
    config = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**config, "patch_size": 8, "max_num_patches": 64}))
    # The saved config says patch 8 / 64 patches; the processor defaults (16 / 256) win, as in transformers.
    ours = siglip.AutoProcessor.from_pretrained(folder)
    ref = transformers.AutoProcessor.from_pretrained(folder)
    out = ours(images=_images(), return_tensors="pt")
    assert out["pixel_values"].shape == ref(images=_images(), return_tensors="pt")["pixel_values"].shape
    assert out["pixel_values"].shape == (2, 256, 16 * 16 * 3)
    configured = siglip.AutoProcessor.from_pretrained(folder, max_num_patches=64, patch_size=8)
    assert configured(images=_images(), return_tensors="pt")["pixel_values"].shape == (2, 64, 192)


def test_batch_feature_to_casts_only_floating_tensors(folders):
    proc = siglip.AutoProcessor.from_pretrained(folders["siglip2"])
    batch = proc(text=["a"], images=_images()[:1], return_tensors="pt").to(torch.bfloat16)
    assert batch["pixel_values"].dtype == torch.bfloat16
    assert batch["input_ids"].dtype == torch.int64
    assert batch["pixel_attention_mask"].dtype == torch.int32
    batch = batch.to("cpu", torch.float32)
    assert batch.pixel_values.dtype == torch.float32  # attribute access
    model = siglip.AutoModel.from_pretrained(folders["siglip2"])
    with torch.no_grad():
        out = model(**proc(text=["a", "b"], images=_images(), return_tensors="pt").to(model.device))
    assert out.logits_per_image.shape == (2, 2)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_pretrained_round_trips_through_transformers(folders, family, tmp_path):
    ours = siglip.AutoProcessor.from_pretrained(folders[family])
    ours.save_pretrained(tmp_path / "ours")
    back = transformers.AutoProcessor.from_pretrained(tmp_path / "ours")
    assert type(back).__name__ == type(ours).__name__
    a = ours(text=["a red circle"], images=_images(), padding="max_length", return_tensors="pt")
    b = back(text=["a red circle"], images=_images(), padding="max_length", return_tensors="pt")
    for key in b:
        assert torch.equal(a[key], b[key]), key
    # transformers 5 writes processor_config.json with the image processor nested inside: we read that too
    transformers.AutoProcessor.from_pretrained(folders[family]).save_pretrained(tmp_path / "theirs")
    nested = json.loads((tmp_path / "theirs" / "processor_config.json").read_text())
    assert "image_processor" in nested and not (tmp_path / "theirs" / "preprocessor_config.json").exists()
    again = siglip.AutoProcessor.from_pretrained(tmp_path / "theirs")
    c = again(text=["a red circle"], images=_images(), padding="max_length", return_tensors="pt")
    for key in b:
        assert torch.equal(c[key], b[key]), key


def test_processor_errors(folders):
    proc = siglip.AutoProcessor.from_pretrained(folders["siglip"])
    with pytest.raises(ValueError, match="needs text, images, or both"):
        proc()
    with pytest.raises(ValueError, match="needs both an image_processor and a tokenizer"):
        siglip.SiglipProcessor(image_processor=None, tokenizer=proc.tokenizer)
    assert proc.batch_decode(proc(text=["hello world"])["input_ids"], skip_special_tokens=True) == ["hello world"]
