"""siglip against transformers, measured in one run on this machine: one command, one table of ratios.

    python benchmarks/run.py                     # real sizes; writes benchmarks/RESULTS.md
    python benchmarks/run.py --quick --out -     # tiny models, seconds (what the test suite runs)

Builds random-weight checkpoints at real sizes with transformers (SigLIP base-patch16-224 and SigLIP2 base NaFlex
at 256 patches, each with a trained tokenizer and the hub's preprocessing config), then times both libraries on
identical inputs, interleaved, keeping the best of ``--repeats`` (the fairest figure on a shared machine):

* the machine's fp32 / bf16 matmul ceilings (GFLOP/s of a large square GEMM);
* image embeddings/s at batch 1, 8 and 32 in fp32 and bf16 (and bf16 as a share of the ceiling x model FLOPs),
  text embeddings/s, and the opt-in paths: ``torch.compile`` and torchao int8 weights (speed, memory, cosine);
* the zero-shot job: 100 JPEG files x 10 labels end to end, against transformers' pipeline;
* cold start: a fresh process classifying one image (import, load, preprocess, forward);
* preprocessing throughput on 640x480 JPEG files;
* peak RSS while loading the checkpoint, as a multiple of its size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # builders.py: tokenizers trained on the fly, hub-like folders

import siglip  # noqa: E402
from bench_preprocess import cpu_name, write_jpegs  # noqa: E402
from siglip.quantization import weight_bytes  # noqa: E402

from builders import write_checkpoint  # noqa: E402

# ------------------------------------------------------------------------------------------------------------
# Measurement helpers
# ------------------------------------------------------------------------------------------------------------


def best_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def paired(ours: Callable[[], object], ref: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best times of two functions measured alternately (so load drift hits both alike)."""
    ours(), ref()  # warm up both
    t_ours, t_ref = [], []
    for _ in range(repeats):
        for fn, out in ((ours, t_ours), (ref, t_ref)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return min(t_ours), min(t_ref)


def matmul_ceiling(dtype: torch.dtype, n: int, repeats: int) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    seconds = best_time(lambda: a @ b, repeats)
    return 2 * n**3 / seconds / 1e9


def vision_gflops(config) -> float:
    """Forward GFLOPs of one image through the vision tower (2 x multiply-adds; head and norms ignored)."""
    v = config.vision_config
    tokens = getattr(v, "num_patches", None) or (v.image_size // v.patch_size) ** 2
    D, inner = v.hidden_size, v.intermediate_size
    per_layer = tokens * (4 * D * D + 2 * D * inner) + 2 * tokens * tokens * D
    patch = tokens * 3 * v.patch_size**2 * D
    return 2 * (v.num_hidden_layers * per_layer + patch) / 1e9


def peak_rss_load(library: str, folder: Path) -> float:
    """Peak RSS above the post-import baseline while loading ``folder``, in bytes (fresh process)."""
    code = f"""
        import sys, torch
        import {"siglip" if library == "siglip" else "transformers"} as lib
        {
        "from siglip import modeling_siglip, modeling_siglip2, weights"
        if library == "siglip"
        else "lib.logging.set_verbosity_error(); lib.AutoModel; from transformers.models.siglip import modeling_siglip"
    }
        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        open("/proc/self/clear_refs", "w").write("5")
        base = status("VmRSS:")
        model = lib.AutoModel.from_pretrained(sys.argv[1])
        print(status("VmHWM:") - base)
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(folder)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"},
        timeout=600,
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return float(out.stdout.split()[-1])


COLD_START = {
    "siglip": """
        import sys, siglip
        pipe = siglip.pipeline("zero-shot-image-classification", model=sys.argv[1])
        print(pipe(sys.argv[2], candidate_labels=["a cat", "a dog", "a bird"])[0]["label"])
    """,
    "transformers": """
        import sys, transformers
        transformers.logging.set_verbosity_error()
        pipe = transformers.pipeline("zero-shot-image-classification", model=sys.argv[1])
        print(pipe(sys.argv[2], candidate_labels=["a cat", "a dog", "a bird"])[0]["label"])
    """,
}


def cold_start(library: str, folder: Path, image: str) -> float:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(COLD_START[library]), str(folder), image],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"},
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(self, what: str, ours: str, ref: str, ratio: float | None, note: str = "") -> None:
        self.rows.append((what, ours, ref, f"{ratio:.2f}x" if ratio is not None else "", note))
        print(f"  {what:<44} siglip {ours:>14}  transformers {ref:>14}  {self.rows[-1][3]:>7}  {note}", flush=True)

    def markdown(self) -> str:
        lines = ["| measurement | siglip | transformers | ratio | note |", "|---|---:|---:|---:|---|"]
        lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in self.rows]
        return "\n".join(lines)


def build_checkpoints(workdir: Path, quick: bool) -> dict[str, Path]:
    """Random-weight checkpoints (built once per workdir and reused)."""
    if quick:
        specs = {
            "SigLIP tiny": ("siglip", dict(), dict(image_size=32, patch_size=8)),
            "SigLIP2 NaFlex tiny": ("siglip2", dict(), dict()),
        }
    else:
        base_text = dict(
            vocab_size=32000,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=64,
        )
        base_vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
        specs = {
            "SigLIP base-patch16-224": ("siglip", base_text, dict(base_vision, image_size=224, patch_size=16)),
            "SigLIP2 base NaFlex-256": (
                "siglip2",
                dict(base_text, vocab_size=256000),
                dict(base_vision, num_patches=256, patch_size=16),
            ),
        }
    folders = {}
    for name, (family, text, vision) in specs.items():
        folder = workdir / name.replace(" ", "_")
        if not (folder / "model.safetensors").is_file():
            extra = {"image_size": vision.pop("image_size")} if "image_size" in vision else {}
            if "patch_size" in vision and family == "siglip":
                extra["patch_size"] = vision["patch_size"]
            write_checkpoint(folder, family, text=text, vision=vision, **extra)
        folders[name] = folder
    return folders


def image_inputs(folder: Path, batch: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    processor = siglip.AutoImageProcessor.from_pretrained(folder)
    rng = np.random.default_rng(batch)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(batch)]
    inputs = processor(images, return_tensors="pt")
    if "pixel_attention_mask" in inputs:  # NaFlex: as Siglip2Processor, 256 patches of 16
        inputs = siglip.Siglip2ImageProcessor.from_pretrained(folder)(
            images, return_tensors="pt", max_num_patches=256, patch_size=16
        )
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in inputs.items()}


def bench_models(report: Report, folders: dict[str, Path], args) -> None:
    import transformers

    for name, folder in folders.items():
        for dtype in (torch.float32, torch.bfloat16):
            ours = siglip.AutoModel.from_pretrained(folder, dtype=dtype)
            ref = transformers.AutoModel.from_pretrained(folder, dtype=dtype).eval()
            bench_towers(report, name, folder, ours, ref, dtype, args)
        bench_fast_paths(report, name, folder, args)


def bench_towers(report: Report, name: str, folder: Path, ours, ref, dtype: torch.dtype, args) -> None:
    """Image embeddings/s at several batch sizes and text embeddings/s, both libraries, one dtype."""
    gflops = vision_gflops(ours.config)
    for batch in [1, 4] if args.quick else [1, 8, 32]:
        inputs = image_inputs(folder, batch, dtype)
        with torch.inference_mode():
            t_ours, t_ref = paired(
                lambda: ours.get_image_features(**inputs),  # noqa: B023 - called right here
                lambda: ref.get_image_features(**inputs),  # noqa: B023
                args.repeats,
            )
        note = ""
        if dtype == torch.bfloat16:
            share = batch / t_ours * gflops / args.ceilings["bfloat16"]
            note = f"{100 * share:.0f}% of bf16 ceiling x {gflops:.1f} GFLOP/img"
        report.add(
            f"{name} image emb/s, {str(dtype)[6:]}, batch {batch}",
            f"{batch / t_ours:.2f}",
            f"{batch / t_ref:.2f}",
            t_ref / t_ours,
            note,
        )
    ids = torch.randint(0, 1000, (32, ours.config.text_config.max_position_embeddings))
    with torch.inference_mode():
        t_ours, t_ref = paired(
            lambda: ours.get_text_features(input_ids=ids), lambda: ref.get_text_features(input_ids=ids), args.repeats
        )
    report.add(
        f"{name} text emb/s, {str(dtype)[6:]}, batch 32", f"{32 / t_ours:.1f}", f"{32 / t_ref:.1f}", t_ref / t_ours
    )


def bench_fast_paths(report: Report, name: str, folder: Path, args) -> None:
    """Opt-in paths against siglip's own eager fp32 / bf16 (transformers has no equivalent to compare here)."""
    batch = 4 if args.quick else 8
    fp32 = siglip.AutoModel.from_pretrained(folder)
    inputs = image_inputs(folder, batch, torch.float32)
    with torch.inference_mode():
        reference = torch.nn.functional.normalize(fp32.get_image_features(**inputs), dim=-1)
        t_fp32 = best_time(lambda: fp32.get_image_features(**inputs), args.repeats)
    try:
        int8 = siglip.quantize_int8(siglip.AutoModel.from_pretrained(folder))
    except ImportError as e:
        report.add(f"{name} int8 weights (torchao)", "-", "-", None, str(e))
    else:
        with torch.inference_mode():
            t_int8 = best_time(lambda: int8.get_image_features(**inputs), args.repeats)
            cos = torch.nn.functional.cosine_similarity(
                torch.nn.functional.normalize(int8.get_image_features(**inputs), dim=-1), reference
            ).min()
        size = lambda m: sum(weight_bytes(t) for t in m.state_dict().values()) / 2**20  # noqa: E731
        report.add(
            f"{name} int8 weights vs siglip fp32, batch {batch}",
            f"{batch / t_int8:.2f} img/s",
            f"{batch / t_fp32:.2f} img/s",
            t_fp32 / t_int8,
            f"weights {size(int8):.0f} vs {size(fp32):.0f} MiB, min cosine {cos:.4f}",
        )
    if args.compile:
        bf16 = siglip.AutoModel.from_pretrained(folder, dtype=torch.bfloat16)
        inputs16 = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in inputs.items()}
        with torch.inference_mode():
            t_eager = best_time(lambda: bf16.get_image_features(**inputs16), args.repeats)
            start = time.perf_counter()
            compiled = siglip.compile_model(bf16)
            compiled.get_image_features(**inputs16)
            compile_s = time.perf_counter() - start
            t_comp = best_time(lambda: compiled.get_image_features(**inputs16), args.repeats)
            cos = torch.nn.functional.cosine_similarity(
                compiled.get_image_features(**inputs16).float(), fp32.get_image_features(**inputs)
            ).min()
        gflops = vision_gflops(bf16.config)
        report.add(
            f"{name} torch.compile bf16 vs siglip eager bf16, batch {batch}",
            f"{batch / t_comp:.2f} img/s",
            f"{batch / t_eager:.2f} img/s",
            t_eager / t_comp,
            f"{100 * batch / t_comp * gflops / args.ceilings['bfloat16']:.0f}% of bf16 ceiling; "
            f"compile {compile_s:.0f}s; min cosine to fp32 {cos:.4f}",
        )


def bench_zero_shot(report: Report, folder: Path, name: str, args) -> None:
    import transformers

    n, k = (6, 3) if args.quick else (100, 10)
    labels = [f"a photo of thing number {i}" for i in range(k)]
    with tempfile.TemporaryDirectory() as tmp:
        images = write_jpegs(Path(tmp), n)
        ours = siglip.pipeline("zero-shot-image-classification", model=str(folder), batch_size=16)
        ref = transformers.pipeline("zero-shot-image-classification", model=str(folder))
        for pipe in (ours, ref):  # warm up (and, for ours, no cached labels survive: a new pipeline is timed)
            pipe(images[0], candidate_labels=["x"])

        def run_ours():
            fresh = siglip.ZeroShotImageClassificationPipeline(
                ours.model, ours.tokenizer, ours.image_processor, batch_size=16
            )
            return fresh(images, candidate_labels=labels)

        start = time.perf_counter()
        a = run_ours()
        t_ours = time.perf_counter() - start
        start = time.perf_counter()
        b = ref(images, candidate_labels=labels)
        t_ref = time.perf_counter() - start
        worst = max(
            abs(x["score"] - y["score"])
            for ra, rb in zip(a, b, strict=True)
            for x, y in zip(sorted(ra, key=lambda r: r["label"]), sorted(rb, key=lambda r: r["label"]), strict=True)
        )
    report.add(
        f"{name} zero-shot job: {n} JPEG x {k} labels (s)",
        f"{t_ours:.1f}",
        f"{t_ref:.1f}",
        t_ref / t_ours,
        f"max score difference {worst:.1e}",
    )


def bench_cold_start(report: Report, folder: Path, name: str, args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        image = write_jpegs(Path(tmp), 1)[0]
        times = {lib: [] for lib in COLD_START}
        for _ in range(args.cold_repeats):
            for lib in COLD_START:
                times[lib].append(cold_start(lib, folder, image))
    t_ours, t_ref = min(times["siglip"]), min(times["transformers"])
    report.add(
        f"{name} cold start: fresh process, 1 image (s)",
        f"{t_ours:.1f}",
        f"{t_ref:.1f}",
        t_ref / t_ours,
        "import + load + preprocess + forward",
    )


def bench_preprocessing(report: Report, args) -> None:
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    n = 8 if args.quick else 64
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), n)
        ours, ref = siglip.SiglipImageProcessor(), SiglipImageProcessorPil()
        a = ours(paths, return_tensors="pt")["pixel_values"]
        b = ref(paths, return_tensors="pt")["pixel_values"]
        same = torch.equal(a, b)
        t_ours, t_ref = paired(
            lambda: ours(paths, return_tensors="pt"), lambda: ref(paths, return_tensors="pt"), args.repeats
        )
    report.add(
        f"FixRes preprocessing, {n} JPEG 640x480 (img/s)",
        f"{n / t_ours:.0f}",
        f"{n / t_ref:.0f}",
        t_ref / t_ours,
        "identical output" if same else "OUTPUT DIFFERS",
    )
    if not same:
        raise SystemExit("preprocessing outputs differ from transformers")


