"""Preprocessing speed: siglip's image processors against transformers' PIL processors on JPEG files.

Writes ``--n`` generated 640x480 JPEGs (gradient, noise and drawn shapes) to a temporary folder, then times each
processor on the list of paths (decode, EXIF, resize, rescale, normalise, stack) in the same run. Runs are
interleaved and the best of ``--repeats`` is kept, which is the fairest figure on a shared machine. Outputs must be
bitwise identical to transformers'; the script exits 1 if they are not.

    python benchmarks/bench_preprocess.py [--n 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image, ImageDraw

import siglip.image_processing as ip


def write_section(path: Path, name: str, body: str) -> None:
    """Replace the section of ``path`` (benchmarks/RESULTS.md) that script ``name`` wrote last, between its
    markers, or append one: each benchmark script owns its section and leaves the others as they are."""
    start, end = f"<!-- {name}: start -->", f"<!-- {name}: end -->"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    block = f"{start}\n{body.strip()}\n{end}\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) + 1 :]
    else:
        text = text.rstrip() + "\n\n" + block if text.strip() else block
    path.write_text(text, encoding="utf-8")


def write_jpegs(folder: Path, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:480, 0:640].astype(np.float32)
    paths = []
    for i in range(n):
        base = np.stack([x * 255 / 640, y * 255 / 480, (x + y + 37 * i) % 256], axis=-1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, x1 = sorted(rng.integers(0, 640, 2).tolist())
            y0, y1 = sorted(rng.integers(0, 480, 2).tolist())
            draw.ellipse((x0, y0, x1, y1), fill=tuple(rng.integers(0, 256, 3).tolist()))
        path = folder / f"{i:04d}.jpg"
        image.save(path, quality=90)
        paths.append(str(path))
    return paths


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info() -> str:
    import transformers

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " / load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    return (
        f"{cpu_name()}, {cores} usable cores{load}\n"
        f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"Pillow {PIL.__version__}, transformers {transformers.__version__}, {platform.platform()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="number of 640x480 JPEG files (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per processor; the best is kept")
    args = parser.parse_args()
    if args.n < 1 or args.repeats < 1:
        parser.error("--n and --repeats must be at least 1")

    from transformers import Siglip2ImageProcessorPil, SiglipImageProcessorPil

    threads = ip._NUM_WORKERS

    def single_threaded(processor):
        def run(paths):
            ip._NUM_WORKERS = 1  # private knob, set here only to show what the thread pool adds
            try:
                return processor(paths, return_tensors="pt")
            finally:
                ip._NUM_WORKERS = threads

        return run

    def plain(processor):
        return lambda paths: processor(paths, return_tensors="pt")

    # (task, label, function); the first row of each task is the reference
    rows = [
        ("FixRes 224 bicubic", "transformers SiglipImageProcessorPil", plain(SiglipImageProcessorPil())),
        ("FixRes 224 bicubic", f"siglip SiglipImageProcessor ({threads} threads)", plain(ip.SiglipImageProcessor())),
        ("FixRes 224 bicubic", "siglip SiglipImageProcessor (1 thread)", single_threaded(ip.SiglipImageProcessor())),
        ("NaFlex 256 bilinear", "transformers Siglip2ImageProcessorPil", plain(Siglip2ImageProcessorPil())),
        ("NaFlex 256 bilinear", f"siglip Siglip2ImageProcessor ({threads} threads)", plain(ip.Siglip2ImageProcessor())),
    ]

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), args.n)
        outputs, best = {}, {}
        for _, label, fn in rows:  # warm-up, and the outputs that are compared
            outputs[label] = fn(paths[: min(4, args.n)])
            outputs[label] = fn(paths)
        for _ in range(args.repeats):
            for _, label, fn in rows:
                start = time.perf_counter()
                fn(paths)
                best[label] = min(best.get(label, float("inf")), time.perf_counter() - start)

    identical = True
    print(f"{args.n} JPEG files of 640x480, best of {args.repeats} interleaved runs\n")
    print(f"| {'task':<20} | {'processor':<42} | {'images/s':>9} | {'vs transformers':>15} | {'output':<9} |")
    print(f"|{'-' * 22}|{'-' * 44}|{'-' * 11}|{'-' * 17}|{'-' * 11}|")
    reference = {}
    for task, label, _ in rows:
        out = outputs[label]
        if task not in reference:
            reference[task] = (label, out)
            ratio, same = "1.00x", "reference"
        else:
            ref_label, ref_out = reference[task]
            ratio = f"{best[ref_label] / best[label]:.2f}x"
            equal = set(out.keys()) == set(ref_out.keys()) and all(torch.equal(out[k], ref_out[k]) for k in ref_out)
            identical &= equal
            same = "identical" if equal else "DIFFERENT"
        print(f"| {task:<20} | {label:<42} | {args.n / best[label]:>9.1f} | {ratio:>15} | {same:<9} |")
    print(f"\n{machine_info()}")
    if not identical:
        print("error: outputs differ from transformers", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
