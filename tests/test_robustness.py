"""Issue 8: bad inputs, bad checkpoints and interrupted jobs, with the whole matrix checkable in this one file.

``MATRIX`` lists every case of the issue and the test that checks it. Most run here; a few are tested in depth
beside their module and are only pointed to (``test_matrix_points_at_tests_that_exist`` keeps those pointers
honest). What is promised is written down in docs/ROBUSTNESS.md. Every input is generated; nothing binary is
committed.
"""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import io
import json
import os
import random
import re
import runpy
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

import siglip
import siglip.files
import siglip.store
from siglip.cli import main
from siglip.files import HUB_PATTERNS, CheckpointError
from siglip.image_io import ImageLoadError, load_image
from siglip.image_processing import Siglip2ImageProcessor, SiglipImageProcessor
from siglip.pipelines import check_labels
from siglip.store import EmbeddingStore, StoreError

from builders import write_checkpoint

TESTS = Path(__file__).resolve().parent

# (case, test that checks it). "file.py::name" points at a test beside the module it concerns.
MATRIX = [
    # images: a clear error from load_image and the pipeline, a skip + report in `siglip classify` / `siglip embed`
    ("truncated JPEG", "test_bad_file_is_a_clear_error"),
    ("zero-byte file", "test_bad_file_is_a_clear_error"),
    ("text file named .jpg", "test_bad_file_is_a_clear_error"),
    ("decompression bomb (PNG declaring 100000x100000)", "test_bad_file_is_a_clear_error"),
    ("0-pixel dimension (file)", "test_bad_file_is_a_clear_error"),
    (
        "the same, file by file, for load_image and the processors",
        "test_image_processing.py::test_bad_files_raise_a_clear_error",
    ),
    ("0-pixel dimension (PIL image, array)", "test_image_processing.py::test_zero_sized_images_are_rejected"),
    ("named pipe, broken link, non-UTF-8 file name", "test_batch_jobs_skip_and_report_every_bad_file"),
    ("every bad file inside a batch job", "test_batch_jobs_skip_and_report_every_bad_file"),
    ("16-bit and float images", "test_16_bit_and_float_images_are_clipped_like_transformers_with_a_warning"),
    (
        "16-bit and float images in the commands: scaled to 8 bits, one-line warnings",
        "test_commands_read_16_bit_and_float_images_as_a_viewer_shows_them",
    ),
    ("a file without read permission", "test_a_file_without_read_permission_is_reported_as_such"),
    (
        "decoding warnings during training: once, one line",
        "test_train.py::test_decoding_warnings_are_one_line_each_and_silenced_by_quiet",
    ),
    (
        "warning and skip lines on a terminal: not over the bar",
        "test_cli.py::test_skip_and_warning_lines_start_on_a_clean_terminal_line",
    ),
    ("stdout closed by its reader (| head)", "test_cli.py::test_a_closed_stdout_pipe_ends_quietly"),
    (
        "eval: a class tree or --classnames that can't work",
        "test_evaluation.py::test_a_bad_class_tree_is_refused_before_the_model_loads",
    ),
    ("animated GIF: the first frame", "test_animated_gif_uses_the_first_frame"),
    ("CMYK JPEG", "test_cmyk_jpeg_is_converted_to_the_right_colours"),
    ("EXIF-rotated JPEG: paths, PIL objects", "test_exif_orientation_paths_pil_objects_and_the_pipeline"),
    (
        "EXIF-rotated JPEG: processors against transformers",
        "test_image_processing.py::test_exif_orientation_is_applied_like_transformers",
    ),
    ("alpha: paths, PIL objects", "test_alpha_paths_pil_objects_and_the_pipeline"),
    ("every PIL mode", "test_image_processing.py::test_every_pil_mode"),
    # text and labels
    ("10,000-character text", "test_ten_thousand_characters"),
    ("non-string labels, empty label list, duplicate labels, template without {}", "test_bad_labels"),
    ("labels through the CLI", "test_cli.py::test_errors_are_one_line_with_nonzero_exit"),
    ("text that is not valid Unicode (lone surrogates)", "test_lone_surrogates_are_a_clear_error"),
    # model inputs
    ("NaN/inf in pixel_values", "test_bad_model_inputs"),
    ("wrong-shaped pixel_values", "test_bad_model_inputs"),
    ("input_ids outside the vocabulary", "test_bad_model_inputs"),
    ("text longer than the position table without truncation", "test_bad_model_inputs"),
    ("spatial_shapes inconsistent with the mask", "test_bad_model_inputs"),
    ("every NaFlex input check", "test_modeling_siglip2.py::test_bad_inputs_raise_clear_errors"),
    # checkpoints: a clear error naming the file and key
    ("missing config.json", "test_bad_checkpoint_names_the_file_and_key"),
    ("truncated model.safetensors", "test_bad_checkpoint_names_the_file_and_key"),
    ("wrong shapes", "test_bad_checkpoint_names_the_file_and_key"),
    ("a config of another family", "test_bad_checkpoint_names_the_file_and_key"),
    ("a SigLIP2 config with SigLIP weights", "test_bad_checkpoint_names_the_file_and_key"),
    ("unreadable tokenizer files", "test_bad_checkpoint_names_the_file_and_key"),
    ("more tokenizer folder damage", "test_tokenization.py::test_broken_folders_give_clear_errors"),
    ("bad preprocessor configs", "test_image_processing.py::test_bad_configs_name_file_and_key"),
    ("a broken checkpoint in the CLI", "test_broken_checkpoint_in_the_cli"),
    (".bin only with weights_only=True; no pickle ever runs", "test_pickles_never_run"),
    ("no remote code (trust_remote_code ignored, modeling_*.py never imported)", "test_no_remote_code"),
    # ONNX export: a one-line error and no folder; the exported model checks its inputs as the PyTorch model
    ("bad export options (dtype, opset, quantization)", "test_export.py::test_bad_options_give_one_line_errors"),
    ("a model that can't be exported; an output folder in use", "test_export.py::test_unsupported_models_and_folders"),
    (
        "an export that fails its check against PyTorch",
        "test_export.py::test_a_failed_check_or_export_leaves_no_folder",
    ),
    ("bad inputs to an ONNX export", "test_export.py::test_backend_input_errors"),
    # properties
    (
        "any unicode text: ids in the vocabulary, within the length limit",
        "test_tokenization.py::test_any_text_tokenizes_within_limits_like_transformers",
    ),
    ("any unicode text at the model length; decoding any ids never crashes", "test_any_text_and_any_ids"),
    ("NaFlex size search for any H, W, patch size, budget", "test_image_processing.py::test_size_search_properties"),
    ("processors accept 1x1 to 8000x8000", "test_image_processing.py::test_any_size_up_to_8000_is_accepted"),
    # interrupted jobs
    ("SIGKILL at 20 random moments, resumed each time", "test_sigkill_at_20_random_moments_then_resume"),
    ("full disk", "test_full_disk_is_a_clear_error_and_keeps_earlier_shards"),
    ("read-only output folder", "test_read_only_output_is_a_clear_error_and_stays_readable"),
    ("output folder that can't be created", "test_output_under_a_file_is_a_clear_error"),
    ("a reader never deletes a writer's files", "test_readers_never_delete_a_writers_files"),
]


