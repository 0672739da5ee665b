"""SigLIP models against transformers: every output, hidden state and attention map, both directions."""

from __future__ import annotations

import pytest
import torch
import transformers

import siglip

from conftest import assert_close, build_hf_model, save_hf

IMPLS = ["eager", "sdpa"]


def _inputs(config, n_text=3, n_image=2, seed=1, length=None, size=None):
    g = torch.Generator().manual_seed(seed)
    length = length or config.text_config.max_position_embeddings - 3
    size = size or config.vision_config.image_size
    ids = torch.randint(0, config.text_config.vocab_size, (n_text, length), generator=g)
    pixels = torch.randn(n_image, 3, size, size, generator=g)
    return ids, pixels


def _compare_pooling_output(ours, ref, what, rtol=1e-5, attentions=True):
    assert_close(ours.last_hidden_state, ref.last_hidden_state, rtol, f"{what}.last_hidden_state")
    if ref.pooler_output is None:
        assert ours.pooler_output is None
    else:
        assert_close(ours.pooler_output, ref.pooler_output, rtol, f"{what}.pooler_output")
    if ref.hidden_states is not None:
        assert len(ours.hidden_states) == len(ref.hidden_states)
        for i, (a, b) in enumerate(zip(ours.hidden_states, ref.hidden_states, strict=True)):
            assert_close(a, b, rtol, f"{what}.hidden_states[{i}]")
    if attentions and ref.attentions:
        assert len(ours.attentions) == len(ref.attentions)
        for i, (a, b) in enumerate(zip(ours.attentions, ref.attentions, strict=True)):
            assert_close(a, b, rtol, f"{what}.attentions[{i}]")


@pytest.fixture(scope="module")
def joint(tmp_path_factory):
    ref = build_hf_model("SiglipModel")
    folder = save_hf(ref, tmp_path_factory.mktemp("joint"))
    eager = transformers.SiglipModel.from_pretrained(folder, attn_implementation="eager").eval()
    return folder, eager


@pytest.mark.parametrize("impl", IMPLS)
def test_joint_model_every_output_matches(joint, impl):
    folder, ref = joint
    ours = siglip.SiglipModel.from_pretrained(folder, attn_implementation=impl)
    assert ours.attn_implementation == impl
    ids, pixels = _inputs(ours.config)
    mask = torch.ones_like(ids)
    mask[1, -4:] = 0
    kwargs = dict(input_ids=ids, pixel_values=pixels, attention_mask=mask, output_hidden_states=True)
    with torch.no_grad():
        a = ours(**kwargs, output_attentions=True, return_loss=False)
        b = ref(**kwargs, output_attentions=True)
    for key in ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"):
        assert_close(a[key], b[key], what=key)
    assert a.logits_per_image.shape == (2, 3)
    _compare_pooling_output(a.text_model_output, b.text_model_output, "text")
    _compare_pooling_output(a.vision_model_output, b.vision_model_output, "vision")
    # the hidden_states tuple has num_layers + 1 entries, the last one before the final LayerNorm
    assert len(a.text_model_output.hidden_states) == ours.config.text_config.num_hidden_layers + 1
    assert not torch.equal(a.text_model_output.hidden_states[-1], a.text_model_output.last_hidden_state)


def test_sdpa_matches_transformers_sdpa_without_attention_maps(joint):
    folder, _ = joint
    ref = transformers.SiglipModel.from_pretrained(folder, attn_implementation="sdpa").eval()
    ours = siglip.SiglipModel.from_pretrained(folder)
    ids, pixels = _inputs(ours.config, seed=5)
    with torch.no_grad():
        a, b = ours(input_ids=ids, pixel_values=pixels), ref(input_ids=ids, pixel_values=pixels)
    assert_close(a.logits_per_image, b.logits_per_image, what="logits")
    assert list(a.keys()) == list(b.keys())