def bench_loading(report: Report, folders: dict[str, Path]) -> None:
    for name, folder in folders.items():
        size = (folder / "model.safetensors").stat().st_size
        ours, ref = peak_rss_load("siglip", folder), peak_rss_load("transformers", folder)
        report.add(
            f"{name} peak RSS while loading (x checkpoint)",
            f"{ours / size:.2f}",
            f"{ref / size:.2f}",
            ref / ours,
            f"checkpoint {size / 2**20:.0f} MiB",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models and inputs (seconds; for the tests)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (best is kept)")
    parser.add_argument("--cold-repeats", type=int, default=None, help="cold-start processes per library")
    parser.add_argument("--workdir", default=None, help="where checkpoints are built (reused between runs)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"), help="markdown report path, or - for none")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile path")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.cold_repeats = args.cold_repeats or (1 if args.quick else 2)
    if args.quick:
        args.compile = False
    workdir = Path(
        args.workdir or Path(tempfile.gettempdir()) / ("siglip-bench-quick" if args.quick else "siglip-bench")
    )
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    n = 256 if args.quick else 2048
    args.ceilings = {str(d)[6:]: matmul_ceiling(d, n, args.repeats + 1) for d in (torch.float32, torch.bfloat16)}
    machine = (
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}, siglip {siglip.__version__}"
    )
    print(f"machine: {machine}")
    print(f"matmul ceilings: fp32 {args.ceilings['float32']:.0f} GFLOP/s, bf16 {args.ceilings['bfloat16']:.0f} GFLOP/s")
    report = Report()
    folders = build_checkpoints(workdir, args.quick)
    first = next(iter(folders))
    bench_models(report, folders, args)
    bench_zero_shot(report, folders[first], first, args)
    bench_cold_start(report, folders[first], first, args)
    bench_preprocessing(report, args)
    bench_loading(report, folders)

    command = "python benchmarks/run.py" + (" --quick" if args.quick else "")
    text = (
        f"# Benchmarks: siglip vs transformers, same machine, same run\n\nCommand: `{command}`\n\n"
        f"Machine: {machine}\n\nMatmul ceilings: fp32 {args.ceilings['float32']:.0f} GFLOP/s, "
        f"bf16 {args.ceilings['bfloat16']:.0f} GFLOP/s ({n}x{n} GEMM, best of {args.repeats + 1}).\n\n"
        f"Ratios are transformers time / siglip time (higher is better for siglip), except peak RSS where it is "
        f"transformers / siglip memory. Best of {args.repeats} interleaved repeats.\n\n{report.markdown()}\n"
    )
    if args.out != "-":
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    print(json.dumps({"rows": len(report.rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
