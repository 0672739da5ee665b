"""The tools people bring to a transformers model, on ours: PEFT / LoRA, forward hooks, transformers.Trainer,
accelerate, torch.compile(fullgraph=True), torch.export and ONNX export.

Each case runs the same random checkpoint (written by transformers) through transformers and through siglip and
compares what the tool produces: outputs, losses, gradients, hook counts, saved adapters.
"""

from __future__ import annotations

import copy
import functools
import warnings

import pytest
import torch
import transformers

import siglip

from builders import joint_inputs as _inputs
from builders import write_checkpoint

peft = pytest.importorskip("peft")

transformers.logging.set_verbosity_error()

FAMILIES = ["siglip", "siglip2"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ecosystem")
    return {family: write_checkpoint(root / family, family, seed=7) for family in FAMILIES}


def _pair(folders, family: str, cls: str = "AutoModel", **kwargs):
    """(siglip model, transformers model) of the same checkpoint, in eval mode."""
    ours = getattr(siglip, cls).from_pretrained(folders[family], **kwargs)
    ref = getattr(transformers, cls).from_pretrained(folders[family], **kwargs).eval()
    return ours, ref


def _close(a: torch.Tensor, b: torch.Tensor, tol: float, what: str) -> None:
    a, b = a.detach().float(), b.detach().float()
    err = float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
    assert err <= tol, f"{what}: relative difference {err:.3g} > {tol}"


# ------------------------------------------------------------------------------------------------------------
# PEFT / LoRA
# ------------------------------------------------------------------------------------------------------------

TARGETS = {
    "q_v": ["q_proj", "v_proj"],
    "all_six": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "all_linear": "all-linear",
}


def _lora(model, targets, seed: int = 0):
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, init_lora_weights=True)
    wrapped = peft.get_peft_model(model, config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # lora_B starts at zero: make the adapter matter
        for name, p in wrapped.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return wrapped


def _lora_state(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "lora_" in k}


@pytest.mark.parametrize("targets", list(TARGETS))
@pytest.mark.parametrize("family", FAMILIES)
def test_lora_outputs_training_saving_and_merging_match_transformers(folders, family, targets, tmp_path):
    ours, ref = _pair(folders, family)
    ours, ref = _lora(ours, TARGETS[targets]), _lora(ref, TARGETS[targets])
    assert _lora_state(ours).keys() == _lora_state(ref).keys() and len(_lora_state(ours)) > 0
    inputs = _inputs(family)
    with torch.no_grad():
        base = ours.get_base_model()
        with ours.disable_adapter():
            plain = base(**inputs).logits_per_image
        a, b = ours(**inputs), ref(**inputs)
    assert float((a.logits_per_image - plain).abs().max()) > 1e-3, "the adapter must change the outputs"
    _close(a.logits_per_image, b.logits_per_image, 1e-5, "LoRA logits")
    _close(a.image_embeds, b.image_embeds, 1e-5, "LoRA image embeds")

    # a few training steps: same losses, same LoRA gradients (only LoRA parameters train)
    optimizers = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05) for m in (ours, ref)]
    for step in range(3):
        losses = []
        for model, optimizer in zip((ours, ref), optimizers, strict=True):
            model.train()
            optimizer.zero_grad()
            loss = model(**_inputs(family, seed=step), return_loss=True).loss
            loss.backward()
            losses.append(loss)
        assert float(losses[0]) == pytest.approx(float(losses[1]), rel=1e-5), f"step {step} loss"
        grads_ours = {n: p.grad for n, p in ours.named_parameters() if p.requires_grad}
        grads_ref = {n: p.grad for n, p in ref.named_parameters() if p.requires_grad}
        assert grads_ours.keys() == grads_ref.keys() and all("lora_" in n for n in grads_ours)
        # (the MAP head's nn.MultiheadAttention reads out_proj.weight without calling the module, in both
        # libraries, so a LoRA there gets no gradient on either side)
        assert {n for n, g in grads_ours.items() if g is None} == {n for n, g in grads_ref.items() if g is None}
        assert sum(g is not None for g in grads_ours.values()) >= len(grads_ours) - 2
        for name, grad in grads_ours.items():
            if grad is not None:
                _close(grad, grads_ref[name], 1e-4, f"step {step} grad {name}")
        for optimizer in optimizers:
            optimizer.step()
    ours.eval()
    ref.eval()

    # an adapter saved by one library loads on the other
    ours.save_pretrained(tmp_path / "ours_adapter")
    ref.save_pretrained(tmp_path / "ref_adapter")
    reloaded_ref = peft.PeftModel.from_pretrained(
        transformers.AutoModel.from_pretrained(folders[family]), tmp_path / "ours_adapter"
    ).eval()
    reloaded_ours = peft.PeftModel.from_pretrained(
        siglip.AutoModel.from_pretrained(folders[family]), tmp_path / "ref_adapter"
    ).eval()
    inputs = _inputs(family, seed=9)
    with torch.no_grad():
        expected = ref(**inputs).logits_per_image
        _close(reloaded_ref(**inputs).logits_per_image, expected, 1e-5, "siglip adapter in transformers")
        _close(reloaded_ours(**inputs).logits_per_image, expected, 1e-5, "transformers adapter in siglip")
        merged_ours, merged_ref = ours.merge_and_unload(), ref.merge_and_unload()
        _close(merged_ours(**inputs).logits_per_image, merged_ref(**inputs).logits_per_image, 1e-5, "merged")
    assert type(merged_ours) is type(siglip.AutoModel.from_pretrained(folders[family]))