def test_matrix_points_at_tests_that_exist():
    tests: dict[str, set[str]] = {}
    for case, where in MATRIX:
        file, _, name = where.rpartition("::")
        file = file or Path(__file__).name
        if file not in tests:
            tree = ast.parse((TESTS / file).read_text(encoding="utf-8"))
            tests[file] = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert name in tests[file], f"{case}: {where} does not exist"


# ------------------------------------------------------------------------------------------------------------
# Fixtures and generated files
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("robustness")
    return {family: write_checkpoint(root / family, family, seed=8) for family in ("siglip", "siglip2")}


@pytest.fixture(scope="module")
def pipe(folders):
    return siglip.pipeline("zero-shot-image-classification", model=str(folders["siglip"]))


@pytest.fixture(scope="module")
def hf_pipe(folders):
    transformers = pytest.importorskip("transformers")
    return transformers.pipeline("zero-shot-image-classification", model=str(folders["siglip"]))


def photo(height: int = 24, width: int = 40, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, rgb16: np.ndarray | None = None) -> bytes:
    """A PNG written by hand: only a header (and an empty image stream) unless 16-bit RGB pixels are given."""
    depth, rows = 8, b""
    if rgb16 is not None:
        depth = 16
        rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb16)  # filter byte 0, then the row
    header = struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


# name -> (content, what the error must say)
BAD_FILES = {
    "truncated.jpg": (lambda: jpeg_bytes(photo(64, 64))[:400], "truncated or corrupt image data"),
    "empty.jpg": (lambda: b"", r"empty file \(0 bytes\)"),
    "notes.jpg": (lambda: b"shopping list: milk, eggs\n" * 3, "not an image"),
    "bomb.png": (lambda: png_bytes(100_000, 100_000), "refused as a possible decompression bomb"),
    "no_rows.png": (lambda: png_bytes(10, 0), r"zero dimension \(10x0\)"),
}


def write_bad_files(folder: Path) -> dict[str, str]:
    """Every bad file of the issue plus a named pipe, a broken link and a non-UTF-8 name: {path: problem}."""
    expected = {}
    for name, (content, problem) in BAD_FILES.items():
        (folder / name).write_bytes(content())
        expected[str(folder / name)] = problem
    os.mkfifo(folder / "pipe.jpg")  # reading it would block forever: it must be refused, not opened
    expected[str(folder / "pipe.jpg")] = "not a regular file"
    (folder / "dangling.png").symlink_to(folder / "deleted.png")
    expected[str(folder / "dangling.png")] = r"cannot read the file \(No such file or directory\)"
    latin1 = os.fsencode(folder) + b"/caf\xe9.png"  # a Latin-1 name from an old archive
    with open(latin1, "wb") as f:
        photo().save(f, "PNG")
    expected[os.fsdecode(latin1)] = r"caf\\udce9.png: the file name is not valid UTF-8"
    return expected


