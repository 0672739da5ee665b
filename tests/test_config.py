"""Configs: defaults, config.json round trips (unknown keys kept), validation, AutoConfig dispatch."""

from __future__ import annotations

import json

import pytest
import transformers

import siglip
from siglip.auto import CONFIG_CLASSES


@pytest.mark.parametrize("name", ["SiglipTextConfig", "SiglipVisionConfig", "Siglip2TextConfig", "Siglip2VisionConfig"])
def test_tower_defaults_match_transformers(name):
    ours = getattr(siglip, name)().to_dict()
    ref = getattr(transformers, name)().to_dict()
    for key, value in ours.items():
        assert ref[key] == value, f"{name}.{key}: ours {value!r} vs transformers {ref[key]!r}"
    # every architecture field transformers has, we have
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "hidden_act"):
        assert key in ours


@pytest.mark.parametrize("name", ["SiglipConfig", "Siglip2Config"])
def test_joint_defaults_match_transformers(name):
    ours, ref = getattr(siglip, name)(), getattr(transformers, name)()
    assert ours.initializer_factor == ref.initializer_factor
    assert ours.num_labels == ref.num_labels == 2
    assert ours.id2label == ref.id2label
    for part in ("text_config", "vision_config"):
        for key, value in getattr(ours, part).to_dict().items():
            assert getattr(ref, part).to_dict()[key] == value, f"{name}.{part}.{key}"


def test_projection_size_defaults_to_hidden_size():
    assert siglip.SiglipTextConfig(hidden_size=64, num_attention_heads=4).projection_size == 64
    assert siglip.SiglipTextConfig(hidden_size=64, num_attention_heads=4, projection_size=96).projection_size == 96


def test_hub_config_json_round_trip_keeps_unknown_keys(tmp_path):
    # The hub's google/siglip-base-patch16-224 config.json is essentially all defaults plus these keys.
    hub = {
        "architectures": ["SiglipModel"],
        "initializer_factor": 1.0,
        "model_type": "siglip",
        "text_config": {"model_type": "siglip_text_model", "some_future_key": [1, 2]},
        "torch_dtype": "float32",
        "transformers_version": "4.37.0.dev0",
        "vision_config": {"model_type": "siglip_vision_model", "image_size": 256},
    }
    (tmp_path / "config.json").write_text(json.dumps(hub))
    config = siglip.SiglipConfig.from_pretrained(tmp_path)
    assert config.vision_config.image_size == 256
    assert config.text_config.max_position_embeddings == 64
    out = config.to_dict()
    assert out["transformers_version"] == "4.37.0.dev0"
    assert out["torch_dtype"] == "float32"
    assert out["architectures"] == ["SiglipModel"]
    assert out["text_config"]["some_future_key"] == [1, 2]
    assert "id2label" not in out  # default head is left out, as transformers does
    config.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == out


def test_transformers_file_loads_and_our_file_loads_in_transformers(tmp_path):
    ref = transformers.SiglipConfig(
        text_config=dict(vocab_size=500, hidden_size=48, num_attention_heads=3, projection_size=64),
        vision_config=dict(hidden_size=64, num_attention_heads=4, image_size=40, patch_size=12, vision_use_head=False),
        num_labels=5,
    )
    ref.save_pretrained(tmp_path / "ref")
    ours = siglip.AutoConfig.from_pretrained(tmp_path / "ref")
    assert isinstance(ours, siglip.SiglipConfig)
    assert ours.text_config.projection_size == 64 and ours.vision_config.vision_use_head is False
    assert ours.num_labels == 5 and ours.id2label[4] == "LABEL_4"
    ours.save_pretrained(tmp_path / "ours")
    back = transformers.AutoConfig.from_pretrained(tmp_path / "ours")
    assert type(back).__name__ == "SiglipConfig"
    assert back.num_labels == 5
    assert back.text_config.projection_size == 64
    assert back.vision_config.vision_use_head is False
    assert back.vision_config.patch_size == 12 and back.vision_config.image_size == 40


def test_tower_config_reads_its_part_of_a_joint_file(tmp_path):
    siglip.SiglipConfig(vision_config={"image_size": 384, "patch_size": 14}).save_pretrained(tmp_path)
    vision = siglip.SiglipVisionConfig.from_pretrained(tmp_path)
    assert (vision.image_size, vision.patch_size, vision.num_patches) == (384, 14, 27 * 27)


def test_num_labels_override_and_labels():
    config = siglip.SiglipConfig(num_labels=3)
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    config = siglip.SiglipConfig.from_dict(config.to_dict(), num_labels=5)
    assert config.num_labels == 5
    config = siglip.SiglipConfig(id2label={"0": "cat", "1": "dog"})
    assert config.label2id == {"cat": 0, "dog": 1}


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: siglip.SiglipTextConfig(hidden_size=100, num_attention_heads=12), "hidden_size=100 is not divisible"),
        (lambda: siglip.SiglipVisionConfig(hidden_size=0), "hidden_size must be a positive integer, got 0"),
        (lambda: siglip.SiglipTextConfig(num_hidden_layers=-1), "num_hidden_layers must be a positive integer"),
        (lambda: siglip.SiglipTextConfig(vocab_size=2.5), "vocab_size must be a positive integer, got 2.5"),
        (lambda: siglip.SiglipVisionConfig(image_size=8, patch_size=16), "image_size=8 is smaller than patch_size=16"),
        (lambda: siglip.SiglipVisionConfig(hidden_act="nope"), "hidden_act='nope'"),
        (lambda: siglip.Siglip2VisionConfig(num_patches=200), "num_patches=200 is not a perfect square"),
        (lambda: siglip.SiglipTextConfig.from_dict({"model_type": "bert"}), "got model_type='bert'"),
        (lambda: siglip.SiglipConfig.from_dict({"model_type": "siglip2"}), "got model_type='siglip2'"),
        (lambda: siglip.SiglipConfig(problem_type="ranking"), "problem_type='ranking'"),
        (lambda: siglip.SiglipConfig(text_config=3), "text_config must be a dict"),
        (lambda: siglip.AutoConfig.from_dict({"model_type": "clip"}), "model_type='clip' is not a SigLIP config"),
    ],
)
def test_invalid_values_raise_naming_field_and_value(factory, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        factory()


def test_nested_invalid_value_is_reported_with_its_path(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "siglip", "vision_config": {"hidden_size": 30, "num_attention_heads": 4}})
    )
    with pytest.raises(ValueError, match="SiglipVisionConfig.hidden_size=30 is not divisible by num_attention_heads=4"):
        siglip.AutoConfig.from_pretrained(tmp_path)


def test_auto_config_dispatch_covers_every_model_type(tmp_path):
    for model_type, cls in CONFIG_CLASSES.items():
        folder = tmp_path / model_type
        cls().save_pretrained(folder)
        assert type(siglip.AutoConfig.from_pretrained(folder)) is cls
        assert json.loads((folder / "config.json").read_text())["model_type"] == model_type


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(siglip.CheckpointError, match="has no config.json"):
        siglip.AutoConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        siglip.AutoConfig.from_pretrained(tmp_path)