@pytest.mark.parametrize("targets", ["all_six", "all_linear"])
def test_lora_in_bf16_without_grad_matches_transformers(folders, targets):
    ours, ref = _pair(folders, "siglip", dtype=torch.bfloat16)
    ours, ref = _lora(ours, TARGETS[targets]), _lora(ref, TARGETS[targets])
    ours.to(torch.bfloat16)
    ref.to(torch.bfloat16)
    inputs = _inputs("siglip")
    inputs["pixel_values"] = inputs["pixel_values"].bfloat16()
    with torch.no_grad():
        with ours.disable_adapter():
            plain = ours(**inputs).logits_per_image
        a, b = ours(**inputs).logits_per_image, ref(**inputs).logits_per_image
    assert float((a.float() - plain.float()).abs().max()) > 0.05
    _close(a, b, 2e-2, "bf16 LoRA logits")


# ------------------------------------------------------------------------------------------------------------
# Forward hooks
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_forward_hooks_fire_on_every_linear_as_in_transformers(folders, family, grad):
    ours, ref = _pair(folders, family)
    counts = []
    for model in (ours, ref):
        calls: dict[str, int] = {}
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                calls[name] = 0
                module.register_forward_hook(
                    lambda m, i, o, name=name, calls=calls: calls.__setitem__(name, calls[name] + 1)
                )
        with torch.set_grad_enabled(grad):
            model(**_inputs(family))
        counts.append(calls)
    assert counts[0] == counts[1]
    assert sum(counts[0].values()) > 20 and all(n > 0 for k, n in counts[0].items() if "head.attention" not in k)


# ------------------------------------------------------------------------------------------------------------
# transformers' PreTrainedModel API that tools call
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_pretrained_model_api_matches_transformers(folders, family):
    for cls in ("AutoModel", "AutoModelForImageClassification"):
        ours, ref = _pair(folders, family, cls)
        assert type(ours.get_input_embeddings()) is type(ref.get_input_embeddings())
        assert ours.get_input_embeddings().weight.shape == ref.get_input_embeddings().weight.shape
        for only_trainable in (False, True):
            for exclude_embeddings in (False, True):
                kwargs = dict(only_trainable=only_trainable, exclude_embeddings=exclude_embeddings)
                assert ours.num_parameters(**kwargs) == ref.num_parameters(**kwargs), kwargs
        assert ours.config._name_or_path == ours.name_or_path == str(folders[family])
        assert ours.supports_gradient_checkpointing
        assert ours.main_input_name == ref.main_input_name
    tower = getattr(siglip, "Siglip2VisionModel" if family == "siglip2" else "SiglipVisionModel")
    vision = tower.from_pretrained(folders[family])
    assert vision.get_input_embeddings() is vision.embeddings.patch_embedding
    text = siglip.AutoModel.from_pretrained(folders[family]).text_model
    new = torch.nn.Embedding(1000, text.config.hidden_size)
    text.set_input_embeddings(new)
    assert text.get_input_embeddings() is new and text.embeddings.token_embedding is new