def animated_gif(path: Path, colours=("red", "lime", "blue")) -> None:
    frames = [Image.new("RGB", (16, 12), colour) for colour in colours]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def write_odd_files(folder: Path) -> list[Path]:
    """Readable files whose handling is a documented choice rather than an error."""
    grey16 = np.linspace(0, 65535, 20 * 30).reshape(20, 30).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "grey16.png")
    (folder / "rgb16.png").write_bytes(png_bytes(5, 4, np.arange(60).reshape(4, 5, 3) * 1000))
    Image.fromarray(np.linspace(0, 1, 20 * 30, dtype=np.float32).reshape(20, 30)).save(folder / "float.tif")
    animated_gif(folder / "animated.gif")
    photo(seed=1).convert("CMYK").save(folder / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    photo(seed=2).save(folder / "rotated.jpg", exif=exif)
    rgba = photo(seed=3).convert("RGBA")
    rgba.putalpha(0)
    rgba.save(folder / "clear.png")
    photo(seed=4).save(folder / "good.png")
    return sorted(folder / name for name in os.listdir(folder))


# ------------------------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_file_is_a_clear_error(name, tmp_path, pipe):
    """load_image's one-line error reaches the caller of the pipeline unchanged (test_image_processing.py checks
    it file by file for load_image and the processors). The Python API raises: its results stay aligned with
    its inputs. The CLI skips and reports instead (next test)."""
    content, problem = BAD_FILES[name]
    good, bad = tmp_path / "good.png", tmp_path / name
    photo().save(good)
    bad.write_bytes(content())
    with pytest.raises(ImageLoadError, match=problem) as info:
        pipe([str(good), str(bad)], candidate_labels=["a cat", "a dog"])
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_batch_jobs_skip_and_report_every_bad_file(folders, tmp_path, capsys):
    folder = (tmp_path / "photos").resolve()
    folder.mkdir()
    readable = [str(p) for p in write_odd_files(folder)]
    expected = write_bad_files(folder)
    common = ["--model", folders["siglip"], "--num-workers", "0", "--batch-size", "4"]

    out = tmp_path / "store"
    with warnings.catch_warnings(record=True) as caught:  # the commands scale 16-bit and float images: no warning
        warnings.simplefilter("always")
        code = main(["embed", str(folder), "--output", str(out), "--shard-size", "3", *map(str, common)])
    assert not [w for w in caught if str(folder) in str(w.message)]
    err = capsys.readouterr().err
    assert code == 0, err
    lines = (out / "errors.jsonl").read_text(encoding="utf-8").splitlines()
    errors = {e["path"]: e["error"] for e in map(json.loads, lines)}
    assert sorted(errors) == sorted(expected)
    for path, problem in expected.items():
        assert re.search(problem, errors[path]), (path, errors[path])
        assert f"siglip: skipped {errors[path]}" in err
    rows, matrix = EmbeddingStore(out).load()
    assert [r["path"] for r in rows] == [Path(p).relative_to(folder).as_posix() for p in readable]
    assert np.isfinite(matrix).all() and json.loads((out / "manifest.json").read_text())["rows"] == len(readable)

    code = main(["classify", str(folder), "--labels", "a cat", "a dog", "--format", "json", *map(str, common)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert [r["image"] for r in json.loads(captured.out)] == readable
    for message in errors.values():
        assert f"siglip: skipped {message}" in captured.err


def test_animated_gif_uses_the_first_frame(tmp_path, pipe):
    path = tmp_path / "animated.gif"
    animated_gif(path)
    assert load_image(path).getpixel((8, 6)) == (255, 0, 0)
    with Image.open(path) as gif:
        assert gif.n_frames == 3
        gif.seek(1)  # an opened image is used as given: the frame it is on
        values = SiglipImageProcessor()(gif, return_tensors="pt")["pixel_values"][0]
        assert torch.equal(values[:, 5, 5], torch.tensor([-1.0, 1.0, -1.0]))  # lime, normalised to [-1, 1]
    red = Image.new("RGB", (16, 12), "red")
    torch.testing.assert_close(pipe.encode_images(str(path)), pipe.encode_images(red), rtol=0, atol=0)


def test_cmyk_jpeg_is_converted_to_the_right_colours(tmp_path):
    source = photo(64, 64, seed=5)
    path = tmp_path / "cmyk.jpg"
    source.convert("CMYK").save(path, quality=95)
    with Image.open(path) as opened:
        assert opened.mode == "CMYK"
    loaded = np.asarray(load_image(path), dtype=np.float64)
    assert loaded.shape == (64, 64, 3)
    assert np.abs(loaded - np.asarray(source)).mean() < 12  # JPEG noise; inverted colours would be ~128 off


def test_exif_orientation_paths_pil_objects_and_the_pipeline(tmp_path, pipe, hf_pipe):
    image = photo(20, 44, seed=6)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    assert load_image(path).size == (20, 44)  # paths: upright, as transformers' load_image
    with Image.open(path) as opened:
        assert opened.size == (44, 20)
        # processors use a PIL image as given, like transformers' processors...
        as_given = SiglipImageProcessor()(opened, return_tensors="pt")["pixel_values"]
        upright = SiglipImageProcessor()(str(path), return_tensors="pt")["pixel_values"]
        assert not torch.equal(as_given, upright)
        # ...but the pipeline loads PIL images with load_image, like transformers' pipeline: upright
        torch.testing.assert_close(pipe.encode_images(opened), pipe.encode_images(str(path)), rtol=0, atol=0)
        labels = ["a cat", "a dog", "a tree"]
        ours, theirs = pipe(opened, candidate_labels=labels), hf_pipe(opened, candidate_labels=labels)
    assert [r["label"] for r in ours] == [r["label"] for r in theirs]
    np.testing.assert_allclose([r["score"] for r in ours], [r["score"] for r in theirs], rtol=1e-5, atol=1e-7)


def test_alpha_paths_pil_objects_and_the_pipeline(tmp_path, pipe, hf_pipe):
    rgba = photo(30, 30, seed=7).convert("RGBA")
    rgba.putalpha(0)  # fully transparent over coloured pixels
    path = tmp_path / "clear.png"
    rgba.save(path)
    # paths: alpha dropped, the colours under it kept (transformers' load_image)
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(rgba.convert("RGB")))
    # processors: a PIL image's alpha is composited onto white (transformers 5's convert_to_rgb)
    white = SiglipImageProcessor()(rgba, return_tensors="pt")["pixel_values"]
    assert torch.all(white == 1.0)
    # pipeline: PIL images go through load_image, as in transformers' pipeline
    ours, theirs = pipe(rgba, candidate_labels=["a", "b"]), hf_pipe(rgba, candidate_labels=["a", "b"])
    np.testing.assert_allclose([r["score"] for r in ours], [r["score"] for r in theirs], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(pipe.encode_images(rgba), pipe.encode_images(str(path)), rtol=0, atol=0)


def test_16_bit_and_float_images_are_clipped_like_transformers_with_a_warning(tmp_path):
    hf_load_image = pytest.importorskip("transformers.image_utils").load_image
    grey16 = np.linspace(0, 65535, 20 * 30).reshape(20, 30).astype(np.uint16)
    unit_floats = np.linspace(0, 1, 20 * 30, dtype=np.float32).reshape(20, 30)
    for name, array in (("grey16.png", grey16), ("float.tif", unit_floats)):
        path = tmp_path / name
        Image.fromarray(array).save(path)
        with pytest.warns(UserWarning, match=f"{re.escape(str(path))}: mode .* with values in .* clipped"):
            loaded = np.asarray(load_image(path))
        assert np.array_equal(loaded, np.asarray(hf_load_image(str(path))))  # the same pixels as transformers
        assert np.array_equal(loaded[..., 0], np.clip(array, 0, 255).astype(np.uint8))  # clipped, not rescaled
        with pytest.warns(UserWarning, match="image 0: mode .* clipped"):
            SiglipImageProcessor()(Image.fromarray(array))
    # 16-bit RGB PNGs are reduced to 8 bits by Pillow when read (scaled, not clipped): no warning
    rgb16 = np.arange(60).reshape(4, 5, 3) * 1000
    path = tmp_path / "rgb16.png"
    path.write_bytes(png_bytes(5, 4, rgb16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(np.asarray(load_image(path)), rgb16 >> 8)


def test_commands_read_16_bit_and_float_images_as_a_viewer_shows_them(folders, pipe, tmp_path, capsys):
    """`siglip embed` / `classify` scale 16-bit (/ 257) and [0, 1] float (x 255) images to 8 bits; an image with
    no standard scale is stretched, with one line of ours on stderr (none with -q), never a Python warning."""
    folder = tmp_path / "photos"
    folder.mkdir()
    grey16 = np.linspace(0, 65535, 20 * 30).reshape(20, 30).astype(np.uint16)
    unit = np.linspace(0, 1, 20 * 30, dtype=np.float32).reshape(20, 30)
    wide = (np.arange(20 * 30).reshape(20, 30) * 100_000).astype(np.int32)
    for name, array in (("grey16.png", grey16), ("float.tif", unit), ("wide.tif", wide)):
        Image.fromarray(array).save(folder / name)
    as_shown = {
        "grey16.png": np.rint(grey16 / 257),
        "float.tif": np.rint(unit.astype(np.float64) * 255),
        "wide.tif": np.rint(wide / (wide.max() / 255)),
    }
    common = ["--model", str(folders["siglip"]), "--num-workers", "0"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["embed", str(folder), "--output", str(tmp_path / "store"), *common])
    err = capsys.readouterr().err
    assert code == 0 and not [w for w in caught if str(folder) in str(w.message)]
    ours = [line for line in err.splitlines() if "wide.tif" in line]
    assert ours == [
        f"siglip: warning: {folder}/wide.tif: mode I with values in [0, 5.99e+07] has no standard 8-bit scale; "
        "stretched from its minimum (black) to its maximum (white)"
    ]
    assert "UserWarning" not in err and ".py:" not in err and "grey16" not in err
    rows, matrix = EmbeddingStore(tmp_path / "store").load()
    assert [r["path"] for r in rows] == sorted(as_shown)
    expected = pipe.encode_images([Image.fromarray(as_shown[r["path"]].astype(np.uint8)) for r in rows])
    np.testing.assert_allclose(matrix, expected.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.warns(UserWarning, match="clipped"):  # the Python API keeps transformers' clipping
        clipped = pipe.encode_images(str(folder / "grey16.png"))[0].numpy()
    assert not np.allclose(expected[1].numpy(), clipped, atol=1e-3)
    code = main(["classify", str(folder), "--labels", "a", "b", "-q", *common])
    assert code == 0 and capsys.readouterr().err == ""  # -q: no warning line
    code = main(["search", str(tmp_path / "store"), "--image", str(folder / "grey16.png"), "--format", "json", "-q"])
    scores = {Path(hit["path"]).name: hit["score"] for hit in json.loads(capsys.readouterr().out)}
    assert code == 0 and scores["grey16.png"] > 0.9999  # the query image is read as it was embedded


def test_a_file_without_read_permission_is_reported_as_such(folders, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "photos" / "locked.png"
    locked.parent.mkdir()
    photo().save(locked)
    photo(seed=3).save(tmp_path / "photos" / "fine.png")
    if os.geteuid() == 0:  # root reads anything: refuse the open() the way the kernel does for others
        import siglip.image_io

        def no_permission(file, *args, **kwargs):
            if Path(file) == locked:
                raise PermissionError(13, "Permission denied", str(file))
            return open(file, *args, **kwargs)

        monkeypatch.setattr(siglip.image_io, "open", no_permission, raising=False)
    else:
        locked.chmod(0)
    with pytest.raises(ImageLoadError, match=r"locked.png: cannot read the file \(Permission denied\)$"):
        load_image(locked)
    code = main(["classify", str(locked.parent), "--labels", "a", "b", "--model", str(folders["siglip"]), "-q"])
    err = capsys.readouterr().err
    assert code == 0 and f"siglip: skipped {locked}: cannot read the file (Permission denied)" in err
    assert "truncated" not in err


# ------------------------------------------------------------------------------------------------------------
# Text and labels
# ------------------------------------------------------------------------------------------------------------


def test_ten_thousand_characters(folders, pipe):
    text = ("a very long caption about mountains and lakes, " * 250)[:10_000]
    tokenizer = siglip.AutoTokenizer.from_pretrained(folders["siglip"])
    ids = tokenizer(text, padding="max_length", truncation=True).input_ids
    assert len(ids) == 64 and ids[-1] == tokenizer.eos_token_id and max(ids) < len(tokenizer)
    scores = pipe(photo(), candidate_labels=[text, "a cat"])
    assert sorted(r["label"] for r in scores) == sorted([text, "a cat"]) and all(0 < r["score"] < 1 for r in scores)
    untruncated = tokenizer(text, return_tensors="pt").input_ids
    assert untruncated.shape[1] > 64
    with pytest.raises(ValueError, match=r"input_ids has \d+ tokens but the text model's position table holds 64"):
        pipe.model.get_text_features(input_ids=untruncated)


@pytest.mark.parametrize(
    "labels, template, message",
    [
        (["cat", 3, None], "a photo of {}", r"must all be strings; got \[3, None\]"),
        ([], "a photo of {}", "candidate_labels is empty"),
        (["cat", "dog", "cat"], "a photo of {}", r"duplicates: \['cat'\]"),
        (["cat"], "a photo", r"must contain '\{\}' where the label goes, got 'a photo'"),
        (["cat"], None, "must contain"),
    ],
)
def test_bad_labels(labels, template, message):
    with pytest.raises(ValueError, match=message):
        check_labels(labels, template)


def test_lone_surrogates_are_a_clear_error(folders):
    for family in folders:
        tokenizer = siglip.AutoTokenizer.from_pretrained(folders[family])
        with pytest.raises(ValueError, match=r"text 1 is not valid Unicode: lone surrogate '\\udce9' at position 3"):
            tokenizer(["fine", "caf\udce9"])


# ------------------------------------------------------------------------------------------------------------
# Model inputs
# ------------------------------------------------------------------------------------------------------------


def _model_inputs(folders, family, change):
    model = siglip.AutoModel.from_pretrained(folders[family])
    if change.startswith("ids"):
        ids = torch.randint(0, 1000, (2, 64))
        if change == "ids_too_long":
            ids = torch.zeros(1, 65, dtype=torch.long)
        else:
            ids[1, 3] = 1000 if change == "ids_too_big" else -2
        return model.get_text_features, {"input_ids": ids}
    if family == "siglip":
        pixels = torch.randn(2, 3, 32, 32)
        if change == "nan":
            pixels[1, 0, 4, 4] = float("nan")
        elif change == "inf":
            pixels[0, 2, 0, 0] = float("-inf")
        elif change == "3d":
            pixels = pixels[0]
        elif change == "channels":
            pixels = torch.randn(2, 4, 32, 32)
        elif change == "resolution":
            pixels = torch.randn(2, 3, 48, 32)
        return model.get_image_features, {"pixel_values": pixels}
    inputs = dict(Siglip2ImageProcessor()([photo(40, 60), photo(64, 64)], return_tensors="pt", max_num_patches=12))
    if change == "nan":
        inputs["pixel_values"][0, 2, 7] = float("nan")
    elif change == "4d":
        inputs["pixel_values"] = inputs["pixel_values"].reshape(2, 12, 3, 256)
    elif change == "mask":
        inputs["spatial_shapes"][1] = torch.tensor([2, 2])
    return model.get_image_features, inputs


@pytest.mark.parametrize(
    "family, change, message",
    [
        ("siglip", "nan", "pixel_values contains NaN or infinite values"),
        ("siglip", "inf", "pixel_values contains NaN or infinite values"),
        ("siglip", "3d", r"pixel_values must have shape \(batch, channels, height, width\), got \(3, 32, 32\)"),
        ("siglip", "channels", "pixel_values has 4 channels, the model expects 3"),
        ("siglip", "resolution", "pixel_values of 48x32 give 24 patches but the position table has 16"),
        ("siglip2", "nan", "pixel_values contains NaN or infinite values"),
        ("siglip2", "4d", r"pixel_values must have shape \(batch, patches, channels\*patch\*patch\)"),
        ("siglip2", "mask", r"spatial_shapes\[1\] = \(2, 2\) gives 4 patches but pixel_attention_mask\[1\] has 9"),
        ("siglip", "ids_too_big", r"input_ids contains ids outside the vocabulary \[0, 1000\): \[1000\]"),
        ("siglip2", "ids_negative", r"outside the vocabulary \[0, 1000\): \[-2\]"),
        ("siglip", "ids_too_long", "input_ids has 65 tokens but the text model's position table holds 64"),
    ],
)
def test_bad_model_inputs(folders, family, change, message):
    forward, inputs = _model_inputs(folders, family, change)
    with pytest.raises(ValueError, match=message):
        forward(**inputs)


# ------------------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------------------


def _rewrite(path: Path, change) -> None:
    state = load_file(path)
    change(state)
    save_file(state, path, metadata={"format": "pt"})


def _edit_json(path: Path, **values) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# case -> (family, damage(folder, folders), what the error must say: the file and the key)
CHECKPOINT_DAMAGE = {
    "missing config.json": ("siglip", lambda f, _: (f / "config.json").unlink(), r"/ckpt has no config\.json"),
    "truncated model.safetensors": (
        "siglip",
        lambda f, _: _truncate(f / "model.safetensors"),
        r"/ckpt/model\.safetensors is truncated",
    ),
    "wrong shapes": (
        "siglip",
        lambda f, _: _rewrite(f / "model.safetensors", lambda s: s.update({"text_model.head.bias": torch.zeros(7)})),
        r"/ckpt \(model\.safetensors\) do not fit SiglipModel(.|\n)*wrong shape \(1\): text_model\.head\.bias: "
        r"checkpoint \[7\] vs model \[32\]",
    ),
    "config of another family": (
        "siglip",
        lambda f, _: _edit_json(f / "config.json", model_type="clip"),
        "model_type='clip'",
    ),
    "SigLIP2 config with SigLIP weights": (
        "siglip2",
        lambda f, all_: shutil.copy(all_["siglip"] / "model.safetensors", f / "model.safetensors"),
        r"\(model\.safetensors\) do not fit Siglip2Model(.|\n)*vision_model\.embeddings\.patch_embedding\.weight: "
        r"checkpoint \[32, 3, 8, 8\] vs model \[32, 768\]",
    ),
    "truncated spiece.model": (
        "siglip",
        lambda f, _: _truncate(f / "spiece.model"),
        r"/ckpt/spiece\.model is not a readable SentencePiece",
    ),
    "truncated tokenizer.json": (
        "siglip2",
        lambda f, _: _truncate(f / "tokenizer.json"),
        r"/ckpt/tokenizer\.json \(tokenizer\.json\) could",
    ),
    "bad tokenizer_config.json value": (
        "siglip",
        lambda f, _: _edit_json(f / "tokenizer_config.json", model_max_length="sixty-four"),
        r"/ckpt/tokenizer_config\.json: 'model_max_length' must be a number, got 'sixty-four'",
    ),
    "binary tokenizer_config.json": (
        "siglip2",
        lambda f, _: (f / "tokenizer_config.json").write_bytes(b"\x89PNG\x00\xff"),
        r"/ckpt/tokenizer_config\.json \(tokenizer config\) could not be read as JSON",
    ),
    "truncated preprocessor_config.json": (
        "siglip",
        lambda f, _: _truncate(f / "preprocessor_config.json"),
        r"/ckpt/preprocessor_config\.json is not valid JSON",
    ),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_DAMAGE))
def test_bad_checkpoint_names_the_file_and_key(case, folders, tmp_path):
    family, damage, message = CHECKPOINT_DAMAGE[case]
    folder = tmp_path / "ckpt"
    shutil.copytree(folders[family], folder)
    damage(folder, folders)
    with pytest.raises(ValueError, match=message):  # CheckpointError, or AutoModel's ValueError for model_type
        siglip.pipeline("zero-shot-image-classification", model=str(folder))


def test_broken_checkpoint_in_the_cli(folders, tmp_path, capsys):
    folder = tmp_path / "ckpt"
    shutil.copytree(folders["siglip"], folder)
    _truncate(folder / "model.safetensors", 0.9)
    photo().save(tmp_path / "x.png")
    code = main(["classify", str(tmp_path / "x.png"), "--labels", "a", "--model", str(folder), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"siglip: error: {folder}/model.safetensors is truncated: its header describes" in err


class _Payload:
    """Unpickling this runs a shell command that creates a file: the side effect a malicious pickle would have."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickles_never_run(folders, tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(folders["siglip"] / "config.json", folder)
    torch.save({"text_model.head.bias": _Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin could not be loaded with weights_only=True"):
        siglip.SiglipModel.from_pretrained(folder)
    assert not marker.exists()

    store = EmbeddingStore(tmp_path / "store")
    store.prepare({"kind": "image", "model": "m", "dim": 1, "normalized": True})
    np.save(store.shard_dir / "000000.npy", np.array([[_Payload(marker)]], dtype=object), allow_pickle=True)
    (store.shard_dir / "000000.jsonl").write_text(json.dumps({"path": "x"}) + "\n")
    with pytest.raises(StoreError, match="shard 000000.npy in .* is unreadable"):
        store.load()
    assert not marker.exists()

    torch.load(folder / "pytorch_model.bin", weights_only=False)  # the control: unpickling does run it
    assert marker.exists()


def test_no_remote_code(folders, tmp_path):
    marker = tmp_path / "imported"
    folder = tmp_path / "remote"
    shutil.copytree(folders["siglip"], folder)
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass EvilModel: pass\n")
    auto_map = {"AutoModel": "modeling_evil.EvilModel", "AutoConfig": "modeling_evil.EvilModel"}
    for name in ("config.json", "tokenizer_config.json", "preprocessor_config.json"):
        _edit_json(folder / name, auto_map=auto_map)
    loaders = [
        siglip.AutoConfig.from_pretrained,
        siglip.AutoModel.from_pretrained,
        siglip.SiglipModel.from_pretrained,
        siglip.AutoTokenizer.from_pretrained,
        siglip.AutoImageProcessor.from_pretrained,
        siglip.AutoProcessor.from_pretrained,
        lambda path, **kwargs: siglip.pipeline("zero-shot-image-classification", model=path, **kwargs),
    ]
    for load in loaders:
        assert load(str(folder), trust_remote_code=True) is not None  # accepted, and ignored
    assert not marker.exists() and "modeling_evil" not in sys.modules
    assert not any(fnmatch.fnmatch("modeling_evil.py", pattern) for pattern in HUB_PATTERNS)  # never downloaded
    runpy.run_path(str(folder / "modeling_evil.py"))  # the control: running the file does leave the marker
    assert marker.exists()


# ------------------------------------------------------------------------------------------------------------
# Properties (the ones issue 8 adds to those of test_tokenization.py and test_image_processing.py)
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizers(folders):
    return [siglip.AutoTokenizer.from_pretrained(folders[family]) for family in folders]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(text=st.text(max_size=300), ids=st.lists(st.integers(0, 699), max_size=80))
def test_any_text_and_any_ids(tokenizers, text, ids):
    for tokenizer in tokenizers:
        rows = tokenizer([text, text * 3], padding="max_length", truncation=True).input_ids  # what the pipeline does
        assert [len(row) for row in rows] == [64, 64]
        assert all(0 <= i < len(tokenizer) for row in rows for i in row)
        assert tokenizer.eos_token_id in rows[0]
        assert isinstance(tokenizer.decode(rows[0], skip_special_tokens=True), str)
        assert isinstance(tokenizer.decode(ids), str) and len(tokenizer) == 700
        with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 700\): \[700\]"):
            tokenizer.decode([*ids, 700])


# ------------------------------------------------------------------------------------------------------------
# Interrupted jobs
# ------------------------------------------------------------------------------------------------------------


def make_images(folder: Path, n: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        photo(8 + i % 5, 9 + i % 7, seed=i).save(folder / f"img{i:04d}.png")


def embed(folder: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [
        "embed",
        str(folder),
        "--output",
        str(out),
        "--model",
        str(model),
        "--num-workers",
        "0",
        "--batch-size",
        "2",
        "--shard-size",
        "2",
        "--quiet",
        *extra,
    ]


def shard_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir())}


def assert_consistent(out: Path) -> list[dict]:
    """The store reads back, and no key is in two shards (not only in load(), which would hide it)."""
    store = EmbeddingStore(out)
    keys = [row["path"] for _, npy, meta in store.shards() for row in store._read_shard(npy, meta)[0]]
    assert len(keys) == len(set(keys)), "a row is stored twice"
    rows, matrix = store.load()
    assert len(rows) == len(keys) == matrix.shape[0] and np.isfinite(matrix).all()
    return rows


def assert_same_store(out: Path, reference: Path) -> None:
    rows, matrix = EmbeddingStore(out).load()
    ref_rows, ref_matrix = EmbeddingStore(reference).load()
    assert rows == ref_rows  # same rows (path, size, mtime, width, height), same order rule (sorted by path)
    np.testing.assert_allclose(matrix, ref_matrix, rtol=1e-5, atol=1e-6)  # fp32 noise of other batchings


def _complete_shards(out: Path) -> int:
    return len(list((out / "shards").glob("*.parquet"))) if (out / "shards").is_dir() else 0


def test_sigkill_at_20_random_moments_then_resume(folders, tmp_path, capsys):
    images, model = tmp_path / "imgs", folders["siglip"]
    make_images(images, 150)
    reference = tmp_path / "reference"
    started = time.monotonic()
    assert main(embed(images, reference, model)) == 0
    shard_seconds = (time.monotonic() - started) / _complete_shards(reference)  # one shard, start-up excluded
    capsys.readouterr()

    out, rng = tmp_path / "killed", random.Random(20)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    startup, progress = float("inf"), []
    for attempt in range(20):
        # A moment relative to this machine's speed: a random point of the start-up (imports, model load, reading
        # the store), or a random point of the shard after the k-th new one. The first run measures the start-up.
        shards_before = _complete_shards(out)
        new_shards = rng.choice([0, 1, 1, 2]) if attempt else 1
        fraction = rng.random()
        with open(tmp_path / f"run{attempt:02d}.log", "wb") as log:
            spawned = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "siglip", *embed(images, out, model)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            try:
                while _complete_shards(out) < shards_before + new_shards:
                    assert proc.poll() is None, f"run {attempt} ended before its kill; see run{attempt:02d}.log"
                    assert time.monotonic() - spawned < 90, f"run {attempt} wrote no shard in 90 s"
                    time.sleep(0.005)
                if new_shards:
                    startup = min(startup, time.monotonic() - spawned)
                time.sleep(fraction * (shard_seconds if new_shards else 0.9 * startup))
                assert proc.poll() is None, f"run {attempt} ended before its kill: use more images"
                proc.send_signal(signal.SIGKILL)
                assert proc.wait(timeout=30) == -signal.SIGKILL
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=30)
        if EmbeddingStore(out).exists():
            progress.append(len(assert_consistent(out)))  # after every kill the store reads back, no duplicates
    assert len(progress) == 20 and sum(b > a for a, b in zip(progress, progress[1:], strict=False)) >= 8, progress
    assert progress[-1] < 150, "the kills must leave work for the final run"

    assert main(embed(images, out, model)) == 0
    assert len(assert_consistent(out)) == 150
    assert_same_store(out, reference)


@contextlib.contextmanager
def tiny_disk(folder: Path, size: str):
    """A real tmpfs of ``size`` at ``folder`` (root only); skips where mounting is not allowed."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root and mount(8) on Linux")
    folder.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True, timeout=30
    )
    if mount.returncode:
        pytest.skip(f"can't mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system of ``folder``, then free ``leave`` bytes."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def dev_full_after(monkeypatch, shard_writes: int) -> None:
    """After ``shard_writes`` shard files, every shard write goes to /dev/full: the kernel answers ENOSPC."""
    import builtins

    count = [0]

    def open_(file, mode="r", *args, **kwargs):
        if "w" in mode and Path(file).parent.name == "shards":
            count[0] += 1
            if count[0] > shard_writes:
                return builtins.open("/dev/full", mode, *args, **kwargs)
        return builtins.open(file, mode, *args, **kwargs)

    monkeypatch.setattr(siglip.files, "open", open_, raising=False)  # where the store's atomic writes open files


@pytest.mark.parametrize("disk", ["dev-full", "tmpfs"])
def test_full_disk_is_a_clear_error_and_keeps_earlier_shards(disk, folders, tmp_path, capsys, monkeypatch):
    images, model = tmp_path / "imgs", folders["siglip"]
    make_images(images, 6)
    context = tiny_disk(tmp_path / "disk", "256k") if disk == "tmpfs" else contextlib.nullcontext(tmp_path)
    with context as root:
        out = root / "store"
        assert main(embed(images, out, model)) == 0
        before, files = EmbeddingStore(out).load(), shard_files(out)
        make_images(images, 30, start=6)
        if disk == "tmpfs":
            filler = fill(root, leave=16 * 1024)
        else:
            dev_full_after(monkeypatch, shard_writes=2)
        capsys.readouterr()
        assert main(embed(images, out, model)) == 1
        err = capsys.readouterr().err
        assert re.search(r"siglip: error: could not write .*/store/shards/\d{6}\.\w+: No space left on device", err)
        assert all(shard_files(out)[name] == data for name, data in files.items())  # byte for byte
        rows = assert_consistent(out)
        assert 6 <= len(rows) < 36 and rows[: len(before[0])] == before[0]  # nothing lost, the new rows kept
        assert not [p for p in out.rglob("*") if ".tmp-" in p.name]  # no half-written file left behind
        if disk == "tmpfs":
            filler.unlink()
        else:
            monkeypatch.undo()
        assert main(embed(images, out, model)) == 0
        assert len(assert_consistent(out)) == 36
        reference = tmp_path / "reference"
        assert main(embed(images, reference, model)) == 0
        assert_same_store(out, reference)


@contextlib.contextmanager
def read_only(folder: Path):
    """Make ``folder`` read-only: chmod for ordinary users; for root (whom chmod does not stop) a read-only bind
    mount, the only thing that does; skips where neither is possible."""
    if os.geteuid() != 0:
        paths = [folder, *folder.rglob("*")]
        for path in paths:
            path.chmod(path.stat().st_mode & ~0o222)
        try:
            yield
        finally:
            for path in paths:
                path.chmod(path.stat().st_mode | 0o200)
        return
    if not shutil.which("mount"):
        pytest.skip("root, and no mount(8) for a read-only bind mount")
    bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True, timeout=30)
    if bind.returncode:
        pytest.skip(f"root, and can't bind-mount read-only here: {bind.stderr.strip()}")
    try:
        remount = ["mount", "-o", "remount,bind,ro", str(folder)]
        assert subprocess.run(remount, capture_output=True, timeout=30).returncode == 0
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


def test_read_only_output_is_a_clear_error_and_stays_readable(folders, tmp_path, capsys):
    images, model, out = tmp_path / "imgs", folders["siglip"], tmp_path / "store"
    make_images(images, 6)
    assert main(embed(images, out, model)) == 0
    before = EmbeddingStore(out).load()
    # what a killed job leaves: an embeddings file without metadata, and a temporary file
    shutil.copy(out / "shards" / "000000.npy", out / "shards" / "000099.npy")
    (out / "shards" / ".000100.npy.tmp-4242").write_bytes(b"half")
    files = shard_files(out)
    make_images(images, 4, start=6)
    capsys.readouterr()
    with read_only(out):
        assert main(embed(images, out, model)) == 1
        assert f"siglip: error: {out} is not writable" in capsys.readouterr().err
        rows, matrix = EmbeddingStore(out).load()  # reading needs no write access, leftovers and all
        assert rows == before[0] and np.array_equal(matrix, before[1])
        assert main(["search", str(out), "a red square", "--paths-only", "--quiet", "--model", str(model)]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 6
    assert shard_files(out) == files
    assert main(embed(images, out, model)) == 0  # writable again: the job resumes and clears the leftovers
    assert len(assert_consistent(out)) == 10
    assert not (out / "shards" / "000099.npy").exists() and not (out / "shards" / ".000100.npy.tmp-4242").exists()


def test_output_under_a_file_is_a_clear_error(folders, tmp_path, capsys):
    make_images(tmp_path / "imgs", 2)
    (tmp_path / "file").write_text("not a folder")
    assert main(embed(tmp_path / "imgs", tmp_path / "file" / "out", folders["siglip"])) == 1
    assert f"siglip: error: could not create {tmp_path}/file/out/shards: Not a directory" in capsys.readouterr().err


def test_readers_never_delete_a_writers_files(tmp_path):
    store = EmbeddingStore(tmp_path / "store")
    manifest = {"kind": "text", "model": "m", "dim": 2, "normalized": True}
    store.prepare(manifest)
    store.append([{"text": "a"}, {"text": "b"}], np.eye(2, dtype=np.float32))
    # a writer between its two renames: its embeddings are in place, its metadata still a temporary file
    in_flight = [store.shard_dir / "000001.npy", store.shard_dir / ".000001.parquet.tmp-99999"]
    for path in in_flight:
        path.write_bytes(b"in flight")
    rows, _ = store.load()
    assert [r["text"] for r in rows] == ["a", "b"]
    assert all(path.exists() for path in in_flight)
    store.prepare(manifest)  # a new job: whatever was half-written belongs to a job that died
    assert not any(path.exists() for path in in_flight)
    assert [r["text"] for r in store.load()[0]] == ["a", "b"]


def test_one_line_reports_of_errors_without_a_message():
    """Skipped items are reported by the first line of their error, or its type when the message is empty."""
    from siglip.data import first_line

    assert first_line(OSError()) == "OSError"
    assert first_line(ValueError("  \n")) == "ValueError"
    assert first_line(ValueError("cannot identify image file 'x.jpg'\ndetails")) == "cannot identify image file 'x.jpg'"
