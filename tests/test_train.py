"""``siglip train`` and the bundled demo model.

Runs are tiny (32 px images, 2-layer towers, a few steps) on generated shapes. Models either start from a random
checkpoint written by transformers (fine-tuning) or from a config alone (``--from-scratch``). Equivalence checks
compare every weight except the attention key biases (also the key third of the MAP head's fused bias): softmax
attention is invariant to them, so their true gradient is zero and AdamW turns float noise in it into steps of
size ``lr``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from siglip.train import main as train_main
from siglip.train.trainer import lr_factor

from conftest import build_hf_model, shapes

DEMO = Path(__file__).resolve().parents[1] / "src" / "siglip" / "assets"
TOKENIZER_FILES = ("spiece.model", "tokenizer_config.json", "special_tokens_map.json")


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(checkpoint / "model.safetensors")


def _key_bias_free(name: str, tensor: torch.Tensor) -> torch.Tensor:
    if name.endswith("k_proj.bias"):
        return tensor[:0]
    if name.endswith("in_proj_bias"):  # the MAP head's fused q, k, v bias: drop its key third
        d = tensor.shape[0] // 3
        return torch.cat([tensor[:d], tensor[2 * d :]])
    return tensor


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest weight difference, attention key biases left out (see the module docstring)."""
    assert a.keys() == b.keys()
    diffs = [(_key_bias_free(k, a[k]) - _key_bias_free(k, b[k])).abs().flatten() for k in a]
    return torch.cat(diffs).max().item()


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory) -> Path:
    """A SentencePiece tokenizer trained on shapes captions, as the demo script trains one."""
    captions = [s.caption for s in shapes.samples(400, seed=9, pairs=shapes.ALL_PAIRS, image_size=8)]
    folder = tmp_path_factory.mktemp("tokenizer")
    shapes.train_tokenizer(captions, folder, vocab_size=160, model_max_length=24)
    return folder


def _with_preprocessing(folder: Path, tokenizer_folder: Path) -> Path:
    """Add the tokenizer and a 32 px image processor to a model folder."""
    from siglip.image_processing import SiglipImageProcessor

    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_folder / name, folder / name)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


TEXT = dict(vocab_size=160, max_position_embeddings=24)
VISION = dict(image_size=32, patch_size=8)


@pytest.fixture(scope="module")
def base(tmp_path_factory, tokenizer_folder) -> Path:
    """A random SigLIP checkpoint written by transformers, with tokenizer and image processor: the model to tune."""
    folder = tmp_path_factory.mktemp("base")
    model = build_hf_model("SiglipModel", text=TEXT, vision=VISION)
    with torch.no_grad():  # a SigLIP-like temperature and bias, so that learning shows in the logits
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-5.0)
    model.save_pretrained(folder)
    return _with_preprocessing(folder, tokenizer_folder)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, tokenizer_folder) -> Path:
    """A config without weights (plus preprocessing), for ``--from-scratch``."""
    from siglip.config import SiglipConfig

    from conftest import TINY_TEXT, TINY_VISION

    folder = tmp_path_factory.mktemp("scratch")
    SiglipConfig(text_config={**TINY_TEXT, **TEXT}, vision_config={**TINY_VISION, **VISION}).save_pretrained(folder)
    return _with_preprocessing(folder, tokenizer_folder)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return shapes.write_captioned_folder(tmp_path_factory.mktemp("pairs"), 64, seed=0, image_size=32)


@pytest.fixture(scope="module")
def classes(tmp_path_factory) -> Path:
    return shapes.write_class_folders(tmp_path_factory.mktemp("classes"), 72, seed=0, image_size=32)


def _train(data: Path, model: Path, out: Path, *options: str) -> Path:
    args = ["--data", str(data), "--model", str(model), "--output", str(out), "--num-workers", "0", "-q", *options]
    assert train_main(args) == 0
    return out


# ------------------------------------------------------------------------------------------------------------
# The demo model
# ------------------------------------------------------------------------------------------------------------


