"""``siglip.optimize``: the fused inference twin equals the plain model (fp32), stays close in bf16, leaves the plain
model usable (hooks, PEFT, training), refuses what it can't do; the pipeline and the commands use it by default."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from PIL import Image

import siglip
from siglip import optimization, pipelines
from siglip.cli import main

from builders import joint_inputs as _inputs
from builders import write_checkpoint
from conftest import assert_close

FAMILIES = ["siglip", "siglip2"]
SMALL = {"hidden_size": 48, "intermediate_size": 96, "num_attention_heads": 4}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("optimize")
    return {family: write_checkpoint(root / family, family, seed=11, text=SMALL, vision=SMALL) for family in FAMILIES}


def _vision(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}


def _assert_outputs_close(ours, ref, rtol: float, what: str) -> None:
    """Every tensor of two outputs (ModelOutputs, tuples, tensors) agrees within ``rtol`` of its scale."""
    if isinstance(ref, torch.Tensor):
        assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} != {ref.dtype}"
        assert_close(ours, ref, rtol, what)
    elif isinstance(ref, dict):
        assert ours.keys() == ref.keys(), what
        for key in ref:
            _assert_outputs_close(ours[key], ref[key], rtol, f"{what}.{key}")
    else:
        assert len(ours) == len(ref), what
        for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
            _assert_outputs_close(a, b, rtol, f"{what}[{i}]")


CALLS = {
    "AutoModel": lambda m, x: m(**x, output_hidden_states=True),
    "image_features": lambda m, x: m.get_image_features(**_vision(x)),
    "text_features": lambda m, x: m.get_text_features(input_ids=x["input_ids"], attention_mask=x["attention_mask"]),
    "attentions": lambda m, x: m(**x, output_attentions=True, return_dict=False),
    "text_tower": lambda m, x: m.text_model(input_ids=x["input_ids"], attention_mask=x["attention_mask"]),
    "vision_tower": lambda m, x: m.vision_model(**_vision(x), output_hidden_states=True),
}


KERNELS = {
    "onednn": optimization.Kernels(onednn=True),  # what fp32 runs on CPU
    "post-ops": optimization.Kernels(onednn=True, pack=True, fuse=True),  # what bf16 runs on CPUs with bf16 kernels
    "generic": optimization.Kernels(),  # F.linear: what CUDA runs
}


@pytest.mark.parametrize("kernels", list(KERNELS))
@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_twin_equals_the_plain_model_and_transformers(folders, family, kernels, monkeypatch):
    """Every entry point and output field within 1e-5 of the plain model, on each kernel choice, and the joint
    outputs within 1e-5 of transformers."""
    monkeypatch.setattr(optimization, "choose_kernels", lambda device, dtype: KERNELS[kernels])
    plain = siglip.AutoModel.from_pretrained(folders[family])
    fast = siglip.optimize(plain)
    assert isinstance(fast, type(plain)) and type(fast).__name__ == f"Optimized{type(plain).__name__}"
    inputs = _inputs(family)
    with torch.no_grad():
        for name, call in CALLS.items():
            _assert_outputs_close(call(fast, inputs), call(plain, inputs), 1e-5, name)
        ref = transformers.AutoModel.from_pretrained(folders[family]).eval()(**inputs)
        out = fast(**inputs)
    for key in ("logits_per_image", "text_embeds", "image_embeds"):
        assert_close(out[key], ref[key], 1e-5, f"transformers {key}")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_model_class_is_optimized_with_the_same_outputs(folders, family):
    prefix = "Siglip2" if family == "siglip2" else "Siglip"
    inputs = _inputs(family, seed=1)
    labels = torch.tensor([0, 1, 0])
    cases = {
        "TextModel": {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]},
        "VisionModel": _vision(inputs),
        "ForImageClassification": {**_vision(inputs), "labels": labels},
    }
    for suffix, kwargs in cases.items():
        plain = getattr(siglip, prefix + suffix).from_pretrained(folders[family], num_labels=2)
        fast = siglip.optimize(plain)
        assert type(fast).__name__ == f"Optimized{prefix}{suffix}"
        with torch.no_grad():
            _assert_outputs_close(fast(**kwargs), plain(**kwargs), 1e-5, suffix)


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu", "quick_gelu"])
def test_other_activations_fuse_or_run_after_the_projection(tmp_path, act):
    config = {**SMALL, "hidden_act": act}
    folder = write_checkpoint(tmp_path / act, "siglip", seed=1, text=config, vision=config)
    plain = siglip.AutoModel.from_pretrained(folder)
    inputs = _inputs("siglip")
    with torch.no_grad():
        _assert_outputs_close(siglip.optimize(plain)(**inputs), plain(**inputs), 1e-5, act)


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_twin_is_close_to_fp32_and_no_further_than_transformers_bf16(folders, family):
    plain = siglip.AutoModel.from_pretrained(folders[family])
    fast = siglip.optimize(plain, dtype=torch.bfloat16)
    assert fast.dtype == torch.bfloat16 and plain.dtype == torch.float32
    ref16 = transformers.AutoModel.from_pretrained(folders[family], dtype=torch.bfloat16).eval()
    inputs = _inputs(family, seed=2)
    inputs16 = {k: (v.bfloat16() if v.is_floating_point() else v) for k, v in inputs.items()}
    with torch.no_grad():
        exact, ours, theirs = plain(**inputs), fast(**inputs16), ref16(**inputs16)
    for key in ("image_embeds", "text_embeds"):
        assert ours[key].dtype == torch.bfloat16
        cos_ours = F.cosine_similarity(ours[key].float(), exact[key]).min()
        cos_theirs = F.cosine_similarity(theirs[key].float(), exact[key]).min()
        assert cos_ours >= 0.999 and cos_ours >= cos_theirs - 1e-4, (key, cos_ours, cos_theirs)


def test_plain_model_is_untouched_and_still_trains_with_hooks_and_peft(folders):
    peft = pytest.importorskip("peft")
    plain = siglip.AutoModel.from_pretrained(folders["siglip"]).train()
    before = {name: (p, p.requires_grad, p.detach().clone()) for name, p in plain.named_parameters()}
    fast = siglip.optimize(plain)
    assert plain.training and not fast.training
    assert all(p is before[n][0] and p.requires_grad for n, p in plain.named_parameters())
    assert all(torch.equal(p, before[n][2]) for n, p in plain.named_parameters())
    assert fast.state_dict().keys() == plain.state_dict().keys()
    shared = plain.vision_model.encoder.layers[0].layer_norm1.weight
    assert fast.vision_model.encoder.layers[0].layer_norm1.weight.data_ptr() == shared.data_ptr()

    calls = []
    plain.vision_model.encoder.layers[0].self_attn.q_proj.register_forward_hook(lambda *_: calls.append(1))
    inputs = _inputs("siglip")
    loss = plain(**inputs, return_loss=True).loss
    loss.backward()
    assert calls == [1] and plain.vision_model.encoder.layers[0].mlp.fc1.weight.grad is not None
    torch.optim.SGD(plain.parameters(), lr=0.1).step()
    with pytest.raises(RuntimeError, match="weights changed since optimize"):
        fast(**inputs)
    assert type(siglip.optimize(plain)(**inputs).logits_per_image) is torch.Tensor

    lora = peft.get_peft_model(plain, peft.LoraConfig(r=4, target_modules=["q_proj", "fc1"], init_lora_weights=False))
    lora(**inputs, return_loss=True).loss.backward()
    with pytest.raises(TypeError, match=r"merge_and_unload\(\)"):
        siglip.optimize(lora)
    merged = lora.merge_and_unload().eval()
    with torch.no_grad():
        _assert_outputs_close(siglip.optimize(merged)(**inputs), merged(**inputs), 1e-5, "merged LoRA")


def test_twin_refuses_training_gradients_moving_and_saving(folders, tmp_path):
    fast = siglip.optimize(siglip.AutoModel.from_pretrained(folders["siglip"]))
    inputs = _inputs("siglip")
    with pytest.raises(RuntimeError, match="inference-only"):
        fast.train()
    assert fast.eval() is fast
    out = fast(**inputs, return_loss=True)  # grad mode on: runs, but backward says why it can't
    with pytest.raises(RuntimeError, match="backward.*inference-only"):
        out.loss.backward()
    pixels = inputs["pixel_values"].requires_grad_()
    with pytest.raises(RuntimeError, match="pixel_values requires grad"):
        fast.get_image_features(pixel_values=pixels)
    for move in (lambda: fast.to(torch.bfloat16), lambda: fast.float(), lambda: fast.to("cpu")):
        with pytest.raises(RuntimeError, match=r"siglip.optimize\(plain_model"):
            move()
    with pytest.raises(RuntimeError, match="inference-only"):
        fast.save_pretrained(tmp_path / "x")


def test_optimizing_twice_returns_the_twin_and_other_inputs_are_refused(folders):
    plain = siglip.AutoModel.from_pretrained(folders["siglip"])
    fast = siglip.optimize(plain)
    assert siglip.optimize(fast) is fast and siglip.optimize(fast, dtype="float32", device="cpu") is fast
    with pytest.raises(ValueError, match="optimize the plain model"):
        siglip.optimize(fast, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="takes a siglip model"):
        siglip.optimize(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        siglip.optimize(plain, dtype=torch.int8)


def test_pipeline_uses_the_twin_by_default(folders):
    folder = str(folders["siglip"])
    pipe = siglip.pipeline("zero-shot-image-classification", model=folder)
    plain_pipe = siglip.pipeline("zero-shot-image-classification", model=folder, optimize=False)
    assert isinstance(pipe.model, optimization.OptimizedModel)
    assert not isinstance(plain_pipe.model, optimization.OptimizedModel)
    assert pipe.model.config.model_type == "siglip" and pipe.dtype == torch.float32
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    a, b = pipe(image, candidate_labels=["a cat", "a dog"]), plain_pipe(image, candidate_labels=["a cat", "a dog"])
    assert [r["label"] for r in a] == [r["label"] for r in b]
    assert all(abs(x["score"] - y["score"]) < 1e-5 for x, y in zip(a, b, strict=True))

    loaded = siglip.AutoModel.from_pretrained(folder)
    processor = siglip.AutoProcessor.from_pretrained(folder)
    pipe16 = siglip.pipeline(model=loaded, processor=processor, dtype=torch.bfloat16)
    assert pipe16.dtype == torch.bfloat16 and loaded.dtype == torch.float32  # the caller's model is not cast


def test_auto_dtype_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(optimization, "cpu_flags", lambda path="": frozenset({"avx2", "amx_bf16", "amx_tile"}))
    assert optimization.auto_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(optimization, "cpu_flags", lambda path="": frozenset({"avx2", "avx512_bf16"}))
    assert optimization.auto_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(optimization, "cpu_flags", lambda path="": frozenset({"avx2", "fma"}))
    assert optimization.auto_dtype("cpu") == torch.float32
    assert optimization.auto_dtype("cuda") is None


def test_cli_no_optimize_dtype_auto_and_the_store_refuses_another_dtype(folders, tmp_path, capsys, monkeypatch):
    calls = []
    real = pipelines.optimize_model
    monkeypatch.setattr(pipelines, "optimize_model", lambda model, **kw: calls.append(1) or real(model, **kw))
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(image)
    common = ["--model", str(folders["siglip"]), "--num-workers", "0", "--quiet", "--device", "cpu"]
    assert main(["classify", str(image), "--labels", "a", "b", *common]) == 0
    assert main(["classify", str(image), "--labels", "a", "b", "--no-optimize", *common]) == 0
    assert calls == [1]

    monkeypatch.setattr(optimization, "cpu_flags", lambda path="": frozenset({"avx512_bf16"}))
    store = tmp_path / "store"
    assert main(["embed", str(image), "--output", str(store), *common]) == 0
    assert json.loads((store / "manifest.json").read_text())["model_dtype"] == "bfloat16"
    monkeypatch.setattr(optimization, "cpu_flags", lambda path="": frozenset({"avx2"}))
    capsys.readouterr()
    assert main(["embed", str(image), "--output", str(store), *common]) == 1
    error = capsys.readouterr().err
    assert "computed in bfloat16" in error and "--dtype bfloat16" in error
    assert main(["embed", str(image), "--output", str(store), "--dtype", "bfloat16", *common]) == 0


def test_the_server_loads_the_twin_unless_no_optimize(folders, monkeypatch):
    """``siglip serve`` loads its pipeline through ``serve.load_model``: optimized by default, ``--dtype auto``
    resolved from the CPU flags, ``--no-optimize`` reaching it from the command line."""
    serve = pytest.importorskip("siglip.serve")
    folder = str(folders["siglip"])
    monkeypatch.setattr(optimization, "cpu_flags", lambda path="": frozenset({"avx2"}))
    fast, plain = serve.load_model(folder, device="cpu"), serve.load_model(folder, device="cpu", optimize=False)
    assert isinstance(fast.model, optimization.OptimizedModel) and fast.dtype == torch.float32
    assert not isinstance(plain.model, optimization.OptimizedModel)
    monkeypatch.setattr(optimization, "cpu_flags", lambda path="": frozenset({"amx_bf16"}))
    assert serve.load_model(folder, device="cpu").dtype == torch.bfloat16
    parser = siglip.cli.build_parser()
    assert parser.parse_args(["serve"]).optimize is True
    assert parser.parse_args(["serve", "--no-optimize"]).optimize is False
    assert serve.ServeConfig(model=folder, optimize=False).optimize is False
