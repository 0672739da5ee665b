"""The `siglip` command end to end on generated folders and random-weight checkpoints."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import transformers
from PIL import Image

from siglip.cli import main
from siglip.store import EmbeddingStore

from builders import resave_tokenizer_with_transformers, write_checkpoint

LABELS = ["a cat", "a dog", "a red square"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("cli") / "model", "siglip", seed=5)


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sub = folder / ("sub" if i % 3 == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        h, w = int(rng.integers(8, 80)), int(rng.integers(8, 80))
        path = sub / f"img{i:03d}.{['png', 'jpg', 'webp'][i % 3]}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def add_bad_files(folder: Path) -> list[Path]:
    good = folder / "good.jpg"
    Image.new("RGB", (30, 30), "blue").save(good)
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:60])
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    text = folder / "notes.jpg"
    text.write_text("this is not an image")
    return [truncated, empty, text]


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_classify_equals_transformers_pipeline_and_formats_parse(model_dir, tmp_path, capsys):
    images = make_images(tmp_path / "imgs", 4)
    ref = transformers.pipeline("zero-shot-image-classification", model=str(model_dir))
    expected = {str(p.resolve()): ref(str(p), candidate_labels=LABELS) for p in images}
    common = ["--model", model_dir, "--labels", *LABELS, "--quiet", "--num-workers", "0", "--batch-size", "3"]

    code, out, _ = run(["classify", tmp_path / "imgs", *common, "--format", "json"], capsys)
    assert code == 0
    results = json.loads(out)
    assert sorted(r["image"] for r in results) == sorted(expected)
    for r in results:
        want = expected[r["image"]]
        assert [s["label"] for s in r["scores"]] == [s["label"] for s in want]
        np.testing.assert_allclose([s["score"] for s in r["scores"]], [s["score"] for s in want], rtol=1e-5)

    code, out, _ = run(["classify", images[0], *common, "--format", "csv", "--top-k", "2"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["rank"] for r in rows] == ["1", "2"]
    assert rows[0]["label"] == expected[str(images[0].resolve())][0]["label"]
    assert abs(float(rows[0]["score"]) - expected[str(images[0].resolve())][0]["score"]) < 1e-5

    code, out, _ = run(["classify", images[0], *common], capsys)
    lines = out.strip().splitlines()
    assert lines[0].startswith("image") and len(lines) == 2  # header + one row per image
    assert expected[str(images[0].resolve())][0]["label"] in lines[1]


def test_classify_skips_bad_files_and_reports_them(model_dir, tmp_path, capsys):
    bad = add_bad_files(tmp_path)
    code, out, err = run(
        ["classify", tmp_path, "--model", model_dir, "--labels", "a", "b", "--num-workers", "0", "--format", "json"],
        capsys,
    )
    assert code == 0
    assert [r["image"] for r in json.loads(out)] == [str((tmp_path / "good.jpg").resolve())]
    for path in bad:
        assert str(path.resolve()) in err
    code, _, err = run(["classify", bad[0], "--model", model_dir, "--labels", "a", "--quiet"], capsys)
    assert code == 1 and "none of the 1 images could be read" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["classify", "nowhere.jpg", "--labels", "a"], "nowhere.jpg: no such file or folder"),
        (["classify", "{img}"], "no labels: pass --labels"),
        (["classify", "{img}", "--labels", "a", "a"], "duplicates"),
        (["classify", "{img}", "--labels", "a", "--template", "no slot"], "must contain"),
        (["classify", "{img}", "--labels", "a", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["search", "{tmp}", "query"], "is not an embedding store"),
        (["embed", "{img}", "--texts", "x.txt", "--output", "{tmp}/o"], "not both"),
    ],
)
def test_errors_are_one_line_with_nonzero_exit(model_dir, tmp_path, capsys, argv, message):
    img = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(img)
    argv = [a.format(img=img, tmp=tmp_path) for a in argv] + ["--model", str(model_dir)]
    code, _, err = run(argv, capsys)
    assert code != 0
    assert err.strip().splitlines()[-1].startswith("siglip: error:") or "siglip: error:" in err
    assert message in err


def test_missing_model_error_says_how_to_pass_a_folder(tmp_path, capsys, monkeypatch):
    img = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(img)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    code, _, err = run(["classify", img, "--labels", "a", "--model", "google/not-a-cached-model"], capsys)
    assert code == 1
    assert "not in the Hugging Face cache" in err and "--model PATH" in err


def test_embed_then_search_finds_the_image_itself(model_dir, tmp_path, capsys):
    images = make_images(tmp_path / "imgs", 10)
    bad = add_bad_files(tmp_path / "imgs")
    out = tmp_path / "store"
    code, _, err = run(
        [
            "embed",
            tmp_path / "imgs",
            "--output",
            out,
            "--model",
            model_dir,
            "--num-workers",
            "1",
            "--batch-size",
            "4",
            "--shard-size",
            "3",
        ],
        capsys,
    )
    assert code == 0, err
    store = EmbeddingStore(out)
    rows, matrix = store.load()
    assert len(rows) == 11 and matrix.shape == (11, 32)  # 10 generated + good.jpg
    assert {"path", "size", "mtime_ns", "width", "height"} <= set(rows[0])
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, rtol=1e-5)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["path"] for e in errors) == sorted(str(p.resolve()) for p in bad)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 11 and manifest["model"] == str(model_dir.resolve()) and manifest["kind"] == "image"
    assert "preprocessing" in manifest and manifest["dim"] == 32
    target = images[4]
    code, stdout, _ = run(["search", out, "--image", target, "--top-k", "3", "--paths-only", "--quiet"], capsys)
    assert code == 0
    assert stdout.splitlines()[0] == str(target.resolve())
    code, stdout, _ = run(["search", out, "a red square", "--format", "json", "--quiet"], capsys)
    hits = json.loads(stdout)
    assert len(hits) == 10 and hits[0]["rank"] == 1 and hits[0]["score"] >= hits[-1]["score"]
    code, stdout, _ = run(["search", out, "a red square", "--quiet"], capsys)
    assert stdout.splitlines()[0].split() == ["rank", "score", "path"]


def test_rerun_updates_incrementally(model_dir, tmp_path, capsys):
    images = make_images(tmp_path / "imgs", 6)
    out = tmp_path / "store"
    argv = ["embed", tmp_path / "imgs", "--output", out, "--model", model_dir, "--num-workers", "0", "--quiet"]
    assert run(argv, capsys)[0] == 0
    before = {r["path"]: e for r, e in zip(*EmbeddingStore(out).load(), strict=True)}
    images[0].unlink()  # deleted
    Image.new("RGB", (40, 10), "green").save(images[1])  # changed (size and mtime)
    os.utime(images[1], ns=(time.time_ns(), time.time_ns() + 10**9))
    new = tmp_path / "imgs" / "new.png"
    Image.new("RGB", (12, 12), "white").save(new)
    code, _, err = run(argv[:-1], capsys)
    assert code == 0
    assert "4 already embedded, 2 to embed" in err
    rows, matrix = EmbeddingStore(out).load()
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == 6
    assert str(images[0].resolve()) not in paths and str(new.resolve()) in paths
    changed = rows[paths.index(str(images[1].resolve()))]
    assert (changed["width"], changed["height"]) == (40, 10)
    untouched = str(images[2].resolve())
    np.testing.assert_array_equal(matrix[paths.index(untouched)], before[untouched])


def test_embed_texts_and_search(model_dir, tmp_path, capsys):
    texts = tmp_path / "captions.txt"
    texts.write_text("a red circle\na blue square\n\na red circle\nthe green triangle\n")
    out = tmp_path / "texts"
    code, _, _ = run(["embed", "--texts", texts, "--output", out, "--model", model_dir, "--quiet"], capsys)
    assert code == 0
    rows, matrix = EmbeddingStore(out).load()
    assert [r["text"] for r in rows] == ["a blue square", "a red circle", "the green triangle"]
    code, stdout, _ = run(["search", out, "a blue square", "--paths-only", "--quiet"], capsys)
    assert stdout.splitlines()[0] == "a blue square"


def _subprocess_embed(args, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "siglip", "embed", *map(str, args)], env=env, **kwargs)


def test_killed_run_resumes_to_exactly_the_uninterrupted_rows(model_dir, tmp_path):
    make_images(tmp_path / "imgs", 40, seed=1)
    common = ["--model", model_dir, "--num-workers", "0", "--batch-size", "2", "--shard-size", "2", "--quiet"]
    reference = tmp_path / "reference"
    assert _subprocess_embed([tmp_path / "imgs", "--output", reference, *common]).wait(timeout=300) == 0

    out = tmp_path / "interrupted"
    proc = _subprocess_embed([tmp_path / "imgs", "--output", out, *common])
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "shards").glob("*.npy"))) < 4:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    partial, _ = EmbeddingStore(out).load()
    assert 0 < len(partial) < 40, "the kill must land in the middle of the run"
    assert _subprocess_embed([tmp_path / "imgs", "--output", out, *common]).wait(timeout=300) == 0

    rows_a, emb_a = EmbeddingStore(reference).load()
    rows_b, emb_b = EmbeddingStore(out).load()
    assert rows_a == rows_b and len(rows_b) == 40
    np.testing.assert_allclose(emb_a, emb_b, rtol=1e-5, atol=1e-6)


def test_help_has_examples_for_every_subcommand(capsys):
    for command in ("classify", "embed", "search"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and f"siglip {command}" in text


def test_commands_pass_the_tokenizer_attention_mask(tmp_path, capsys):
    """A tokenizer saved by transformers' Siglip2Tokenizer returns a mask: `embed --texts` and `classify` use it,
    so stored text embeddings equal transformers' (mask passed) and classify equals transformers' pipeline."""
    import torch

    folder = resave_tokenizer_with_transformers(write_checkpoint(tmp_path / "ck", "siglip2", seed=2))
    texts = ["a red circle", "a blue square on a green field", "the triangle"]
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n")
    code, _, _ = run(["embed", "--texts", tmp_path / "t.txt", "-o", tmp_path / "emb", "--model", folder, "-q"], capsys)
    assert code == 0
    rows, matrix = EmbeddingStore(tmp_path / "emb").load()
    model = transformers.AutoModel.from_pretrained(folder)
    tokens = transformers.AutoTokenizer.from_pretrained(folder)(
        [r["text"] for r in rows], padding="max_length", max_length=64, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
    np.testing.assert_allclose(matrix, expected.numpy(), rtol=1e-5, atol=1e-6)
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(image)
    code, stdout, _ = run(["classify", image, "--labels", *LABELS, "--model", folder, "--format", "json", "-q"], capsys)
    assert code == 0
    ours = json.loads(stdout)[0]["scores"]
    ref = transformers.pipeline("zero-shot-image-classification", model=str(folder))(
        str(image), candidate_labels=LABELS
    )
    assert [r["label"] for r in ours] == [r["label"] for r in ref]
    for a, b in zip(ours, ref, strict=True):
        assert abs(a["score"] - b["score"]) <= 1e-5