def test_demo_model_zero_shot_accuracy_on_fresh_images():
    from siglip import pipeline

    classify = pipeline("zero-shot-image-classification", model="siglip-demo", batch_size=50)
    accuracy = shapes.zero_shot_accuracy(classify, shapes.TRAIN_PAIRS, shapes.EVAL_SEED, 200)
    assert accuracy >= 0.95


def test_demo_example_image_through_the_command(capsys):
    from siglip.cli import main

    labels = [shapes.label(c, s) for c, s in shapes.ALL_PAIRS]
    example = DEMO / "examples" / "red_circle.png"
    code = main(
        [
            "classify",
            str(example),
            "--model",
            "siglip-demo",
            "--labels",
            *labels,
            "--template",
            "a {}",
            "--format",
            "json",
            "--top-k",
            "1",
            "--num-workers",
            "0",
            "-q",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)[0]["scores"][0]["label"] == "red circle"
    assert sum(p.stat().st_size for p in (DEMO / "demo").iterdir()) < 8e6


def test_demo_model_loads_in_transformers_with_equal_outputs():
    import transformers

    from siglip import AutoModel, AutoTokenizer

    folder = DEMO / "demo"
    texts = ["a red circle", "This is a photo of a small blue star on the left."]
    ours_ids = AutoTokenizer.from_pretrained(folder)(texts, padding="max_length", max_length=24, return_tensors="pt")
    ref_ids = transformers.AutoTokenizer.from_pretrained(folder)(
        texts, padding="max_length", max_length=24, return_tensors="pt"
    )
    assert torch.equal(ours_ids["input_ids"], ref_ids["input_ids"])
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = AutoModel.from_pretrained(folder)(input_ids=ours_ids["input_ids"], pixel_values=pixels)
        ref = transformers.AutoModel.from_pretrained(folder).eval()(input_ids=ref_ids["input_ids"], pixel_values=pixels)
    torch.testing.assert_close(ours.logits_per_image, ref.logits_per_image, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Distributed contrastive training
# ------------------------------------------------------------------------------------------------------------


def test_two_process_torchrun_equals_one_process_with_the_global_batch(scratch, pairs, tmp_path):
    """2 gloo processes x 8 pairs with the ring loss == 1 process x 16 pairs, and the checkpoint loads in transformers.

    A loss over each rank's own 8 pairs (no global negatives) would give different losses from the first step on.
    """
    import transformers

    from siglip import AutoModel, AutoTokenizer

    options = ["--from-scratch", "--max-steps", "8", "--lr", "3e-3", "--save-every", "4", "--warmup-steps", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "siglip.train",
        "--data",
        str(pairs),
        "--model",
        str(scratch),
        "--output",
        str(tmp_path / "ddp"),
        "--batch-size",
        "8",
        "--num-workers",
        "0",
        "-q",
        *options,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single = _train(pairs, scratch, tmp_path / "single", "--batch-size", "16", *options)

    ddp_log, single_log = _log(tmp_path / "ddp"), _log(single)
    assert [r["step"] for r in ddp_log] == list(range(1, 9))
    for a, b in zip(ddp_log, single_log, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    # the loss falls, and matched pairs now score above unmatched ones (they did not at the start)
    assert ddp_log[-1]["loss"] < 0.5 * ddp_log[0]["loss"]
    first, last = ddp_log[0], ddp_log[-1]
    assert last["pos_logit"] - last["neg_logit"] > max(0.0, first["pos_logit"] - first["neg_logit"])
    checkpoint = tmp_path / "ddp" / "checkpoint-0000008"
    # AdamW divides by sqrt(v): float noise in near-zero gradients becomes visible in a few elements
    assert _max_difference(_weights(checkpoint), _weights(single / "checkpoint-0000008")) < 1e-4

    texts = ["a red circle", "a large green star at the top"]
    ids = AutoTokenizer.from_pretrained(checkpoint)(texts, padding="max_length", max_length=24, return_tensors="pt")
    ref_ids = transformers.AutoTokenizer.from_pretrained(checkpoint)(
        texts, padding="max_length", max_length=24, return_tensors="pt"
    )["input_ids"]
    assert torch.equal(ids["input_ids"], ref_ids)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = AutoModel.from_pretrained(checkpoint)(input_ids=ref_ids, pixel_values=pixels)
        ref = transformers.AutoModel.from_pretrained(checkpoint).eval()(input_ids=ref_ids, pixel_values=pixels)
    torch.testing.assert_close(ours.logits_per_image, ref.logits_per_image, rtol=1e-5, atol=1e-5)
    assert type(transformers.AutoImageProcessor.from_pretrained(checkpoint)).__name__.startswith("SiglipImageProcessor")


# ------------------------------------------------------------------------------------------------------------
# Resume, accumulation, FSDP
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fsdp", [False, True], ids=["plain", "fsdp"])
def test_resume_repeats_the_uninterrupted_run_bit_for_bit(scratch, pairs, tmp_path, fsdp):
    """6 steps straight vs. the checkpoint at step 3 of the same run resumed: the same weights, state and log."""
    options = ["--from-scratch", "--max-steps", "6", "--save-every", "3", "--batch-size", "16", "--lr", "1e-3"]
    options += ["--init-temperature", "20", "--init-bias", "-4"] + (["--fsdp"] if fsdp else [])
    straight = _train(pairs, scratch, tmp_path / "straight", *options)
    first = _log(straight)[0]
    assert first["logit_scale"] == pytest.approx(20) and first["logit_bias"] == pytest.approx(-4)
    interrupted = tmp_path / "interrupted"
    shutil.copytree(straight, interrupted)
    shutil.rmtree(interrupted / "checkpoint-0000006")  # as if the job died after step 5
    _train(pairs, scratch, interrupted, *options, "--resume")

    a, b = _weights(straight / "checkpoint-0000006"), _weights(interrupted / "checkpoint-0000006")
    assert all(torch.equal(a[k], b[k]) for k in a)
    state_a = torch.load(straight / "checkpoint-0000006" / "training_state.pt", weights_only=True)
    state_b = torch.load(interrupted / "checkpoint-0000006" / "training_state.pt", weights_only=True)
    for name, moments in state_a["optimizer"]["state"].items():
        assert torch.equal(moments["exp_avg_sq"], state_b["optimizer"]["state"][name]["exp_avg_sq"])
    assert state_a["scheduler"] == state_b["scheduler"]
    strip = [{k: v for k, v in r.items() if k not in ("elapsed_s", "samples_per_s")} for r in _log(straight)]
    assert strip == [{k: v for k, v in r.items() if k not in ("elapsed_s", "samples_per_s")} for r in _log(interrupted)]


def test_fsdp_alone_equals_plain_training(scratch, pairs, tmp_path):
    options = ["--from-scratch", "--max-steps", "3", "--batch-size", "16", "--lr", "1e-3", "--grad-accum", "2"]
    plain = _train(pairs, scratch, tmp_path / "plain", *options)
    fsdp = _train(pairs, scratch, tmp_path / "fsdp", *options, "--fsdp")
    assert _max_difference(_weights(plain / "checkpoint-0000003"), _weights(fsdp / "checkpoint-0000003")) < 1e-6


@pytest.mark.parametrize("task", ["contrastive", "classification"])
def test_gradient_accumulation_equals_the_larger_batch(scratch, pairs, classes, tmp_path, task):
    """2 micro-batches of 8 == one batch of 16 (for the sigmoid loss too: the negatives span both micro-batches)."""
    data = pairs if task == "contrastive" else classes
    options = ["--task", task, "--from-scratch", "--max-steps", "3", "--lr", "1e-3", "--max-grad-norm", "0"]
    big = _train(data, scratch, tmp_path / "big", *options, "--batch-size", "16")
    accumulated = _train(data, scratch, tmp_path / "accumulated", *options, "--batch-size", "8", "--grad-accum", "2")
    for a, b in zip(_log(big), _log(accumulated), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    checkpoints = big / "checkpoint-0000003", accumulated / "checkpoint-0000003"
    assert _max_difference(*map(_weights, checkpoints)) < 1e-5


# ------------------------------------------------------------------------------------------------------------
# Classification
# ------------------------------------------------------------------------------------------------------------


def test_classification_fine_tuning_loads_in_transformers(base, classes, tmp_path):
    import transformers

    from siglip import AutoModelForImageClassification

    run = _train(
        classes,
        base,
        tmp_path / "run",
        "--task",
        "classification",
        "--epochs",
        "3",
        "--batch-size",
        "12",
        "--lr",
        "3e-3",
        "--bf16",
        "--warmup-steps",
        "2",
        "--log-every",
        "1",
    )
    log = _log(run)
    assert len(log) == 18  # 72 images / 12 per step x 3 epochs
    assert [r["lr"] for r in log[:2]] == pytest.approx([1.5e-3, 3e-3])  # linear warm-up, then the peak
    assert sum(r["loss"] for r in log[-3:]) < sum(r["loss"] for r in log[:3])
    checkpoint = run / "checkpoint-0000018"
    ref = transformers.AutoModelForImageClassification.from_pretrained(checkpoint).eval()
    assert ref.config.id2label == dict(enumerate(sorted(shapes.COLOURS)))
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ours = AutoModelForImageClassification.from_pretrained(checkpoint)(pixel_values=pixels).logits
        torch.testing.assert_close(ours, ref(pixel_values=pixels).logits, rtol=1e-5, atol=1e-5)
    assert json.loads((checkpoint / "config.json").read_text())["dtype"] == "float32"  # bf16 is autocast only


def test_siglip2_naflex_contrastive_and_classification_checkpoints_load_in_transformers(pairs, classes, tmp_path):
    """SigLIP2 NaFlex (Gemma tokenizer, patchified inputs with masks) through both tasks, checked by transformers."""
    import transformers

    from siglip import AutoModel, AutoModelForImageClassification

    from builders import write_checkpoint

    base = write_checkpoint(tmp_path / "base", "siglip2", max_num_patches=16)
    common = ["--max-steps", "2", "--batch-size", "8", "--lr", "1e-3"]
    contrastive = _train(pairs, base, tmp_path / "contrastive", *common) / "checkpoint-0000002"
    classifier = _train(classes, base, tmp_path / "classes", "--task", "classification", *common) / "checkpoint-0000002"

    processor = transformers.AutoImageProcessor.from_pretrained(contrastive)
    inputs = processor([s.image for s in shapes.samples(2, 5, image_size=32)], return_tensors="pt")
    ids = transformers.AutoTokenizer.from_pretrained(contrastive)(
        ["a red circle", "a blue star"], padding="max_length", max_length=64, return_tensors="pt"
    )["input_ids"]
    with torch.no_grad():
        ours = AutoModel.from_pretrained(contrastive)(input_ids=ids, **inputs).logits_per_image
        ref = transformers.AutoModel.from_pretrained(contrastive).eval()(input_ids=ids, **inputs).logits_per_image
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        ours = AutoModelForImageClassification.from_pretrained(classifier)(**inputs).logits
        ref_model = transformers.AutoModelForImageClassification.from_pretrained(classifier).eval()
        torch.testing.assert_close(ours, ref_model(**inputs).logits, rtol=1e-5, atol=1e-5)
    assert type(ref_model).__name__ == "Siglip2ForImageClassification" and ref_model.config.num_labels == 6


# ------------------------------------------------------------------------------------------------------------
# Inputs and errors
# ------------------------------------------------------------------------------------------------------------


def test_bad_inputs_are_skipped_and_listed(scratch, tmp_path):
    folder = shapes.write_csv(tmp_path / "data" / "pairs.csv", 20, seed=3, image_size=32).parent
    (folder / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with open(folder / "pairs.csv", "a", encoding="utf-8") as f:
        f.write("images/broken.png,a broken image\nimages/missing.png,a missing image\nimages/000001.png,\n")
        f.write("images/000002.png,a caption,an extra field\n")
    run = _train(
        folder / "pairs.csv", scratch, tmp_path / "run", "--from-scratch", "--batch-size", "4", "--num-workers", "1"
    )
    skipped = [json.loads(line) for line in (run / "skipped.jsonl").read_text().splitlines()]
    reasons = {Path(s["source"]).name: s["reason"] for s in skipped}
    assert len(skipped) == 4
    assert "empty caption" in reasons["pairs.csv:24"] and "more fields" in reasons["pairs.csv:25"]
    assert "does not exist" in reasons["pairs.csv:23"] and "broken.png" in reasons
    assert len(_log(run)) == 5  # the 20 good pairs, 4 per step, one epoch


def test_decoding_warnings_are_one_line_each_and_silenced_by_quiet(scratch, tmp_path, capsys):
    """An image with no standard 8-bit scale is stretched (as the other commands read it) and said once, in one
    line of ours when the scan decodes it, not as a Python warning each time training reads it; -q silences it."""
    import numpy as np
    from PIL import Image

    csv_path = shapes.write_csv(tmp_path / "data" / "pairs.csv", 7, seed=3, image_size=32)
    Image.fromarray(np.arange(32 * 32, dtype=np.int32).reshape(32, 32) * 100_000).save(csv_path.parent / "wide.tif")
    with open(csv_path, "a", encoding="utf-8") as f:
        f.write("wide.tif,a grey gradient\n")
    common = ["--data", str(csv_path), "--model", str(scratch), "--from-scratch", "--batch-size", "4"]
    for quiet in (False, True):
        options = ["--epochs", "1", "--num-workers", "0", "--output", str(tmp_path / f"run-{quiet}")]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert train_main([*common, *options, *(["-q"] if quiet else [])]) == 0
        err = capsys.readouterr().err
        assert not [w for w in caught if "wide.tif" in str(w.message)] and "UserWarning" not in err
        ours = [line for line in err.splitlines() if "wide.tif" in line]
        said = f"siglip: warning: {csv_path.parent / 'wide.tif'}: mode I with values in [0, {1023 * 100_000:g}]"
        assert [line.startswith(said) for line in ours] == ([] if quiet else [True]), err


def _folder_without_captions(tmp: Path) -> list[str]:
    folder = shapes.write_captioned_folder(tmp / "d", 4, seed=0, image_size=32)
    for caption in folder.glob("*.txt"):
        caption.unlink()
    return ["--data", str(folder)]


def _csv_without_columns(tmp: Path) -> list[str]:
    (tmp / "d.csv").write_text("path,text\na.png,a red circle\n")
    return ["--data", str(tmp / "d.csv")]


def _one_class(tmp: Path) -> list[str]:
    shapes.write_captioned_folder(tmp / "d" / "only", 4, seed=0, image_size=32)
    return ["--data", str(tmp / "d"), "--task", "classification"]


def _empty_folder(tmp: Path) -> list[str]:
    (tmp / "d").mkdir()
    return ["--data", str(tmp / "d")]


def _too_few_for_a_batch(tmp: Path) -> list[str]:
    return ["--data", str(shapes.write_captioned_folder(tmp / "d", 4, seed=0, image_size=32)), "--batch-size", "8"]


@pytest.mark.parametrize(
    "make, message",
    [
        (_empty_folder, "no images found"),
        (_folder_without_captions, "same-name .txt"),
        (_csv_without_columns, "needs columns image and caption"),
        (_one_class, "at least two"),
        (_too_few_for_a_batch, "fewer than one global batch"),
    ],
)
def test_unusable_inputs_are_one_line_errors(scratch, tmp_path, capsys, make, message):
    from siglip.cli import main

    code = main(
        [
            "train",
            "--model",
            str(scratch),
            "--from-scratch",
            "--output",
            str(tmp_path / "run"),
            "--num-workers",
            "0",
            "-q",
            *make(tmp_path),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("siglip: error:") and message in err[0]


def test_existing_runs_need_resume_with_the_same_settings(scratch, pairs, tmp_path, capsys):
    options = ["--from-scratch", "--max-steps", "1", "--batch-size", "16"]
    run = _train(pairs, scratch, tmp_path / "run", *options)
    common = ["--data", str(pairs), "--model", str(scratch), "--output", str(run), "--num-workers", "0", "-q"]
    assert train_main([*common, *options]) == 1
    assert "pass --resume" in capsys.readouterr().err
    assert train_main([*common, "--resume", "--from-scratch", "--max-steps", "1", "--batch-size", "8"]) == 1
    assert "batch_size 16 -> 8" in capsys.readouterr().err


def test_initial_logit_scale_and_bias_need_from_scratch(base, pairs, tmp_path, capsys):
    assert train_main(["--data", str(pairs), "--model", str(base), "--output", str(tmp_path), "--init-bias", "-5"]) == 1
    assert "need --from-scratch" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------
# Pieces
# ------------------------------------------------------------------------------------------------------------


def test_learning_rate_schedule_warms_up_linearly_then_decays_as_a_cosine():
    factors = [lr_factor(step, warmup_steps=4, total_steps=20) for step in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4 + 8] == pytest.approx(0.5)  # half way through the decay
    assert all(a > b for a, b in zip(factors[4:-1], factors[5:], strict=True)) and 0 < factors[-1] < 0.01


def test_data_order_depends_on_seed_and_epoch_and_ranks_split_the_global_batch():
    from siglip.train.data import RankBatches, epoch_permutation

    assert not torch.equal(epoch_permutation(50, 0, 0), epoch_permutation(50, 0, 1))
    assert not torch.equal(epoch_permutation(50, 0, 0), epoch_permutation(50, 1, 0))
    one = list(RankBatches(50, 8, 1, rank=0, world=1, seed=0, epoch=2))
    two = [list(RankBatches(50, 4, 1, rank=r, world=2, seed=0, epoch=2)) for r in range(2)]
    assert len(one) == 6 and [a + b for a, b in zip(*two, strict=True)] == one
    assert list(RankBatches(50, 4, 2, rank=0, world=1, seed=0, epoch=2, start_step=4)) == [
        one[4][:4],
        one[4][4:],
        one[5][:4],
        one[5][4:],
    ]


def test_training_stays_out_of_the_inference_imports():
    """``import siglip`` does not load training, and the ``siglip`` command loads only its argument parser."""
    code = (
        "import sys, siglip; assert 'siglip.train' not in sys.modules; "
        "import siglip.train; assert not {'torch', 'siglip.train.trainer', 'siglip.train.data'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_contrastive_batches_carry_the_tokenizer_attention_mask(tmp_path):
    """With a tokenizer that returns a mask (saved by transformers' Siglip2Tokenizer), the training batch holds
    it and the text embeddings the loss sees are transformers' masked ones."""
    import transformers

    from siglip.auto import AutoModel, AutoTokenizer
    from siglip.train.data import Collate
    from siglip.train.trainer import ContrastiveTowers

    from builders import resave_tokenizer_with_transformers, write_checkpoint

    folder = resave_tokenizer_with_transformers(write_checkpoint(tmp_path / "ck", "fixres", seed=4))
    captions = ["a red circle", "two blue squares on the left"]
    images = {"pixel_values": torch.randn(2, 3, 32, 32)}
    items = [({"pixel_values": images["pixel_values"][i : i + 1]}, c) for i, c in enumerate(captions)]
    batch_images, text = Collate(AutoTokenizer.from_pretrained(folder), 64)(items)
    assert set(text) == {"input_ids", "attention_mask"} and text["attention_mask"].sum() < 128
    with torch.no_grad():
        _, text_embeds, _, _ = ContrastiveTowers(AutoModel.from_pretrained(folder))(**text, **batch_images)
        ref = transformers.AutoModel.from_pretrained(folder).get_text_features(**text).pooler_output
    torch.testing.assert_close(text_embeds, torch.nn.functional.normalize(ref, dim=-1), rtol=1e-5, atol=1e-6)