def test_loss_and_tuple_outputs(joint):
    folder, ref = joint
    ours = siglip.SiglipModel.from_pretrained(folder, attn_implementation="eager")
    ids, pixels = _inputs(ours.config, n_text=4, n_image=4, seed=2)
    with torch.no_grad():
        a = ours(input_ids=ids, pixel_values=pixels, return_loss=True)
        b = ref(input_ids=ids, pixel_values=pixels, return_loss=True)
        assert_close(a.loss, b.loss, what="loss")
        ta = ours(input_ids=ids, pixel_values=pixels, return_loss=True, return_dict=False)
        tb = ref(input_ids=ids, pixel_values=pixels, return_loss=True, return_dict=False)
    assert isinstance(ta, tuple) and len(ta) == len(tb) == 7
    for x, y in zip(ta[:5], tb[:5], strict=True):
        assert_close(x, y)
    assert isinstance(ta[5], tuple) and len(ta[5]) == len(tb[5])
    assert_close(a[1], a.logits_per_image)  # integer indexing follows field order, skipping None fields
    with pytest.raises(ValueError, match="as many texts as images"):
        ours(input_ids=ids[:3], pixel_values=pixels, return_loss=True)


def test_get_features_return_unnormalised_pooled_tensors(joint):
    folder, ref = joint
    ours = siglip.SiglipModel.from_pretrained(folder, attn_implementation="eager")
    ids, pixels = _inputs(ours.config, seed=3)
    with torch.no_grad():
        text, image = ours.get_text_features(input_ids=ids), ours.get_image_features(pixel_values=pixels)
        assert_close(text, ref.get_text_features(input_ids=ids).pooler_output)
        assert_close(image, ref.get_image_features(pixel_values=pixels).pooler_output)
    assert text.shape == (3, 48) and image.shape == (2, 48)
    assert not torch.allclose(text.norm(dim=-1), torch.ones(3))


def test_one_modality_leaves_the_other_none(joint):
    folder, ref = joint
    ours = siglip.SiglipModel.from_pretrained(folder)
    ids, pixels = _inputs(ours.config, seed=4)
    with torch.no_grad():
        image_only = ours(pixel_values=pixels)
        text_only = ours(input_ids=ids)
        both = ours(input_ids=ids, pixel_values=pixels)
    assert image_only.logits_per_image is None and image_only.text_embeds is None
    assert_close(image_only.image_embeds, both.image_embeds)
    assert text_only.image_embeds is None and text_only.vision_model_output is None
    assert_close(text_only.text_embeds, both.text_embeds)
    with pytest.raises(ValueError, match="needs input_ids, pixel_values, or both"):
        ours()


@pytest.mark.parametrize("size", [(46, 38), (64, 64), (30, 30)])
def test_interpolate_pos_encoding_other_resolutions(joint, size):
    folder, ref = joint
    ours = siglip.SiglipModel.from_pretrained(folder, attn_implementation="eager")
    pixels = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        a = ours.vision_model(pixels, interpolate_pos_encoding=True)
        b = ref.vision_model(pixels, interpolate_pos_encoding=True)
    _compare_pooling_output(a, b, f"vision@{size}")
    assert a.last_hidden_state.shape[1] == (size[0] // 8) * (size[1] // 8)


def test_wrong_resolution_without_interpolation_is_a_clear_error(joint):
    ours = siglip.SiglipModel.from_pretrained(joint[0])
    with pytest.raises(ValueError, match="give 25 patches but the position table has 9.*interpolate_pos_encoding"):
        ours.get_image_features(pixel_values=torch.randn(1, 3, 40, 40))


@pytest.mark.parametrize("impl", IMPLS)
def test_towers_standalone_and_from_joint_checkpoint(joint, impl, tmp_path):
    folder, ref = joint
    ids, pixels = _inputs(ref.config, seed=8)
    vision = siglip.SiglipVisionModel.from_pretrained(folder, attn_implementation=impl)
    text = siglip.SiglipTextModel.from_pretrained(folder, attn_implementation=impl)
    with torch.no_grad():
        _compare_pooling_output(vision(pixels), ref.vision_model(pixels), "vision tower")
        _compare_pooling_output(text(ids), ref.text_model(ids), "text tower")
    # a tower saved on its own (flat keys, model_type siglip_*_model) loads in both libraries
    vision.save_pretrained(tmp_path / "vision")
    back = transformers.SiglipVisionModel.from_pretrained(tmp_path / "vision").eval()
    again = siglip.AutoModel.from_pretrained(tmp_path / "vision")
    assert isinstance(again, siglip.SiglipVisionModel)
    with torch.no_grad():
        assert_close(back(pixels).pooler_output, vision(pixels).pooler_output)
        assert_close(again(pixels).pooler_output, vision(pixels).pooler_output)


def test_vision_without_head_and_text_shorter_than_table(tmp_path):
    ref = build_hf_model("vision", vision=dict(vision_use_head=False))
    ours = siglip.SiglipVisionModel.from_pretrained(save_hf(ref, tmp_path / "v"), attn_implementation="eager")
    assert not any(k.startswith("head.") for k in ours.state_dict())
    pixels = torch.randn(2, 3, 30, 30)
    with torch.no_grad():
        a, b = ours(pixels, output_hidden_states=True), ref(pixels, output_hidden_states=True)
    _compare_pooling_output(a, b, "headless vision")
    assert a.pooler_output is None
    ref_text = build_hf_model("text")
    ours_text = siglip.SiglipTextModel.from_pretrained(save_hf(ref_text, tmp_path / "t"))
    for length in (1, 5, 16):
        ids = torch.randint(0, 103, (2, length))
        with torch.no_grad():
            _compare_pooling_output(ours_text(ids), ref_text(ids), f"text length {length}")
    with pytest.raises(ValueError, match="17 tokens but the text model's position table holds 16"):
        ours_text(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"ids outside the vocabulary \[0, 103\): \[103\]"):
        ours_text(torch.full((1, 4), 103))


@pytest.mark.parametrize(
    "num_labels, labels",
    [
        (1, torch.tensor([0.5, -1.0, 2.0])),
        (4, torch.tensor([3, 0, 1])),
        (4, torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0]])),
    ],
    ids=["regression", "single_label", "multi_label"],
)
def test_image_classification_losses(tmp_path, num_labels, labels):
    ref = build_hf_model("SiglipForImageClassification", num_labels=num_labels)
    folder = save_hf(ref, tmp_path)
    ours = siglip.SiglipForImageClassification.from_pretrained(folder)
    ref = transformers.SiglipForImageClassification.from_pretrained(folder).eval()
    pixels = torch.randn(3, 3, 30, 30)
    with torch.no_grad():
        a = ours(pixel_values=pixels, labels=labels, output_hidden_states=True)
        b = ref(pixel_values=pixels, labels=labels, output_hidden_states=True)
    assert_close(a.logits, b.logits, what="logits")
    assert_close(a.loss, b.loss, what="loss")
    assert ours.config.problem_type == ref.config.problem_type
    for x, y in zip(a.hidden_states, b.hidden_states, strict=True):
        assert_close(x, y)


