"""The `siglip` command end to end on generated folders and random-weight checkpoints."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import transformers
from PIL import Image

import siglip
import siglip.progress
from siglip.cli import main
from siglip.store import EmbeddingStore

from builders import resave_tokenizer_with_transformers, write_checkpoint

LABELS = ["a cat", "a dog", "a red square"]
LABEL_ARGS = ["--labels", *LABELS, "--format", "json", "-q", "--model"]


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
    code, out, err = run(["classify", bad[0], "--model", model_dir, "--labels", "a", "--quiet"], capsys)
    assert code == 1 and "none of the 1 images could be read" in err
    assert out == ""  # no empty table
    code, out, err = run(["embed", *bad, "--output", tmp_path / "store", "--model", model_dir, "-q"], capsys)
    assert code == 1 and "none of the 3 images could be read" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["classify", "nowhere.jpg", "--labels", "a"], "nowhere.jpg: no such file or folder"),
        (["classify", "{img}"], "no labels: pass --labels"),
        (["classify", "{img}", "--labels", "a", "a"], "duplicates"),
        (["classify", "{img}", "--labels", "a", "--template", "no slot"], "must contain"),
        (["classify", "{img}", "--labels", "a", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["classify", "{img}", "--labels", "a", "--top-k", "0"], "--top-k must be at least 1, got 0"),
        (["classify", "{img}", "--labels", "a", "--top-k", "-1"], "--top-k must be at least 1, got -1"),
        (["classify", "{img}", "--labels", "red circle", ""], "--labels: label 2 is empty"),
        (["classify", "{img}", "--labels", "a", "a"], "--labels has duplicates: ['a']"),
        (["classify", "{img}", "--labels", "a", "--template", "no slot"], "--template must contain '{{}}'"),
        (["classify", "{img}", "--labels", "a", "--threshold", "2"], "--threshold must be between 0 and 1"),
        (["classify", "{img}", "--labels-file", "{tmp}/c.txt"], "--labels-file {tmp}/c.txt has no labels"),
        (["classify", "{tmp}/empty", "--labels", "a"], "no images found in"),
        (["embed", "{tmp}/empty", "--output", "{tmp}/o"], "no images found in"),
        (["search", "{tmp}", "query"], "is not an embedding store"),
        (["embed", "{img}", "--texts", "x.txt", "--output", "{tmp}/o"], "not both"),
    ],
)
def test_errors_are_one_line_with_nonzero_exit(model_dir, tmp_path, capsys, argv, message):
    img = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(img)
    (tmp_path / "empty").mkdir()
    (tmp_path / "c.txt").write_text("# only a comment\n\n")
    argv = [a.format(img=img, tmp=tmp_path) for a in argv] + ["--model", str(model_dir)]
    code, out, err = run(argv, capsys)
    assert code == 1 and out == ""
    assert err.strip().splitlines()[-1].startswith("siglip: error:") or "siglip: error:" in err
    assert message.format(tmp=tmp_path) in err
    assert "candidate_labels" not in err and "hypothesis_template" not in err  # the flags are named, not Python's
    assert not (tmp_path / "o").exists()


def test_missing_model_error_says_how_to_pass_a_folder(tmp_path, capsys, monkeypatch):
    img = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(img)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    code, _, err = run(["classify", img, "--labels", "a", "--model", "google/not-a-cached-model"], capsys)
    assert code == 1
    assert "not in the Hugging Face cache" in err and "--model PATH" in err
    assert "hf download google/not-a-cached-model" in err and "huggingface-cli download" not in err
    (tmp_path / "ck").mkdir()  # a path was given: no advice to give one
    code, _, err = run(["classify", img, "--labels", "a", "--model", tmp_path / "ck"], capsys)
    assert code == 1 and "has no config.json" in err and "--model PATH" not in err


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
    paths = [r["path"] for r in rows]  # keys: paths relative to the embedded folder

    def key(path: Path) -> str:
        return path.relative_to(tmp_path / "imgs").as_posix()

    assert len(paths) == len(set(paths)) == 6
    assert key(images[0]) not in paths and key(new) in paths
    changed = rows[paths.index(key(images[1]))]
    assert (changed["width"], changed["height"]) == (40, 10)
    untouched = key(images[2])
    np.testing.assert_array_equal(matrix[paths.index(untouched)], before[untouched])


def test_embed_texts_and_search(model_dir, tmp_path, capsys):
    texts = tmp_path / "captions.txt"
    texts.write_text("a red circle\na blue square\n\na red circle\nthe green triangle\n")
    out = tmp_path / "texts"
    code, _, err = run(["embed", "--texts", texts, "--output", out, "--model", model_dir], capsys)
    assert code == 0
    assert "5 lines, 3 texts to embed; dropped 1 blank line(s) and 1 repeated text(s)" in err
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
    for command in ("classify", "embed", "search", "eval"):
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


def test_classify_formats_threshold_and_labels_file(model_dir, tmp_path, capsys):
    """jsonl is one {image, scores} per line; --threshold keeps the labels scoring at least T; csv is one row per
    image and label (as the README says); comment and blank lines of --labels-file are not labels."""
    images = make_images(tmp_path / "imgs", 2)
    (tmp_path / "labels.txt").write_text("# animals\na cat\n\n  a dog  \n# and one more\na red square\n")
    common = ["--model", model_dir, "--labels-file", tmp_path / "labels.txt", "-q"]
    code, out, _ = run(["classify", *images, *common, "--format", "jsonl"], capsys)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["image"] for r in lines] == [str(p) for p in images]
    assert all(sorted(s["label"] for s in r["scores"]) == sorted(LABELS) for r in lines)
    threshold = sorted(s["score"] for s in lines[0]["scores"])[1]  # keeps the best two labels of the first image
    code, out, _ = run(["classify", *images, *common, "--format", "jsonl", "--threshold", threshold], capsys)
    kept = [json.loads(line) for line in out.splitlines()]
    assert [s["label"] for s in kept[0]["scores"]] == [s["label"] for s in lines[0]["scores"][:2]]
    assert all(s["score"] >= threshold for r in kept for s in r["scores"])
    code, out, _ = run(["classify", *images, *common, "--format", "csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 2 * 3 and list(rows[0]) == ["image", "rank", "label", "score"]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "one row per image and label" in readme and "zero-shot, one row per image\n" not in readme


def test_classify_with_a_fine_tuned_classifier_uses_its_head(classifier_run, tmp_path, capsys):
    """`siglip train --task classification` writes a checkpoint `classify` uses: its head and id2label, softmax
    scores, or sigmoid ones when its problem_type is multi-label (transformers' image-classification pipeline)."""
    checkpoint, data = classifier_run
    image = sorted((data / "red").iterdir())[0]
    code, out, err = run(["classify", image, "--model", checkpoint, "--format", "json", "-q"], capsys)
    assert code == 0, err
    ours = json.loads(out)[0]["scores"]
    reference = transformers.pipeline("image-classification", model=str(checkpoint))(str(image), top_k=6)
    assert [s["label"] for s in ours] == [s["label"] for s in reference]
    np.testing.assert_allclose([s["score"] for s in ours], [s["score"] for s in reference], rtol=1e-5, atol=1e-7)
    assert abs(sum(s["score"] for s in ours) - 1) < 1e-5  # softmax over its labels
    pipe = siglip.pipeline(model=str(checkpoint))  # the task follows the checkpoint's architecture
    assert isinstance(pipe, siglip.ImageClassificationPipeline)
    assert [s["label"] for s in pipe(str(image), top_k=6)] == [s["label"] for s in reference]
    code, _, err = run(["classify", image, "--model", checkpoint, "--labels", "red"], capsys)
    assert code == 1 and "scores its own labels; leave out --labels" in err
    code, _, err = run(["embed", image, "-o", tmp_path / "store", "--model", checkpoint], capsys)
    assert code == 1 and "is a fine-tuned image classifier" in err

    multi = tmp_path / "multi"
    shutil.copytree(checkpoint, multi)
    config = json.loads((multi / "config.json").read_text())
    (multi / "config.json").write_text(json.dumps({**config, "problem_type": "multi_label_classification"}))
    code, out, _ = run(["classify", image, "--model", multi, "--format", "json", "--top-k", "2", "-q"], capsys)
    reference = transformers.pipeline("image-classification", model=str(multi))(str(image), top_k=2)
    np.testing.assert_allclose([s["score"] for s in json.loads(out)[0]["scores"]], [s["score"] for s in reference])
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "usable with\n`siglip classify --model`" in capsys.readouterr().out


def test_paths_as_given_and_a_moved_folder_needs_no_new_embeddings(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_images(Path("photos"), 4)
    given = ["photos/img002.webp", "photos/img001.jpg", "photos"]  # a folder's files come sorted, once each
    code, out, _ = run(["classify", *given, *LABEL_ARGS, model_dir], capsys)
    names = [r["image"] for r in json.loads(out)]
    assert code == 0 and names == [*given[:2], "photos/sub/img000.png", "photos/sub/img003.png"]

    assert run(["embed", "photos", "-o", "store", "--model", model_dir, "-q"], capsys)[0] == 0
    rows, matrix = EmbeddingStore("store").load()
    assert [r["path"] for r in rows] == ["img001.jpg", "img002.webp", "sub/img000.png", "sub/img003.png"]
    manifest = json.loads(Path("store/manifest.json").read_text())
    assert manifest["root"] == str(tmp_path / "photos") and manifest["version"] == 2
    shutil.move("photos", "moved")  # keeps sizes and modification times
    code, _, err = run(["embed", "moved", "-o", "store", "--model", model_dir], capsys)
    assert code == 0 and "4 already embedded, 0 to embed" in err and "(0 new," in err
    assert json.loads(Path("store/manifest.json").read_text())["root"] == str(tmp_path / "moved")
    moved_rows, moved_matrix = EmbeddingStore("store").load()
    assert moved_rows == rows and np.array_equal(moved_matrix, matrix)
    code, out, _ = run(["search", "store", "--image", "moved/sub/img003.png", "--paths-only", "-q"], capsys)
    assert out.splitlines()[0] == str(tmp_path / "moved" / "sub" / "img003.png")  # search prints the file's path


def test_a_version_1_store_is_rekeyed_not_re_embedded(model_dir, tmp_path, capsys):
    """Version 1 keyed rows by absolute path; the next embed rewrites the keys relative to its folder and keeps
    the embeddings (files outside the folder are dropped, as deleted ones)."""
    make_images(tmp_path / "photos", 4)
    new = tmp_path / "new"
    assert run(["embed", tmp_path / "photos", "-o", new, "--model", model_dir, "-q"], capsys)[0] == 0
    rows, matrix = EmbeddingStore(new).load()
    old = EmbeddingStore(tmp_path / "old")
    manifest = {k: v for k, v in json.loads((new / "manifest.json").read_text()).items() if k != "root"}
    old.prepare(manifest)
    absolute = [{**r, "path": str(tmp_path / "photos" / r["path"])} for r in rows]
    old.append(absolute[:2] + [{**absolute[2], "path": "/elsewhere/x.png"}], matrix[:3] * 0 + 0.5)
    old.append(absolute[3:], matrix[3:] * 0 + 0.5)  # sentinel embeddings: re-embedding would change them
    (old.root / "manifest.json").write_text(json.dumps({**manifest, "format": "siglip-embeddings", "version": 1}))
    code, _, err = run(["embed", tmp_path / "photos", "-o", old.root, "--model", model_dir], capsys)
    assert code == 0 and "3 already embedded, 1 to embed" in err
    migrated, embeddings = old.load()
    assert migrated == rows and json.loads((old.root / "manifest.json").read_text())["version"] == 2
    kept = [i for i, r in enumerate(rows) if r["path"] != rows[2]["path"]]
    assert np.all(embeddings[kept] == 0.5) and not np.all(embeddings[2] == 0.5)


def test_embed_uses_the_store_model_and_refuses_another(model_dir, tmp_path, capsys, monkeypatch):
    make_images(tmp_path / "imgs", 2)
    store = tmp_path / "store"
    assert run(["embed", tmp_path / "imgs", "-o", store, "--model", model_dir, "-q"], capsys)[0] == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the default hub model is not needed: the store names its model
    Image.new("RGB", (20, 20), "red").save(tmp_path / "imgs" / "new.png")
    code, _, err = run(["embed", tmp_path / "imgs", "-o", store], capsys)
    assert code == 0 and f"loaded {model_dir.resolve()}" in err and "(1 new at " in err
    other = write_checkpoint(tmp_path / "other", "siglip", seed=9)
    code, _, err = run(["embed", tmp_path / "imgs", "-o", store, "--model", other], capsys)
    assert code == 1
    assert f"holds embeddings made by {model_dir.resolve()}, not {other}" in err and "Leave out --model" in err
    assert "loaded" not in err  # refused before loading anything


def test_ctrl_c_keeps_the_rows_and_says_how_to_resume(model_dir, tmp_path, capsys, monkeypatch):
    from siglip.pipelines import ZeroShotImageClassificationPipeline

    make_images(tmp_path / "imgs", 8)
    embed_pixels, calls = ZeroShotImageClassificationPipeline.embed_pixels, []

    def interrupted_on_the_third_batch(self, inputs, normalize=True):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return embed_pixels(self, inputs, normalize)

    monkeypatch.setattr(ZeroShotImageClassificationPipeline, "embed_pixels", interrupted_on_the_third_batch)
    argv = ["embed", tmp_path / "imgs", "-o", tmp_path / "store", "--model", model_dir, "--batch-size", "2", "-q"]
    code, _, err = run(argv, capsys)
    assert code == 130
    assert err.strip().endswith(
        f"siglip: interrupted: 4 new images embedded and kept (4 rows in {tmp_path / 'store'}); run the same "
        "command again to resume where it stopped"
    )
    monkeypatch.undo()
    code, _, err = run(argv[:-1], capsys)
    assert code == 0 and "4 already embedded, 4 to embed" in err


def test_progress_has_no_rate_before_the_first_item_and_nothing_to_say_for_no_work(model_dir, tmp_path, capsys):
    from siglip.progress import Progress

    stream = io.StringIO()
    with Progress(3, "embedding", unit="img", stream=stream) as bar:
        first = stream.getvalue()
        bar.update(3)
    assert first == "embedding [                        ] 0/3 img\n"
    assert "left" not in stream.getvalue().splitlines()[-1]  # done: no time left to announce
    silent = io.StringIO()
    with Progress(0, "embedding", stream=silent) as bar:
        pass
    assert silent.getvalue() == ""

    make_images(tmp_path / "imgs", 2)
    argv = ["embed", tmp_path / "imgs", "-o", tmp_path / "store", "--model", model_dir]
    assert run(argv, capsys)[0] == 0
    code, _, err = run(argv, capsys)
    assert code == 0 and "embedding" not in err and "img/s" not in err  # a no-op run draws no bar


def test_worker_processes_are_picked_by_job_size():
    from siglip.cli import build_parser
    from siglip.data import SMALL_JOB, default_workers, workers_for

    assert workers_for(50) == 0 and workers_for(SMALL_JOB) == default_workers() and workers_for(50, 3) == 3
    for command in (["classify", "x"], ["embed", "x", "-o", "y"], ["eval", "zero-shot", "x"]):
        assert build_parser().parse_args(command).num_workers is None  # the job decides


def test_readme_quick_start_prints_what_the_readme_shows(capsys, monkeypatch):
    """The quick-start command, run as written from the repository root, prints the output the README shows; what
    the README says of its scores holds (independent sigmoid scores: the right label about 0.2, unchanged when the
    other labels are dropped); the README's Python example with "siglip-demo" runs and prints what it says."""
    import shlex

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("## ", 1)[0]
    command = next(line for line in quick_start.splitlines() if "siglip classify" in line)
    shown = quick_start.split("```text\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(root)
    code, out, _ = run(shlex.split(command.split("&& siglip ", 1)[1]), capsys)
    assert code == 0 and out == shown
    example = next(b for b in readme.split("```python\n")[1:] if b.startswith("# the bundled demo model"))
    example = example.split("```", 1)[0]
    namespace: dict = {}
    exec(example, namespace)
    scores = namespace["scores"]
    assert [s["label"] for s in scores] == ["red circle", "blue square"]
    printed = example.split("print(scores)  # ", 1)[1].splitlines()[0]  # "[{'score': 0.1977..., 'label': ...}, ...]"
    shown_scores = [part.split(",", 1)[0].split("...") for part in printed.split("'score': ")[1:]]
    assert len(shown_scores) == 2
    for (head, *tail), score in zip(shown_scores, scores, strict=True):  # "3.6...e-08": the digits shown, elided
        assert repr(score["score"]).startswith(head) and repr(score["score"]).endswith("".join(tail))
    assert "sigmoid probability" in quick_start and "right label scoring 0.2" in quick_start
    table = {line.split()[0]: line for line in shown.splitlines()[1:]}  # the quick start's 4 labels
    assert f"red circle {scores[0]['score']:.4f}" in table["src/siglip/assets/examples/red_circle.png"]
    assert round(scores[0]["score"], 1) == 0.2


def test_skip_and_warning_lines_start_on_a_clean_terminal_line(model_dir, tmp_path, monkeypatch):
    """On a terminal the progress bar is redrawn in place (``\\r``); a `siglip: skipped` or `siglip: warning` line
    printed during the job must not start on top of the bar (the bar is erased first)."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def messages(text: str) -> tuple[list[tuple[str, str]], list[str]]:
        """(message, what the terminal line held when the message started) for each line of ours, and the lines
        the terminal shows at the end."""
        found, screen, line, column = [], [], [], 0
        for i, char in enumerate(text):
            if char == "\n":
                screen.append("".join(line).rstrip())
                line, column = [], 0
            elif char == "\r":
                column = 0
            else:
                if column == 0 and text.startswith("siglip: ", i):
                    found.append((text[i : text.index("\n", i)], "".join(line).strip()))
                line[column : column + 1] = [char]
                column += 1
        return found, screen

    folder = tmp_path / "photos"
    folder.mkdir()
    add_bad_files(folder)
    Image.fromarray(np.arange(600, dtype=np.int32).reshape(20, 30) * 100_000).save(folder / "wide.tif")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    clock = itertools.count(start=1000.0, step=1.0)  # a second per reading: every update redraws the bar
    monkeypatch.setattr(siglip.progress, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    assert main(["classify", str(folder), "--labels", "a", "b", "--model", str(model_dir), "--batch-size", "1"]) == 0
    said, screen = messages(terminal.getvalue())
    assert screen[-1].startswith("classifying [#####") and screen[-1].endswith(" img/s")  # no "left" remnant
    ours = [(message, under) for message, under in said if message.startswith(("siglip: skipped", "siglip: warning"))]
    assert len(ours) == 4 and any("wide.tif" in message for message, _ in ours), said
    assert [under for _, under in ours] == [""] * 4, said


def test_a_closed_stdout_pipe_ends_quietly(model_dir, tmp_path, capsys, monkeypatch):
    """`siglip classify ... | head -1`: once the reader is gone, the command stops with 141 (as SIGPIPE would) and
    no `siglip: error: [Errno 32] Broken pipe`."""

    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    images = make_images(tmp_path / "imgs", 2)
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    code = main(["classify", *map(str, images), "--labels", *LABELS, "--model", str(model_dir), "-q"])
    assert code == 141 and capsys.readouterr().err == ""
