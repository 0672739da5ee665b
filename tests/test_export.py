"""ONNX export (``siglip export onnx`` / ``siglip.export_onnx``) and the ONNX Runtime backend.

Random checkpoints written by transformers (SigLIP with SentencePiece at odd sizes, SigLIP2 FixRes with the Gemma
tokenizer, SigLIP2 NaFlex with a tokenizer that returns an attention mask, a NaFlex classifier, a text tower) are
exported once per module and run in ONNX Runtime on inputs unlike the traced ones, against transformers' outputs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from PIL import Image

import siglip
from siglip import export as export_module
from siglip.cli import main
from siglip.export import ExportError, export_onnx
from siglip.onnx_backend import OnnxModel
from siglip.store import EmbeddingStore

from builders import resave_tokenizer_with_transformers, write_checkpoint
from conftest import build_hf_model

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

REPO = Path(__file__).resolve().parents[1]
LABELS = ["a cat", "a dog", "a red square", "two parrots"]
# SigLIP at odd sizes: 3 heads, image 30 px with 8 px patches (a 3x3 grid), 16 text positions, P != D_text.
ODD_TEXT = dict(
    hidden_size=36, intermediate_size=50, num_attention_heads=3, max_position_embeddings=16, projection_size=48
)
ODD_VISION = dict(hidden_size=48, intermediate_size=70, num_attention_heads=3)


class Exports:
    """Checkpoints and their exports, each built on first use and shared by the module's tests."""

    def __init__(self, root: Path):
        self.root = root
        self._done: dict[str, Path] = {}

    def _once(self, key: str, build) -> Path:
        if key not in self._done:
            self._done[key] = build()
        return self._done[key]

    def checkpoint(self, name: str) -> Path:
        def build() -> Path:
            folder = self.root / name
            if name == "siglip":
                return write_checkpoint(folder, "siglip", seed=11, text=ODD_TEXT, vision=ODD_VISION, image_size=30)
            if name == "fixres":
                return write_checkpoint(folder, "fixres", seed=12)
            if name == "siglip2":  # a tokenizer saved by transformers' Siglip2Tokenizer: it returns attention masks
                return resave_tokenizer_with_transformers(write_checkpoint(folder, "siglip2", seed=13))
            if name == "classifier":  # Siglip2ForImageClassification with a random 4-label head
                torch.manual_seed(0)
                model = transformers.Siglip2ForImageClassification.from_pretrained(
                    self.checkpoint("siglip2"), num_labels=4
                )
                model.save_pretrained(folder)
                shutil.copy(self.checkpoint("siglip2") / "preprocessor_config.json", folder)
                return folder
            if name == "text":  # a tower-only checkpoint without tokenizer files
                build_hf_model("text").save_pretrained(folder)
                return folder
            raise KeyError(name)

        return self._once(f"checkpoint {name}", build)

    def onnx(self, name: str) -> Path:
        """float32 export through the Python API."""
        return self._once(f"onnx {name}", lambda: export_onnx(self.checkpoint(name), self.root / f"{name}-onnx"))

    def int8(self) -> Path:
        """int8 export of the SigLIP2 FixRes checkpoint through the command."""

        def build() -> Path:
            out = self.root / "fixres-int8"
            assert (
                main(
                    [
                        "export",
                        "onnx",
                        "--model",
                        str(self.checkpoint("fixres")),
                        "--output",
                        str(out),
                        "--quantize",
                        "int8",
                        "--quiet",
                    ]
                )
                == 0
            )
            return out

        return self._once("int8", build)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Exports:
    return Exports(tmp_path_factory.mktemp("onnx"))


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(40, 50), (64, 64), (90, 30), (17, 200), (200, 9)]
    return [Image.fromarray(rng.integers(0, 256, (*sizes[i % 5], 3), dtype=np.uint8)) for i in range(n)]


