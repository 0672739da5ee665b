"""Opt-in paths keep parity: bf16 on CPU, torchao int8 weights, bitsandbytes (CUDA only); and the benchmark command
runs end to end on tiny models (benchmarks are never timed tests). ``siglip.optimize`` has tests/test_optimize.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import siglip

from builders import write_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_checkpoint(
        tmp_path_factory.mktemp("fast") / "m",
        "siglip",
        seed=2,
        text={"hidden_size": 64, "num_attention_heads": 4},
        vision={"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4},
    )


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 1000, (3, 64), generator=g)


def _embeds(model, pixels, ids):
    with torch.inference_mode():
        out = model(input_ids=ids, pixel_values=pixels.to(model.dtype))
    return out.image_embeds.float(), out.text_embeds.float()


def test_bf16_embeddings_cosine_to_fp32(folder):
    pixels, ids = _inputs()
    ref = _embeds(siglip.AutoModel.from_pretrained(folder), pixels, ids)
    bf16 = _embeds(siglip.AutoModel.from_pretrained(folder, dtype=torch.bfloat16), pixels, ids)
    for a, b in zip(bf16, ref, strict=True):
        assert F.cosine_similarity(a, b).min() >= 0.999


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_int8_weights_keep_cosine_and_shrink_memory(folder, dtype):
    """optimize(int8_weights=True) in fp32 and bf16: embeddings within cosine 0.99, the twin's linear weights under
    30% of fp32 memory, and the plain model keeps its own."""
    pytest.importorskip("torchao", reason="the quant extra (torchao) is part of the test install")
    pixels, ids = _inputs(1)
    model = siglip.AutoModel.from_pretrained(folder, dtype=dtype)
    ref = _embeds(model, pixels, ids)
    twin = siglip.optimize(model, int8_weights=True)
    linears = [m for m in twin.modules() if type(m) is torch.nn.Linear]
    fp32_bytes = sum(m.weight.numel() * 4 for m in linears)
    # every linear layer but the MAP head's attention projections holds int8 data now; the plain model's don't
    assert len(linears) > 10 and all(siglip.quantization.is_quantized(m.weight) for m in linears)
    assert sum(siglip.quantization.weight_bytes(m.weight) for m in linears) < 0.3 * fp32_bytes
    assert not any(siglip.quantization.is_quantized(p) for p in model.parameters())
    embeds = _embeds(twin, pixels, ids)
    for a, b in zip(embeds, ref, strict=True):
        assert F.cosine_similarity(a, b).min() >= 0.99
    assert siglip.optimize(twin, int8_weights=True) is twin
    with pytest.raises(ValueError, match="int8_weights"):
        siglip.optimize(twin)


def test_bitsandbytes_without_cuda_fails_in_one_line(folder):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the real 4-bit path is exercised by test_bitsandbytes_4bit_on_cuda")
    config = siglip.BitsAndBytesConfig(load_in_4bit=True)
    with pytest.raises(ValueError) as info:
        siglip.AutoModel.from_pretrained(folder, quantization_config=config, device_map="auto")
    message = str(info.value)
    assert "\n" not in message and "needs a CUDA GPU" in message
    with pytest.raises(ValueError, match="load_in_4bit and load_in_8bit can't both be True"):
        siglip.BitsAndBytesConfig(load_in_4bit=True, load_in_8bit=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bitsandbytes_4bit_on_cuda(folder):
    pytest.importorskip("bitsandbytes")
    pixels, ids = _inputs(3)
    ref = _embeds(siglip.AutoModel.from_pretrained(folder), pixels, ids)
    model = siglip.AutoModel.from_pretrained(
        folder, quantization_config=siglip.BitsAndBytesConfig(load_in_4bit=True), device_map="auto"
    )
    with torch.inference_mode():
        out = model(input_ids=ids.cuda(), pixel_values=pixels.cuda())
    assert F.cosine_similarity(out.image_embeds.float().cpu(), ref[0]).min() > 0.9


def test_benchmark_command_runs_on_tiny_models(tmp_path):
    (tmp_path / "r.md").write_text("<!-- bench_onnx.py: start -->\nkept\n<!-- bench_onnx.py: end -->\n")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "run.py"),
            "--quick",
            "--out",
            str(tmp_path / "r.md"),
            "--workdir",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "r.md").read_text()
    for row in (
        "image emb/s, float32, batch 1",
        "image emb/s, bfloat16, batch 4",
        "text emb/s",
        "zero-shot job",
        "cold start",
        "preprocessing",
        "peak RSS while loading",
        "int8 weights",
        "int8 dynamic",
        "fp32 optimized vs plain",
        "min cosine to fp32",
        "profile",
        "siglip embed",
        "MLP block",
        "CPU flags",
        "ceilings",
    ):
        assert row in report, row
    assert "<!-- bench_onnx.py: start -->\nkept\n<!-- bench_onnx.py: end -->" in report  # other sections are kept
    assert report.count("<!-- run.py: start -->") == 1
    assert "identical output" in report


def test_parity_report_runs_and_stays_within_the_bounds():
    """benchmarks/parity.py (the numbers quoted in reports) runs, covers 8 cases, and each is within the bounds."""
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "parity.py")], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if " outputs " in line]
    assert len(rows) == 8
    for family, implementation, dtype, _, outputs, *_, hidden in rows:
        bound = 1e-5 if dtype == "float32" else 2e-2
        assert float(outputs) <= bound and float(hidden) <= bound, (family, implementation, dtype)


def test_plain_benchmark_runs_on_tiny_models(tmp_path):
    """benchmarks/bench_plain.py (siglip's plain models against transformers) on the tiny configuration."""
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_plain.py"), "--quick", "--out", str(tmp_path / "r.md")]
        + ["--workdir", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "r.md").read_text()
    assert report.startswith("<!-- bench_plain.py: start -->") and "Ceilings in this run" in report
    rows = [line for line in report.splitlines() if line.startswith("| ") and "emb/s" in line]
    assert len(rows) >= 6  # per model: fp32 images at two batches and texts; bf16 images and texts
    for row in rows:
        ours, ref, ratio = (cell.strip() for cell in row.strip("|").split("|")[1:])
        assert float(ours) > 0 and float(ref) > 0
        assert float(ratio.rstrip("x")) == pytest.approx(float(ours) / float(ref), rel=0.02, abs=0.01)
