"""``siglip eval``: the metrics against hand-computed values, the commands against the pipeline on the same images,
and the README's demo-model accuracies reproduced by the command on folders from the shapes generator."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import siglip
from siglip.cli import main
from siglip.evaluation import classification_metrics, ensemble_label_embeddings, retrieval_metrics

from builders import write_checkpoint
from conftest import shapes

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("eval") / "model", "siglip", seed=6)


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_classification_metrics_by_hand():
    scores = np.array(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # class 0, right
            [0.1, 0.9, 0.0, 0.0, 0.0, 0.0],  # class 0, wrong (1), true class second
            [0.0, 0.8, 0.1, 0.0, 0.0, 0.0],  # class 1, right
            [0.6, 0.1, 0.0, 0.2, 0.3, 0.4],  # class 2, wrong (0), true class sixth: not in the top 5
        ]
    )
    targets = np.array([0, 0, 1, 2])
    metrics = classification_metrics(scores, targets)
    assert metrics["acc1"] == pytest.approx(2 / 4)
    assert metrics["acc5"] == pytest.approx(3 / 4)
    assert metrics["mean_per_class_recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)  # classes 3-5 have no images
    assert classification_metrics(scores[:, :4], targets)["acc5"] is None  # fewer than 5 classes


def test_retrieval_metrics_by_hand():
    # 3 images, 4 texts: image 0 has texts 0 and 1, image 1 text 2, image 2 text 3
    text_image = np.array([0, 0, 1, 2])
    similarity = np.array(
        [
            [0.1, 0.9, 0.5, 0.0],  # image 0: best text 1 (its own) -> found at 1
            [0.8, 0.0, 0.2, 0.9],  # image 1: texts 3, 0, 2 -> found at 3
            [0.7, 0.0, 0.1, 0.6],  # image 2: texts 0, 3 -> found at 2
        ]
    )
    metrics = retrieval_metrics(similarity, text_image, recall_at=(1, 2, 3))
    assert metrics["text_retrieval_recall@1"] == pytest.approx(1 / 3)
    assert metrics["text_retrieval_recall@2"] == pytest.approx(2 / 3)
    assert metrics["text_retrieval_recall@3"] == 1.0
    # text -> image: text 0: images 1, 2, 0 (at 3); text 1: image 0 first; text 2: 0, 1 (at 2); text 3: 1, 2 (at 2)
    assert metrics["image_retrieval_recall@1"] == pytest.approx(1 / 4)
    assert metrics["image_retrieval_recall@2"] == pytest.approx(3 / 4)
    assert metrics["image_retrieval_recall@3"] == 1.0


def _class_tree(root: Path, classes: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, n in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (int(rng.integers(20, 50)), int(rng.integers(20, 50)), 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_zero_shot_ensembles_templates_and_writes_clip_benchmark_json(model_dir, tmp_path, capsys, monkeypatch):
    """Several templates: the mean of the normalised per-template embeddings, normalised. Scores, acc@1 and the
    confusion matrix equal the pipeline's on the same files; --classnames names the folders; without matplotlib
    the command still succeeds and says the PNG was skipped."""
    root = _class_tree(tmp_path / "data", {"a_cat": 3, "b_dog": 2, "c_empty": 0})
    (tmp_path / "templates.txt").write_text("# prompts\na photo of {}.\n\nthis is {}\n")
    (tmp_path / "names.txt").write_text("cat\ndog\nbird\n")
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # as if the plot extra were not installed
    out = tmp_path / "result.json"
    argv = ["eval", "zero-shot", root, "--model", model_dir, "--templates", tmp_path / "templates.txt"]
    code, stdout, err = run([*argv, "--classnames", tmp_path / "names.txt", "-o", out, "--num-workers", "0"], capsys)
    assert code == 0, err
    assert "confusion-matrix PNG skipped" in err and "matplotlib, siglip's plot extra" in err
    assert not out.with_suffix(".png").exists()
    result = json.loads(out.read_text())
    assert list(result)[:4] == ["dataset", "model", "task", "metrics"]
    assert result["task"] == "zeroshot_classification" and result["model"] == str(model_dir)
    assert set(result["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"} and result["metrics"]["acc5"] is None
    assert result["labels"] == ["cat", "dog", "bird"] and result["templates"] == ["a photo of {}.", "this is {}"]

    pipe = siglip.pipeline("zero-shot-image-classification", model=str(model_dir))
    per_template = [pipe.encode_texts([t.format(n) for n in ("cat", "dog", "bird")]) for t in result["templates"]]
    expected = F.normalize(F.normalize(per_template[0], dim=-1) + F.normalize(per_template[1], dim=-1), dim=-1)
    torch.testing.assert_close(ensemble_label_embeddings(pipe, ["cat", "dog", "bird"], result["templates"]), expected)
    files = sorted(root.rglob("*.png"))
    scores = pipe.scores(pipe.encode_images([str(f) for f in files]), expected).numpy()
    targets = np.array([0 if f.parent.name == "a_cat" else 1 for f in files])
    predictions = scores.argmax(1)
    assert result["metrics"]["acc1"] == pytest.approx((predictions == targets).mean())
    recalls = [(predictions[targets == c] == c).mean() for c in (0, 1)]  # "bird" has no images: not averaged
    assert result["metrics"]["mean_per_class_recall"] == pytest.approx(np.mean(recalls))
    confusion = np.zeros((3, 3), dtype=int)
    np.add.at(confusion, (targets, predictions), 1)
    assert result["confusion_matrix"] == confusion.tolist()
    assert [r["images"] for r in result["per_class"]] == [3, 2, 0]
    assert stdout.splitlines()[1].split() == ["acc@1", f"{result['metrics']['acc1']:.4f}"]
    assert "n/a (fewer than 5 classes)" in stdout and "confusion matrix" in stdout


def test_a_classifier_is_evaluated_with_its_head(classifier_run, tmp_path, capsys):
    checkpoint, data = classifier_run
    out = tmp_path / "result.json"
    code, _, err = run(["eval", "zero-shot", data, "--model", checkpoint, "-o", out, "-q"], capsys)
    assert code == 0, err
    assert out.with_suffix(".png").stat().st_size > 1000  # the confusion matrix drawn with the plot extra
    result = json.loads(out.read_text())
    assert result["task"] == "classification" and result["templates"] == []
    transformers = pytest.importorskip("transformers")
    reference = transformers.pipeline("image-classification", model=str(checkpoint))
    files = sorted(data.rglob("*.png"))
    top5 = [[r["label"] for r in ranked] for ranked in reference([str(f) for f in files], top_k=5)]
    accuracy = np.mean([top[0] == f.parent.name for top, f in zip(top5, files, strict=True)])
    assert result["metrics"]["acc1"] == pytest.approx(accuracy)
    assert result["metrics"]["acc5"] == pytest.approx(
        np.mean([f.parent.name in t for t, f in zip(top5, files, strict=True)])
    )
    assert result["labels"] == sorted(shapes.COLOURS)
    code, _, err = run(["eval", "zero-shot", data, "--model", checkpoint, "--template", "a {}"], capsys)
    assert code == 1 and "uses its head, not templates" in err


@pytest.mark.parametrize(
    ("tree", "names", "message"),
    [
        ({"a": 1, "b": 1}, "cat\n", "--classnames {names} has 1 names for the 2 class folders of {root} (a, b)"),
        ({"a": 1, "b": 1}, "cat\n# a comment\ncat\n", "--classnames {names} gives two folders the same class name"),
        ({"a": 2}, None, "{root} has 1 class folder (a); zero-shot evaluation needs at least two"),
        ({"a": 0, "b": 0}, None, "{root}: no images in its class folders (a, b)"),
        ({}, None, "{root} has no class folders (expected {root}/<class>/<images>)"),
    ],
)
def test_a_bad_class_tree_is_refused_before_the_model_loads(model_dir, tmp_path, capsys, tree, names, message):
    root = _class_tree(tmp_path / "data", tree)
    root.mkdir(exist_ok=True)
    argv = ["eval", "zero-shot", root, "--model", model_dir]
    if names is not None:
        (tmp_path / "names.txt").write_text(names)
        argv += ["--classnames", tmp_path / "names.txt"]
    code, out, err = run(argv, capsys)
    assert code == 1 and out == "" and "loaded" not in err
    assert len(err.splitlines()) == 1
    assert err.startswith(f"siglip: error: {message.format(root=root, names=tmp_path / 'names.txt')}")


def test_retrieval_recall_equals_a_direct_computation(model_dir, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(images / f"{i}.png")
    rows = [("0.png", "a red square"), ("0.png", "a square of red"), ("1.png", "a dog"), ("2.png", "two cats")]
    rows += [("3.png", "a blue sky"), ("missing.png", "nothing")]
    (tmp_path / "pairs.csv").write_text("image,caption\n" + "".join(f"images/{i},{c}\n" for i, c in rows))
    out = tmp_path / "retrieval.json"
    code, stdout, err = run(["eval", "retrieval", tmp_path / "pairs.csv", "--model", model_dir, "-o", out], capsys)
    assert code == 0, err
    assert "siglip: skipped" in err and "missing.png does not exist" in err
    metrics = json.loads(out.read_text())["metrics"]

    pipe = siglip.pipeline("zero-shot-image-classification", model=str(model_dir))
    image_embeds = pipe.encode_images([str(images / f"{i}.png") for i in range(4)])
    text_embeds = pipe.encode_texts([c for _, c in rows[:5]])
    similarity = (image_embeds @ text_embeds.T).numpy()
    owner = [0, 0, 1, 2, 3]
    for k in (1, 5, 10):
        found = [any(owner[j] == i for j in np.argsort(-similarity[i])[:k]) for i in range(4)]
        assert metrics[f"text_retrieval_recall@{k}"] == pytest.approx(np.mean(found))
        found = [owner[j] in np.argsort(-similarity[:, j])[:k] for j in range(5)]
        assert metrics[f"image_retrieval_recall@{k}"] == pytest.approx(np.mean(found))
    assert stdout.splitlines()[2].startswith("image->text") and stdout.splitlines()[3].startswith("text->image")


def test_eval_reproduces_the_readme_demo_accuracies(tmp_path, capsys):
    """The README's 99.5% / 72.5% come from `siglip eval zero-shot` on the shapes generator's folders, and equal
    what the pipeline computes on the same images (shapes.zero_shot_accuracy, the demo script's metric)."""
    readme = README.read_text(encoding="utf-8")
    folders = shapes.write_demo_eval_folders(tmp_path)
    pipe = siglip.pipeline("zero-shot-image-classification", model="siglip-demo", batch_size=50)
    for name, pairs, seed, shown in (
        ("seen", shapes.TRAIN_PAIRS, shapes.EVAL_SEED, "99.5%"),
        ("held-out", shapes.HELD_OUT_PAIRS, shapes.HELD_OUT_EVAL_SEED, "72.5%"),
    ):
        out = tmp_path / f"{name}.json"
        argv = ["eval", "zero-shot", folders[name], "--model", "siglip-demo", "--template", shapes.DEMO_TEMPLATE]
        code, _, err = run([*argv, "-o", out, "-q", "--batch-size", "50"], capsys)
        assert code == 0, err
        accuracy = json.loads(out.read_text())["metrics"]["acc1"]
        assert accuracy == shapes.zero_shot_accuracy(pipe, pairs, seed, 200)
        assert f"{accuracy:.1%}" == shown and shown in readme