def test_classifier_from_base_checkpoint_gets_a_fresh_head(joint, caplog):
    folder, ref = joint
    ours = siglip.SiglipForImageClassification.from_pretrained(folder, num_labels=3)
    assert ours.classifier.weight.shape == (3, 48) and ours.classifier.weight.device.type == "cpu"
    assert "classifier.bias, classifier.weight not in the checkpoint" in caplog.text
    # the vision tower itself is the checkpoint's
    assert torch.equal(
        ours.vision_model.embeddings.patch_embedding.weight, ref.vision_model.embeddings.patch_embedding.weight
    )


def test_siglip_saves_transformers_loads(joint, tmp_path):
    folder, _ = joint
    ours = siglip.SiglipModel.from_pretrained(folder)
    ours.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    back = transformers.AutoModel.from_pretrained(tmp_path).eval()
    assert type(back).__name__ == "SiglipModel"
    ids, pixels = _inputs(ours.config, seed=9)
    with torch.no_grad():
        assert_close(
            back(input_ids=ids, pixel_values=pixels).logits_per_image,
            ours(input_ids=ids, pixel_values=pixels).logits_per_image,
        )


def test_bf16_agrees_within_2e2(joint):
    folder, _ = joint
    ours = siglip.SiglipModel.from_pretrained(folder, dtype=torch.bfloat16)
    ref = transformers.SiglipModel.from_pretrained(folder, dtype=torch.bfloat16).eval()
    assert ours.dtype == torch.bfloat16
    ids, pixels = _inputs(ours.config, seed=10)
    with torch.no_grad():
        a = ours(input_ids=ids, pixel_values=pixels)
        b = ref(input_ids=ids, pixel_values=pixels)
    for key in ("logits_per_image", "text_embeds", "image_embeds"):
        assert a[key].dtype == torch.bfloat16
        assert_close(a[key], b[key], rtol=2e-2, what=f"bf16 {key}")