def test_loading_options_as_transformers(folders):
    folder = folders["siglip"]
    assert siglip.AutoModel.from_pretrained(folder, torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    assert siglip.SiglipModel.from_pretrained(folder, torch_dtype="float16").dtype == torch.float16
    with pytest.raises(ValueError, match="disagree"):
        siglip.AutoModel.from_pretrained(folder, dtype=torch.float32, torch_dtype=torch.bfloat16)
    for option, value in [
        ("max_memory", {"cpu": "1GB"}),
        ("offload_folder", "off"),
        ("ignore_mismatched_sizes", True),
        ("load_in_8bit", True),
        ("variant", "fp16"),
    ]:
        with pytest.raises(ValueError, match=f"{option}: "):
            siglip.AutoModel.from_pretrained(folder, **{option: value})
    config = siglip.AutoConfig.from_pretrained(folder)
    assert config._name_or_path == str(folder)
    model = siglip.SiglipModel.from_pretrained(folder, config=config, use_safetensors=True)
    assert model.config is config
    model, info = siglip.AutoModel.from_pretrained(folder, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    with pytest.raises(siglip.CheckpointError, match="use_safetensors=False"):
        siglip.AutoModel.from_pretrained(folder, use_safetensors=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_replaced_head_and_deepcopy(folders, family):
    ours, ref = _pair(folders, family)
    inputs = {k: v for k, v in _inputs(family).items() if k not in ("input_ids", "attention_mask")}
    for model in (ours, ref):
        model.vision_model.head = torch.nn.Identity()
    if family == "siglip2":  # transformers passes the NaFlex head the patch mask too: Identity can't take it
        for model in (ours, ref):
            with pytest.raises(TypeError, match="positional argument"):
                model.vision_model(**inputs)
        return
    with torch.no_grad():
        a, b = ours.vision_model(**inputs), ref.vision_model(**inputs)
    _close(a.pooler_output, b.pooler_output, 1e-5, "Identity head")
    twin = copy.deepcopy(ours)
    with torch.no_grad():
        assert torch.equal(twin.vision_model(**inputs).pooler_output, a.pooler_output)
        twin.vision_model.post_layernorm.weight.mul_(2.0)  # the copy owns its weights
        assert not torch.equal(twin.vision_model(**inputs).pooler_output, a.pooler_output)


# ------------------------------------------------------------------------------------------------------------
# transformers.Trainer and accelerate
# ------------------------------------------------------------------------------------------------------------


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def _trainer_rows(family: str, task: str) -> list[dict[str, torch.Tensor]]:
    rows = []
    for seed in range(8):
        item = {k: v[0] for k, v in _inputs(family, batch=1, seed=seed).items()}
        if task == "classification":
            item = {k: v for k, v in item.items() if k not in ("input_ids", "attention_mask")}
            item["labels"] = torch.tensor(seed % 2)
        rows.append(item)
    return rows


def _collate(task: str, rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    if task == "contrastive":
        batch["return_loss"] = True
    return batch


@pytest.mark.parametrize("task", ["contrastive", "classification"])
@pytest.mark.parametrize("family", FAMILIES)
def test_trainer_trains_as_transformers_and_its_checkpoints_reload(folders, family, task, tmp_path):
    cls = "AutoModel" if task == "contrastive" else "AutoModelForImageClassification"
    losses, models = [], []
    for library in (siglip, transformers):
        torch.manual_seed(0)  # the fresh classifier head: the same draws in both libraries
        model = (
            getattr(library, cls).from_pretrained(folders[family], num_labels=2)
            if task != "contrastive"
            else getattr(library, cls).from_pretrained(folders[family])
        )
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / library.__name__),
            per_device_train_batch_size=2,
            max_steps=4,
            save_steps=2,
            learning_rate=1e-3,
            logging_steps=1,
            report_to=[],
            gradient_checkpointing=True,
            use_cpu=True,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            disable_tqdm=True,
            seed=0,
        )
        callbacks = [siglip.SaveConfigCallback()] if library is siglip else None
        trainer = transformers.Trainer(
            model=model,
            args=args,
            train_dataset=_Rows(_trainer_rows(family, task)),
            data_collator=functools.partial(_collate, task),
            callbacks=callbacks,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train()
        assert model.is_gradient_checkpointing
        losses.append([r["loss"] for r in trainer.state.log_history if "loss" in r])
        models.append(model)
    assert len(losses[0]) == 4
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    # the checkpoint folder reloads with siglip and holds the trained weights
    checkpoint = tmp_path / "siglip" / "checkpoint-4"
    reloaded = getattr(siglip, cls).from_pretrained(checkpoint)
    trained = models[0].state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in reloaded.state_dict().items())
    # without the callback: the folder holds only the weights, and the error says what to do
    bare = tmp_path / "bare"
    bare.mkdir()
    (checkpoint / "model.safetensors").rename(bare / "model.safetensors")
    (checkpoint / "trainer_state.json").rename(bare / "trainer_state.json")
    with pytest.raises(siglip.CheckpointError, match="SaveConfigCallback"):
        getattr(siglip, cls).from_pretrained(bare)
    again = getattr(siglip, cls).from_pretrained(bare, config=models[0].config)
    assert all(torch.equal(v, trained[k]) for k, v in again.state_dict().items())


def test_accelerate_prepare_and_step(folders):
    accelerate = pytest.importorskip("accelerate")
    losses = []
    for library in (siglip, transformers):
        model = library.AutoModel.from_pretrained(folders["siglip2"])
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        accelerator = accelerate.Accelerator(cpu=True)
        model, optimizer = accelerator.prepare(model, optimizer)
        step = []
        for seed in range(2):
            loss = model(**_inputs("siglip2", seed=seed), return_loss=True).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            step.append(float(loss))
        losses.append(step)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


# ------------------------------------------------------------------------------------------------------------
# torch.compile, torch.export, ONNX
# ------------------------------------------------------------------------------------------------------------


def _cases(folders) -> dict[str, tuple[torch.nn.Module, dict[str, torch.Tensor]]]:
    fixres = siglip.AutoModel.from_pretrained(folders["siglip"])
    naflex = siglip.AutoModel.from_pretrained(folders["siglip2"])
    text, images = _inputs("siglip"), _inputs("siglip2")
    naflex_images = {k: images[k] for k in ("pixel_values", "pixel_attention_mask", "spatial_shapes")}
    return {
        "text": (fixres.text_model, {k: text[k] for k in ("input_ids", "attention_mask")}),
        "fixres_vision": (fixres.vision_model, {"pixel_values": text["pixel_values"]}),
        "naflex_vision": (naflex.vision_model, naflex_images),
        "siglip_model": (fixres, text),
        "siglip2_model": (naflex, images),
    }


def _first(out) -> torch.Tensor:
    return out.pooler_output if "pooler_output" in out else out.logits_per_image


@pytest.mark.slow
def test_compile_fullgraph_without_graph_breaks(folders):
    import torch._dynamo

    for name, (module, inputs) in _cases(folders).items():
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(module)(**inputs)
        assert explanation.graph_break_count == 0, (name, explanation.break_reasons)
        compiled = torch.compile(module, fullgraph=True, backend="eager")
        with torch.no_grad():
            torch.testing.assert_close(_first(compiled(**inputs)), _first(module(**inputs)), rtol=1e-5, atol=1e-6)


def _dynamic_shapes(name: str) -> dict:
    batch = torch.export.Dim("batch", min=1, max=1024)
    if name == "text":
        return {"input_ids": {0: batch}, "attention_mask": {0: batch}}
    if name == "fixres_vision":
        return {"pixel_values": {0: batch}}
    patches = torch.export.Dim("patches", min=2, max=4096)
    return {
        "pixel_values": {0: batch, 1: patches},
        "pixel_attention_mask": {0: batch, 1: patches},
        "spatial_shapes": {0: batch},
    }


def _other_inputs(name: str) -> dict[str, torch.Tensor]:
    """Inputs unlike the traced ones: another batch size and, for NaFlex, another padded length and thin grids."""
    if name == "text":
        ids = torch.randint(0, 1000, (5, 64))
        mask = torch.ones(5, 64, dtype=torch.long)
        mask[2:, 10:] = 0
        return {"input_ids": ids, "attention_mask": mask}
    if name == "fixres_vision":
        return {"pixel_values": torch.randn(5, 3, 32, 32)}
    shapes = [(1, 300), (300, 1), (13, 17)]
    mask = torch.zeros(3, 300, dtype=torch.int32)
    for i, (h, w) in enumerate(shapes):
        mask[i, : h * w] = 1
    return {
        "pixel_values": torch.randn(3, 300, 768),
        "pixel_attention_mask": mask,
        "spatial_shapes": torch.tensor(shapes),
    }


@pytest.mark.slow
@pytest.mark.parametrize("strict", [True, False])
def test_export_with_dynamic_shapes(folders, strict):
    cases = _cases(folders)
    for name in ("text", "fixres_vision", "naflex_vision"):
        module, inputs = cases[name]
        program = torch.export.export(module, (), inputs, dynamic_shapes=_dynamic_shapes(name), strict=strict)
        other = _other_inputs(name)
        with torch.no_grad():
            got, want = program.module()(**other), module(**other)
        torch.testing.assert_close(got.pooler_output, want.pooler_output, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_onnx_dynamo_export_runs_in_onnxruntime(folders, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    cases = _cases(folders)
    for name in ("text", "fixres_vision", "naflex_vision"):
        module, inputs = cases[name]
        path = tmp_path / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (), str(path), kwargs=inputs, dynamic_shapes=_dynamic_shapes(name), dynamo=True, verbose=False
            )
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == list(inputs)  # attention_mask stays an input
        other = _other_inputs(name)
        last, pooled = session.run(None, {k: v.numpy() for k, v in other.items()})
        with torch.no_grad():
            want = module(**other)
        assert abs(pooled - want.pooler_output.numpy()).max() <= 1e-4, name
        assert abs(last - want.last_hidden_state.numpy()).max() <= 1e-4, name


def test_legacy_onnx_export_keeps_the_text_mask(folders, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    module, inputs = _cases(folders)["text"]
    inputs = {k: v[:1] for k, v in inputs.items()}  # an all-ones mask: nothing may be specialised on it
    path = tmp_path / "text.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (inputs["input_ids"], inputs["attention_mask"]),
            str(path),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state", "pooler"],
            dynamic_axes={"input_ids": {0: "b"}, "attention_mask": {0: "b"}},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    other = _other_inputs("text")
    _, pooled = session.run(None, {k: v.numpy() for k, v in other.items()})
    with torch.no_grad():
        want = module(**other).pooler_output
    assert abs(pooled - want.numpy()).max() <= 1e-4
    assert float((want - module(input_ids=other["input_ids"]).pooler_output).abs().max()) > 1e-3  # mask matters


def test_eager_input_checks_still_name_the_problem(folders):
    model = siglip.AutoModel.from_pretrained(folders["siglip"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.text_model(input_ids=torch.tensor([[5, 1000]]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.vision_model(pixel_values=torch.full((1, 3, 32, 32), float("nan")))
