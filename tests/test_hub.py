"""Loading and saving: strict key checks, every weight format, dtype/device options, the hub cache offline,
and the peak memory of loading a base-size checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import siglip
from siglip.files import CheckpointError

from builders import install_in_hub_cache
from conftest import assert_close, build_hf_model, save_hf

REPO = Path(__file__).resolve().parents[1]


def _rewrite_weights(folder: Path, change) -> Path:
    state = load_file(folder / "model.safetensors")
    change(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.fixture()
def checkpoint(siglip_checkpoint, tmp_path) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(siglip_checkpoint, folder)
    return folder


def _logits(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 103, (2, 9), generator=g)
    pixels = torch.randn(2, 3, 30, 30, generator=g)
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pixels).logits_per_image


def test_missing_unexpected_and_misshaped_weights_are_listed_together(checkpoint):
    def damage(state):
        del state["text_model.head.bias"]
        del state["vision_model.post_layernorm.weight"]
        state["text_model.surprise"] = torch.zeros(3)
        state["text_model.final_layer_norm.weight"] = torch.zeros(7)

    _rewrite_weights(checkpoint, damage)
    with pytest.raises(CheckpointError) as info:
        siglip.SiglipModel.from_pretrained(checkpoint)
    message = str(info.value)
    assert "missing (2): text_model.head.bias, vision_model.post_layernorm.weight" in message
    assert "unexpected (1): text_model.surprise" in message
    assert "text_model.final_layer_norm.weight: checkpoint [7] vs model [36]" in message


def test_position_ids_buffers_in_old_checkpoints_are_accepted(checkpoint):
    reference = _logits(siglip.SiglipModel.from_pretrained(checkpoint))
    _rewrite_weights(checkpoint, lambda s: s.update({"text_model.embeddings.position_ids": torch.arange(16)[None]}))
    assert torch.equal(_logits(siglip.SiglipModel.from_pretrained(checkpoint)), reference)


def test_config_of_another_family_is_rejected(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    config["model_type"] = "clip"
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model_type='clip', but SiglipModel needs 'siglip'"):
        siglip.SiglipModel.from_pretrained(checkpoint)
    with pytest.raises(ValueError, match="model_type='clip' is not a SigLIP model"):
        siglip.AutoModel.from_pretrained(checkpoint)


def test_missing_config_and_missing_weights(checkpoint, tmp_path):
    (checkpoint / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        siglip.SiglipModel.from_pretrained(checkpoint)
    empty = tmp_path / "only_config"
    siglip.SiglipConfig().save_pretrained(empty)
    with pytest.raises(CheckpointError, match="has no weights: expected model.safetensors"):
        siglip.SiglipModel.from_pretrained(empty)
    with pytest.raises(CheckpointError, match="does not exist"):
        siglip.SiglipModel.from_pretrained(tmp_path / "nowhere")


def test_truncated_safetensors_is_reported(checkpoint):
    path = checkpoint / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="model.safetensors is truncated: its header describes"):
        siglip.SiglipModel.from_pretrained(checkpoint)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated or empty"):
        siglip.SiglipModel.from_pretrained(checkpoint)


def test_sharded_safetensors(checkpoint, tmp_path):
    import transformers

    reference = _logits(siglip.SiglipModel.from_pretrained(checkpoint))
    ref = transformers.SiglipModel.from_pretrained(checkpoint)
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 2
    assert torch.equal(_logits(siglip.SiglipModel.from_pretrained(tmp_path / "sharded")), reference)
    next((tmp_path / "sharded").glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="lists shard model-00002"):
        siglip.SiglipModel.from_pretrained(tmp_path / "sharded")


def test_pytorch_model_bin_only_with_weights_only(checkpoint, tmp_path):
    reference = _logits(siglip.SiglipModel.from_pretrained(checkpoint))
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(checkpoint / "config.json", folder)
    torch.save(load_file(checkpoint / "model.safetensors"), folder / "pytorch_model.bin")
    assert torch.equal(_logits(siglip.SiglipModel.from_pretrained(folder)), reference)

    class Payload:  # a pickle that would run code if unpickled without weights_only
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    torch.save({"x": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="could not be loaded with weights_only=True"):
        siglip.SiglipModel.from_pretrained(folder)


def test_dtype_options(checkpoint, tmp_path):
    assert siglip.SiglipModel.from_pretrained(checkpoint).dtype == torch.float32
    bf16 = siglip.SiglipModel.from_pretrained(checkpoint, dtype=torch.bfloat16)
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    assert siglip.SiglipModel.from_pretrained(checkpoint, dtype="float16").dtype == torch.float16
    # "auto" / None keep what the checkpoint holds: a bf16 file stays bf16
    bf16.save_pretrained(tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    assert siglip.SiglipModel.from_pretrained(tmp_path / "bf16").dtype == torch.bfloat16
    assert siglip.SiglipModel.from_pretrained(tmp_path / "bf16", dtype="auto").dtype == torch.bfloat16
    assert siglip.SiglipModel.from_pretrained(tmp_path / "bf16", dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match="dtype='int8' is not|floating"):
        siglip.SiglipModel.from_pretrained(checkpoint, dtype="int8")


def test_device_options(checkpoint):
    model = siglip.SiglipModel.from_pretrained(checkpoint, device_map="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert model.device.type == expected
    assert siglip.SiglipModel.from_pretrained(checkpoint, device="cpu").device.type == "cpu"
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            siglip.SiglipModel.from_pretrained(checkpoint, device="cuda")
        with pytest.raises(ValueError, match="flash_attention_2' needs a CUDA device"):
            siglip.SiglipModel.from_pretrained(checkpoint, attn_implementation="flash_attention_2")
    with pytest.raises(ValueError, match="attn_implementation='flex'"):
        siglip.SiglipModel.from_pretrained(checkpoint, attn_implementation="flex")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_load_matches_cpu(checkpoint):
    cpu = _logits(siglip.SiglipModel.from_pretrained(checkpoint))
    gpu = siglip.SiglipModel.from_pretrained(checkpoint, device_map="cuda")
    g = torch.Generator().manual_seed(0)
    ids, pixels = torch.randint(0, 103, (2, 9), generator=g), torch.randn(2, 3, 30, 30, generator=g)
    with torch.no_grad():
        out = gpu(input_ids=ids.cuda(), pixel_values=pixels.cuda()).logits_per_image.cpu()
    assert_close(out, cpu, rtol=1e-4)


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_hub_id_from_local_cache_offline(siglip_checkpoint, tmp_path):
    cache = tmp_path / "hub"
    install_in_hub_cache(cache, "google/siglip-base-patch16-224", siglip_checkpoint)
    code = """
        import siglip, torch
        m = siglip.AutoModel.from_pretrained("google/siglip-base-patch16-224")
        print(type(m).__name__, m.config.text_config.hidden_size)
        try:
            siglip.SiglipModel.from_pretrained("google/not-cached")
        except siglip.CheckpointError as e:
            print("ERROR:", e)
    """
    result = _run(code, {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert "SiglipModel 36" in result.stdout
    assert "google/not-cached is not a local folder and is not in the Hugging Face cache" in result.stdout
    assert "offline mode is on" in result.stdout


def test_hub_id_unreachable_and_not_cached_says_so(tmp_path):
    # HF_ENDPOINT points at a closed local port, so this never leaves the machine
    code = """
        import siglip
        try:
            siglip.SiglipModel.from_pretrained("google/siglip-base-patch16-224")
        except siglip.CheckpointError as e:
            print("ERROR:", e)
    """
    env = {"HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = _run(code, env)
    assert result.returncode == 0, result.stderr
    assert "is not in the Hugging Face cache" in result.stdout and "can't be reached" in result.stdout


def test_save_is_atomic_and_round_trips(checkpoint, tmp_path):
    model = siglip.SiglipModel.from_pretrained(checkpoint)
    model.save_pretrained(tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.tmp"))
    again = siglip.SiglipModel.from_pretrained(tmp_path / "out")
    assert torch.equal(_logits(again), _logits(model))
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["architectures"] == ["SiglipModel"] and saved["model_type"] == "siglip"


def test_text_tower_checkpoint_saved_by_transformers(tmp_path):
    ref = build_hf_model("text")
    folder = save_hf(ref, tmp_path)
    ours = siglip.AutoModel.from_pretrained(folder)
    assert isinstance(ours, siglip.SiglipTextModel)
    ids = torch.randint(0, 103, (2, 16))
    with torch.no_grad():
        assert_close(ours(ids).pooler_output, ref(ids).pooler_output)


@pytest.mark.slow
def test_peak_rss_while_loading_base_checkpoint_is_below_1_3x(tmp_path):
    """Peak RSS while loading google/siglip-base-patch16-224-sized weights, above the interpreter's baseline."""
    folder = tmp_path / "base"
    build = """
        import sys, torch, siglip
        torch.manual_seed(0)
        siglip.SiglipModel(siglip.SiglipConfig()).save_pretrained(sys.argv[1])
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(build), str(folder)], check=True, timeout=300)
    measure = """
        import sys, os, torch, siglip
        from siglip import modeling_siglip, weights  # imports are part of the baseline, not of loading

        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS
        base = status("VmRSS:")
        model = siglip.SiglipModel.from_pretrained(sys.argv[1])
        print(base, status("VmHWM:"))
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(measure), str(folder)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    base, peak = map(int, result.stdout.split())
    size = (folder / "model.safetensors").stat().st_size
    ratio = (peak - base) / size
    print(f"checkpoint {size / 2**20:.0f} MiB, peak RSS above baseline {(peak - base) / 2**20:.0f} MiB ({ratio:.3f}x)")
    assert size > 750 * 2**20  # 203M fp32 parameters
    assert ratio < 1.3