def _naflex(shapes: list[tuple[int, int]], length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.zeros(len(shapes), length, 768)
    mask = torch.zeros(len(shapes), length, dtype=torch.int32)
    for row, (h, w) in enumerate(shapes):
        pixels[row, : h * w] = torch.rand(h * w, 768, generator=g) * 2 - 1
        mask[row, : h * w] = 1
    return {"pixel_values": pixels, "pixel_attention_mask": mask, "spatial_shapes": torch.tensor(shapes)}


def _text(vocab: int, batch: int, length: int, with_mask: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    inputs = {"input_ids": torch.randint(0, vocab, (batch, length), generator=g)}
    if with_mask:
        mask = torch.ones(batch, length, dtype=torch.int64)
        mask[1, length // 3 :] = 0  # right-padded
        mask[2, : length // 2] = 0  # left-padded
        inputs["attention_mask"] = mask
    return inputs


def _max_diff(got: np.ndarray, want: torch.Tensor) -> float:
    return float(np.abs(got.astype(np.float32) - want.detach().numpy()).max())


def _cosine(got: np.ndarray | torch.Tensor, want: torch.Tensor) -> float:
    return float(F.cosine_similarity(torch.as_tensor(got).float(), want.float(), dim=-1).min())


# ------------------------------------------------------------------------------------------------------------
# The graphs against transformers
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
def test_export_matches_transformers_on_other_shapes(exports, family):
    folder = exports.onnx(family)
    info = json.loads((folder / "onnx_export.json").read_text())
    naflex = family == "siglip2"
    assert info["architecture"] == ("Siglip2Model" if naflex else "SiglipModel")
    assert (info["dtype"], info["quantize"], info["opset"]) == ("float32", None, export_module.default_opset())
    assert (info["logit_scale"], info["logit_bias"]) == (2.0, -1.0)
    tokenizer_file = "tokenizer.json" if naflex else "spiece.model"
    for name in ("config.json", "preprocessor_config.json", "tokenizer_config.json", tokenizer_file):
        assert (folder / name).is_file(), name
    # input names are the forward arguments; attention_mask only when the tokenizer returns one
    text_inputs = ["input_ids", "attention_mask"] if naflex else ["input_ids"]
    vision_inputs = ["pixel_values", "pixel_attention_mask", "spatial_shapes"] if naflex else ["pixel_values"]
    assert list(info["graphs"]["text_model.onnx"]["inputs"]) == text_inputs
    assert list(info["graphs"]["vision_model.onnx"]["inputs"]) == vision_inputs
    assert list(info["graphs"]["text_model.onnx"]["outputs"]) == ["last_hidden_state", "text_embeds"]
    assert list(info["graphs"]["vision_model.onnx"]["outputs"]) == ["last_hidden_state", "image_embeds"]
    for graph in info["verification"].values():
        assert max(graph["max_abs_diff"].values()) <= 1e-4 and len(graph["inputs"]) >= 2
    shapes = info["graphs"]["vision_model.onnx"]["inputs"]["pixel_values"][1]
    assert isinstance(shapes[0], str) and isinstance(shapes[1], str) == naflex  # dynamic batch (and patch count)

    runtime = OnnxModel(folder)
    ref = transformers.AutoModel.from_pretrained(exports.checkpoint(family)).eval()
    config = ref.config.text_config
    cases = {
        "text": [
            _text(config.vocab_size, 4, config.max_position_embeddings, naflex, seed=5),
            _text(config.vocab_size, 3, 5, naflex, seed=6),
        ],
        # NaFlex: grids transformers resizes correctly (its antialias kernel is wrong for 1 x N with N > 4 here)
        "vision": [_naflex([(2, 9), (5, 3), (1, 3), (3, 1), (4, 4)], 20, seed=7), _naflex([(3, 4)], 12, seed=8)]
        if naflex
        else [{"pixel_values": torch.rand(5, 3, 30, 30) * 2 - 1}, {"pixel_values": torch.randn(1, 3, 30, 30)}],
    }
    for tower, inputs_list in cases.items():
        for inputs in inputs_list:
            got = runtime.run(tower, inputs)
            with torch.no_grad():
                want = getattr(ref, f"{tower}_model")(**inputs)
            assert _max_diff(got["last_hidden_state"], want.last_hidden_state) <= 1e-4, tower
            assert _max_diff(got[f"{'text' if tower == 'text' else 'image'}_embeds"], want.pooler_output) <= 1e-4
    if naflex:  # thin grids longer than the position grid: against siglip's PyTorch tower
        ours = siglip.AutoModel.from_pretrained(exports.checkpoint(family))
        inputs = _naflex([(1, 50), (50, 1), (7, 7)], 50, seed=9)
        with torch.no_grad():
            want = ours.vision_model(**inputs)
        got = runtime.run("vision", inputs)
        assert _max_diff(got["image_embeds"], want.pooler_output) <= 1e-4
        assert _max_diff(got["last_hidden_state"], want.last_hidden_state) <= 1e-4


def test_int8_export_command_stays_close_to_transformers(exports, capsys):
    folder = exports.int8()
    out = capsys.readouterr().out
    assert f"{folder / 'vision_model.onnx'}" in out and "max abs diff to PyTorch" in out
    info = json.loads((folder / "onnx_export.json").read_text())
    assert info["quantize"] == "int8" and info["verification"]["vision_model.onnx"]["min_cosine"] >= 0.99
    ref = transformers.AutoModel.from_pretrained(exports.checkpoint("fixres")).eval()
    float32_bytes = 4 * sum(p.numel() for p in ref.text_model.parameters())
    weights = onnx.load(str(folder / "text_model.onnx")).graph.initializer
    assert sum(len(w.raw_data) for w in weights) < 0.4 * float32_bytes  # the token table and linear layers: int8
    runtime = OnnxModel(folder)
    pixels = torch.rand(4, 3, 32, 32) * 2 - 1
    ids = _text(700, 4, 64, False, seed=3)["input_ids"]
    with torch.no_grad():
        assert (
            _cosine(
                runtime.get_image_features(pixel_values=pixels),
                ref.get_image_features(pixel_values=pixels).pooler_output,
            )
            >= 0.99
        )
        assert (
            _cosine(runtime.get_text_features(input_ids=ids), ref.get_text_features(input_ids=ids).pooler_output)
            >= 0.99
        )


def test_float16_classifier_export(exports):
    """A NaFlex classifier exports its vision graph with logits; float16 weights, inputs and outputs."""
    folder = export_onnx(exports.checkpoint("classifier"), exports.root / "classifier-fp16", dtype="float16")
    assert not (folder / "text_model.onnx").exists()
    info = json.loads((folder / "onnx_export.json").read_text())
    graph = info["graphs"]["vision_model.onnx"]
    assert list(graph["outputs"]) == ["last_hidden_state", "logits"]
    assert graph["inputs"]["pixel_values"][0] == "tensor(float16)" and info["logit_scale"] is None
    assert info["verification"]["vision_model.onnx"]["min_cosine"] >= 0.99
    ref = transformers.Siglip2ForImageClassification.from_pretrained(exports.checkpoint("classifier")).eval()
    inputs = _naflex([(2, 9), (5, 3), (4, 4)], 18, seed=4)
    logits = OnnxModel(folder).run("vision", inputs)["logits"]
    assert logits.dtype == np.float16
    with torch.no_grad():
        assert _cosine(logits, ref(**inputs).logits) >= 0.99
    with pytest.raises(ValueError, match="has no image_embeds output"):
        OnnxModel(folder).get_image_features(**inputs)
    with pytest.raises(ValueError, match="export of Siglip2ForImageClassification: the pipeline and the commands need"):
        siglip.pipeline("zero-shot-image-classification", model=str(folder))


def test_tower_only_export(exports):
    """A text tower alone (no tokenizer in its folder: no attention_mask input, the hub SigLIP convention)."""
    folder = exports.onnx("text")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "onnx_export.json", "text_model.onnx"]
    runtime = OnnxModel(folder)
    assert runtime.input_names("text") == ["input_ids"]
    ref = transformers.SiglipTextModel.from_pretrained(exports.checkpoint("text")).eval()
    ids = _text(103, 3, 11, False, seed=2)["input_ids"]
    with torch.no_grad():
        want = ref(input_ids=ids)
    got = runtime.run("text", {"input_ids": ids})
    assert _max_diff(got["text_embeds"], want.pooler_output) <= 1e-4
    assert _max_diff(got["last_hidden_state"], want.last_hidden_state) <= 1e-4
    with pytest.raises(AttributeError, match="not a joint model"):
        runtime.logit_scale  # noqa: B018


# ------------------------------------------------------------------------------------------------------------
# The ONNX Runtime backend: pipeline, commands, plain onnxruntime
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
def test_pipeline_on_an_export_matches_pytorch(exports, family):
    onnx = siglip.pipeline("zero-shot-image-classification", model=str(exports.onnx(family)), batch_size=2)
    torch_pipe = siglip.pipeline("zero-shot-image-classification", model=str(exports.checkpoint(family)))
    assert isinstance(onnx.model, OnnxModel) and onnx.device == torch.device("cpu")
    images = _images(5)
    for a, b in zip(onnx(images, candidate_labels=LABELS), torch_pipe(images, candidate_labels=LABELS), strict=True):
        assert [r["label"] for r in a] == [r["label"] for r in b]
        np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-4)
    torch.testing.assert_close(onnx.encode_texts(LABELS), torch_pipe.encode_texts(LABELS), atol=1e-4, rtol=0)
    explicit = siglip.pipeline(
        "zero-shot-image-classification", model=str(exports.onnx(family)), providers=["CPUExecutionProvider"]
    )
    assert explicit.model.providers == ["CPUExecutionProvider"]


def test_commands_run_on_an_export(exports, tmp_path, capsys):
    folder, checkpoint = exports.onnx("siglip"), exports.checkpoint("siglip")
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(_images(4, seed=1)):
        image.save(images / f"{i}.png")
    common = ["--labels", *LABELS, "--quiet", "--num-workers", "0", "--format", "json"]
    results = {}
    for name, model in (("onnx", folder), ("torch", checkpoint)):
        assert main(["classify", str(images), "--model", str(model), *common]) == 0
        results[name] = {
            r["image"]: {s["label"]: s["score"] for s in r["scores"]} for r in json.loads(capsys.readouterr().out)
        }
    assert results["onnx"].keys() == results["torch"].keys()
    for image, scores in results["onnx"].items():
        for label, score in scores.items():
            assert abs(score - results["torch"][image][label]) <= 1e-4

    texts = tmp_path / "captions.txt"
    texts.write_text("a red circle\na blue square\nthe green triangle\n")
    stores = {}
    for name, model in (("onnx", folder), ("torch", checkpoint)):
        stores[name] = tmp_path / f"texts-{name}"
        assert main(["embed", "--texts", str(texts), "--output", str(stores[name]), "--model", str(model), "-q"]) == 0
        assert (
            main(
                [
                    "embed",
                    str(images),
                    "--output",
                    str(tmp_path / f"images-{name}"),
                    "--model",
                    str(model),
                    "--num-workers",
                    "0",
                    "-q",
                ]
            )
            == 0
        )
    for kind in ("texts", "images"):
        (_, onnx_matrix), (_, torch_matrix) = (
            EmbeddingStore(tmp_path / f"{kind}-{n}").load() for n in ("onnx", "torch")
        )
        np.testing.assert_allclose(onnx_matrix, torch_matrix, atol=1e-4)
    capsys.readouterr()
    assert main(["search", str(stores["onnx"]), "a blue square", "--paths-only", "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "a blue square"
    manifest = json.loads((stores["onnx"] / "manifest.json").read_text())
    assert manifest["model"] == str(folder.resolve())  # search without --model reloads the export


def test_readme_example_runs_with_plain_onnxruntime(exports, tmp_path):
    """The README's onnxruntime + tokenizers + numpy example, on a SigLIP2 FixRes export (int8), without importing
    siglip, gives the pipeline's scores on that export."""
    folder = exports.int8()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## ONNX export and ONNX Runtime") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    image = tmp_path / "cat.jpg"
    _images(1, seed=2)[0].save(image, quality=95)
    code = code.replace('"siglip2-onnx"', repr(str(folder))).replace('"cat.jpg"', repr(str(image)))
    code += f"\nnp.save({str(tmp_path / 'probs.npy')!r}, 1 / (1 + np.exp(-logits)))\n"
    code += "import sys\nassert not any(name.split('.')[0] in ('siglip', 'torch') for name in sys.modules)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    probs = np.load(tmp_path / "probs.npy")
    pipe = siglip.pipeline("zero-shot-image-classification", model=str(folder))
    want = pipe(str(image), candidate_labels=["a photo of a cat", "a photo of a dog"], hypothesis_template="{}")
    want = {r["label"]: r["score"] for r in want}
    np.testing.assert_allclose(probs[0], [want["a photo of a cat"], want["a photo of a dog"]], atol=1e-4)


def test_backend_input_errors(exports):
    runtime = OnnxModel.from_pretrained(exports.onnx("siglip"))
    ids = torch.randint(0, 700, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    torch.testing.assert_close(
        runtime.get_text_features(input_ids=ids, attention_mask=mask), runtime.get_text_features(input_ids=ids)
    )  # an all-ones mask is no mask
    mask[1, 8:] = 0
    with pytest.raises(ValueError, match="takes no attention_mask"):
        runtime.get_text_features(input_ids=ids, attention_mask=mask)
    with pytest.raises(ValueError, match=r"pixel_values has shape \(1, 3, 32, 32\), the graph takes"):
        runtime.get_image_features(pixel_values=torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        runtime.get_text_features(input_ids=torch.tensor([[5, 100000]]))
    naflex = OnnxModel(exports.onnx("siglip2"))
    inputs = _naflex([(2, 3)], 8)
    inputs["pixel_attention_mask"][0, 7] = 1
    with pytest.raises(ValueError, match="has 7 ones"):  # the PyTorch model's own check
        naflex.get_image_features(**inputs)
    with pytest.raises(ValueError, match="NoSuchExecutionProvider not available in this onnxruntime build"):
        OnnxModel(exports.onnx("siglip"), providers=["NoSuchExecutionProvider"])
    with pytest.raises(ValueError, match="dtype is fixed at export time"):
        siglip.pipeline("zero-shot-image-classification", model=str(exports.onnx("siglip")), dtype=torch.bfloat16)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="onnxruntime has CUDA here")
def test_cuda_device_asks_for_the_cuda_provider(exports, capsys):
    image = exports.root / "one.png"
    _images(1)[0].save(image)
    code = main(["classify", str(image), "--labels", "x", "--model", str(exports.onnx("siglip")), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 1 and "CUDAExecutionProvider not available" in err


def test_benchmark_runs_on_the_exports(exports, tmp_path):
    """benchmarks/bench_onnx.py --quick runs end to end and replaces its own RESULTS.md section. It gets this
    module's SigLIP checkpoint and export where it reuses them, so nothing is exported again (the float32 export
    stands in for the int8 one: int8 accuracy is checked above)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "SigLIP_tiny").symlink_to(exports.checkpoint("siglip"))
    for kind in ("float32", "int8"):
        (work / f"SigLIP_tiny-onnx-{kind}").symlink_to(exports.onnx("siglip"))
    report = tmp_path / "RESULTS.md"
    earlier = "<!-- bench_onnx.py: start -->\n## an earlier run\n<!-- bench_onnx.py: end -->\n"
    report.write_text(f"# Benchmarks\n\nkept\n\n{earlier}\nkept too\n")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_onnx.py"),
            "--quick",
            "--workdir",
            str(work),
            "--out",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nkept\n") and text.endswith("\nkept too\n")  # its section replaced
    assert "an earlier run" not in text and text.count("## ONNX Runtime against PyTorch") == 1
    for row in ("image embeddings, batch 1", "image embeddings, batch 4", "text embeddings, batch 8"):
        assert f"SigLIP tiny {row}" in text, row
    cosines = [float(c) for c in re.findall(r"int8 cosine to fp32 ([0-9.]+)", text)]
    assert len(cosines) == 3 and min(cosines) >= 0.99
    assert "(reused)" in text


# ------------------------------------------------------------------------------------------------------------
# Bad input: clear one-line errors, never a half-written folder
# ------------------------------------------------------------------------------------------------------------


def _leftovers(output: Path) -> list[str]:
    return sorted(p.name for p in output.parent.glob(output.name + "*"))


@pytest.mark.parametrize(
    "options, message",
    [
        (["--dtype", "bfloat16"], "dtype 'bfloat16' is not supported; use float32 or float16"),
        (["--opset", "17"], "opset 17 is not supported; use 18..22"),
        (["--opset", "23"], "opset 23 is not supported; use 18..22"),
        (["--quantize", "int4"], "quantize 'int4' is not supported; use int8"),
        (["--quantize", "int8", "--dtype", "float16"], "use dtype float32 with it"),
    ],
)
def test_bad_options_give_one_line_errors(exports, tmp_path, capsys, options, message):
    output = tmp_path / "out"
    code = main(["export", "onnx", "--model", str(exports.checkpoint("siglip")), "--output", str(output), *options])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("siglip: error: ") and message in err and err.count("\n") == 1, err
    assert _leftovers(output) == []


def test_unsupported_models_and_folders(exports, tmp_path, capsys):
    with pytest.raises(ExportError, match=r"exports siglip models .* got transformers\.models\.siglip"):
        export_onnx(transformers.AutoModel.from_pretrained(exports.checkpoint("siglip")), tmp_path / "a")
    with pytest.raises(ExportError, match="got torch.nn.modules.linear.Linear"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "a")
    with pytest.raises(ExportError, match="already an ONNX export"):
        export_onnx(exports.onnx("text"), tmp_path / "a")
    assert _leftovers(tmp_path / "a") == []
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["export", "onnx", "--model", str(exports.checkpoint("siglip")), "--output", str(taken)]) == 1
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    with pytest.raises(ExportError, match="overwrite replaces exports only"):
        export_onnx(exports.checkpoint("siglip"), taken, overwrite=True)
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]


def _reuse_graphs(source: Path):
    """An ``export_graph`` that copies the graphs of an earlier export of the same checkpoint (no tracing)."""

    def copy_graph(tower, path, opset):
        shutil.copyfile(source / tower.file, path)

    return copy_graph


def test_a_failed_check_or_export_leaves_no_folder(exports, tmp_path, monkeypatch):
    output = tmp_path / "out"
    monkeypatch.setattr(export_module, "export_graph", _reuse_graphs(exports.onnx("siglip")))
    monkeypatch.setattr(export_module, "MAX_ABS_DIFF", -1.0)  # any difference fails the check
    with pytest.raises(ExportError, match=r"text_model.onnx differs from PyTorch: max abs difference of \w+ is"):
        export_onnx(exports.checkpoint("siglip"), output)
    assert _leftovers(output) == []
    monkeypatch.undo()

    def broken_exporter(*args, **kwargs):
        raise RuntimeError("Unsupported operator: aten::frobnicate\n(long traceback)")

    monkeypatch.setattr(torch.onnx, "export", broken_exporter)
    with pytest.raises(ExportError, match="torch.onnx.export failed for the text tower: Unsupported operator"):
        export_onnx(exports.checkpoint("siglip"), output)
    assert _leftovers(output) == []


def test_overwrite_replaces_an_earlier_export(exports, tmp_path, monkeypatch):
    output = tmp_path / "out"
    shutil.copytree(exports.onnx("siglip"), output)
    (output / "stale.txt").write_text("from the earlier export")
    monkeypatch.setattr(export_module, "export_graph", _reuse_graphs(exports.onnx("siglip")))
    with pytest.raises(ExportError, match="pass --overwrite"):
        export_onnx(exports.checkpoint("siglip"), output)
    assert export_onnx(exports.checkpoint("siglip"), output, overwrite=True, opset=18) == output
    assert not (output / "stale.txt").exists() and _leftovers(output) == ["out"]
    assert json.loads((output / "onnx_export.json").read_text())["opset"] == 18


def test_a_model_object_exports_with_preprocessing_from_a_folder(exports, tmp_path, monkeypatch):
    """A model built in code has no folder to copy preprocessing from: ``preprocessing=`` names one; a bfloat16
    model is exported from a float32 copy and left as it was."""
    monkeypatch.setattr(export_module, "export_graph", _reuse_graphs(exports.onnx("siglip")))
    model = siglip.AutoModel.from_pretrained(exports.checkpoint("siglip"), dtype=torch.bfloat16)
    model.config.name_or_path = ""
    monkeypatch.setattr(export_module, "MAX_ABS_DIFF", 0.1)  # graphs of the float32 checkpoint vs bf16 weights
    bare = export_onnx(model, tmp_path / "bare")
    assert sorted(p.name for p in bare.iterdir()) == [
        "config.json",
        "onnx_export.json",
        "text_model.onnx",
        "vision_model.onnx",
    ]
    full = export_onnx(model, tmp_path / "full", preprocessing=exports.checkpoint("siglip"))
    assert (full / "spiece.model").is_file() and model.dtype == torch.bfloat16


def test_dtype_auto_and_the_server_on_an_export(exports, monkeypatch):
    """On a CPU where ``--dtype auto`` means bfloat16, an export still loads (its graphs fix their dtype), in the
    commands and in ``siglip serve`` (whose pipeline is then the ONNX Runtime model, not an optimized twin)."""
    from siglip import optimization

    folder = str(exports.onnx("siglip"))
    monkeypatch.setattr(optimization, "cpu_flags", lambda path="": frozenset({"amx_bf16", "avx512_bf16"}))
    assert optimization.command_dtype("auto", "cpu", folder) == "auto"
    assert optimization.command_dtype("auto", "cpu", str(exports.checkpoint("siglip"))) == torch.bfloat16
    serve = pytest.importorskip("siglip.serve")
    pipe = serve.load_model(folder, device="cpu")
    assert isinstance(pipe.model, OnnxModel)
    torch_pipe = siglip.pipeline("zero-shot-image-classification", model=str(exports.checkpoint("siglip")))
    torch.testing.assert_close(pipe.encode_texts(LABELS), torch_pipe.encode_texts(LABELS), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="dtype is fixed at export time"):
        serve.load_model(folder, dtype="bfloat16", device="cpu")