def test_training_mode_backward_and_gradient_checkpointing(joint):
    folder, _ = joint
    ours = siglip.SiglipModel.from_pretrained(folder).train()
    ids, pixels = _inputs(ours.config, n_text=2, n_image=2, seed=11)
    loss = ours(input_ids=ids, pixel_values=pixels, return_loss=True).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in ours.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    ours.zero_grad()
    ours.gradient_checkpointing_enable()
    ours(input_ids=ids, pixel_values=pixels, return_loss=True).loss.backward()
    for name, p in ours.named_parameters():
        assert_close(p.grad, grads[name], rtol=1e-5, what=f"checkpointed grad {name}")


def test_random_init_matches_transformers_statistics():
    config = siglip.SiglipConfig(
        text_config=dict(vocab_size=1000, hidden_size=128, num_attention_heads=4, num_hidden_layers=1),
        vision_config=dict(hidden_size=128, num_attention_heads=4, num_hidden_layers=1, image_size=64),
    )
    torch.manual_seed(0)
    model = siglip.SiglipModel(config)
    sd = model.state_dict()
    assert sd["logit_scale"].item() == 0.0 and sd["logit_bias"].item() == 0.0
    assert abs(sd["vision_model.embeddings.position_embedding.weight"].std().item() - 128**-0.5) < 0.01
    assert abs(sd["text_model.embeddings.token_embedding.weight"].std().item() - 128**-0.5) < 0.005
    q = sd["text_model.encoder.layers.0.self_attn.q_proj.weight"]
    assert q.abs().max() <= (6 / 256) ** 0.5 + 1e-6  # xavier uniform bound
    assert torch.all(sd["text_model.encoder.layers.0.self_attn.q_proj.bias"] == 0)
    assert torch.all(sd["text_model.final_layer_norm.weight"] == 1)


def test_real_base_patch16_224_sizes_run_and_match(tmp_path):
    """google/siglip-base-patch16-224 at its real sizes (203M parameters), random weights, via from_pretrained."""
    torch.manual_seed(3)
    ref = transformers.SiglipModel(transformers.SiglipConfig()).eval()
    with torch.no_grad():
        ref.logit_scale.fill_(2.3)
        ref.logit_bias.fill_(-10.0)
    ref.save_pretrained(tmp_path)
    ours = siglip.AutoModel.from_pretrained(tmp_path)
    assert ours.config.text_config.hidden_size == 768 and ours.config.vision_config.image_size == 224
    assert ours.num_parameters() == sum(p.numel() for p in ref.parameters()) > 200_000_000
    ids = torch.randint(0, 32000, (2, 64))
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        a, b = ours(input_ids=ids, pixel_values=pixels), ref(input_ids=ids, pixel_values=pixels)
    assert_close(a.logits_per_image, b.logits_per_image, what="base logits")
    assert_close(a.image_embeds, b.image_embeds, what="base image embeds")
    assert_close(a.text_embeds, b.text_embeds, what="base text embeds")


def test_parameters_are_plain_and_replaceable(joint, tmp_path):
    """Each projection owns its parameters: replacing one by hand, a dtype round trip and deepcopy behave as in
    transformers, with and without autograd, and what is saved reads back in transformers."""
    import copy

    folder, ref = joint
    ours = siglip.SiglipModel.from_pretrained(folder, attn_implementation="eager")
    ref = copy.deepcopy(ref)
    ids, pixels = _inputs(ours.config, seed=12)
    storages = {p.untyped_storage().data_ptr() for p in ours.parameters()}
    assert len(storages) == len(list(ours.parameters()))  # no parameter is a view into another's buffer
    new_k = torch.randn_like(ours.vision_model.encoder.layers[0].self_attn.k_proj.weight)
    for model in (ours, ref):
        model.vision_model.encoder.layers[0].self_attn.k_proj.weight = torch.nn.Parameter(new_k.clone())
    with torch.no_grad():
        expected = ref(input_ids=ids, pixel_values=pixels)
        assert_close(ours(input_ids=ids, pixel_values=pixels).logits_per_image, expected.logits_per_image)
    assert_close(ours(input_ids=ids, pixel_values=pixels).logits_per_image.detach(), expected.logits_per_image)
    twin = copy.deepcopy(ours)
    with torch.no_grad():
        a = twin(input_ids=ids, pixel_values=pixels).logits_per_image
        assert torch.equal(a, ours(input_ids=ids, pixel_values=pixels).logits_per_image)
    ours.to(torch.float64).to(torch.float32)
    ours.save_pretrained(tmp_path)
    back = transformers.SiglipModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert_close(back(input_ids=ids, pixel_values=pixels).logits_per_image, expected.logits_per_image)
