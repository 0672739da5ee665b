"""siglip against transformers, measured in one run on this machine: one command, one table of ratios.

    python benchmarks/run.py                     # real sizes; writes benchmarks/RESULTS.md
    python benchmarks/run.py --quick --out -     # tiny models, seconds (what the test suite runs)

Builds random-weight checkpoints at real sizes with transformers (SigLIP base-patch16-224 and SigLIP2 base NaFlex
at 256 patches, each with a trained tokenizer and the hub's preprocessing config), then times both libraries on
identical inputs, interleaved, keeping the best of ``--repeats`` (the fairest figure on a shared machine). siglip
is timed as the pipeline and the commands run it, through ``siglip.optimize``; the plain model's speed is noted.

* the CPU's flags and its fp32 / bf16 / int8 matmul ceilings (a large square GEMM, and the ViT-B MLP shape);
* image embeddings/s at batch 1, 8 and 32 and text embeddings/s at batch 32, in fp32 and bf16, each as a share of
  the ceiling x model FLOPs; accuracy (fp32 optimized vs plain; bf16 cosine to fp32, ours and transformers');
* a profile of one optimized forward (where the time goes, and the projections' GFLOP/s against the ceiling);
* dynamic int8 (torchao, activations and weights) against our bf16 and fp32, torchao int8 weights, and
  ``torch.compile`` with inductor freezing (compile time, speed) against ``optimize``;
* the zero-shot job: 100 JPEG files x 10 labels end to end, against transformers' pipeline;
* ``siglip embed`` of 500 JPEG files against the model-only images/s at the same dtype and batch;
* cold start: a fresh process classifying one image (import, load, preprocess, forward);
* preprocessing throughput on 640x480 JPEG files; peak RSS while loading the checkpoint.

On a CPU without bf16 kernels (no AVX512-BF16 / AMX), torch's bf16 matmuls run far below fp32: transformers' bf16
is then timed once per row (no warm-up, no repeats) because a single batch takes minutes, and siglip's bf16 twin
computes in fp32 (``siglip.optimize``), which the notes say.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # builders.py: tokenizers trained on the fly, hub-like folders

import siglip  # noqa: E402
from bench_preprocess import cpu_name, write_jpegs, write_section  # noqa: E402
from siglip.optimization import Kernels, Projection, auto_dtype, choose_kernels, compute_dtype, cpu_flags  # noqa: E402
from siglip.quantization import weight_bytes  # noqa: E402

from builders import write_checkpoint  # noqa: E402

FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")

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


def interleaved(fns: list[Callable[[], object]], repeats: int, warmup: bool = True) -> tuple[list[float], list]:
    """Best time of each function measured in turn, round after round (load drift hits all alike), and each one's
    last result."""
    results = [fn() for fn in fns] if warmup else [None] * len(fns)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - start)
    return [min(t) for t in times], results


def gemm_rate(a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
    """GFLOP/s (GOP/s for int8) of ``a @ b``."""
    mm = torch._int_mm if a.dtype == torch.int8 else torch.mm
    seconds = best_time(lambda: mm(a, b), repeats)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / seconds / 1e9


def operands(m: int, k: int, n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    if dtype == torch.int8:
        return torch.randint(-128, 128, (m, k), dtype=dtype), torch.randint(-128, 128, (k, n), dtype=dtype)
    return torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)


def matmul_ceilings(n: int, repeats: int) -> dict[str, dict]:
    """Square-GEMM and ViT-B-MLP-shape (1568 x 768 x 3072) rates per dtype. A dtype whose 256-sized probe says one
    n x n GEMM would take over 5 s has no fast kernel here: it is reported at the probe's size."""
    out: dict[str, dict] = {}
    for dtype in (torch.float32, torch.bfloat16, torch.int8):
        name = short(dtype)
        probe = gemm_rate(*operands(256, 256, 256, dtype), 2)
        if name != "float32" and 2 * n**3 / (probe * 1e9) > 5.0:
            out[name] = {"square": probe, "mlp": probe, "size": 256, "fast": False}
            continue
        out[name] = {
            "square": gemm_rate(*operands(n, n, n, dtype), repeats),
            "size": n,
            "fast": True,
            "mlp": gemm_rate(*operands(1568 if n >= 1024 else 64, 768, 3072, dtype), repeats),
        }
    return out


def describe_ceilings(ceilings: dict[str, dict]) -> str:
    parts = []
    for name, c in ceilings.items():
        unit = "GOP/s" if name == "int8" else "GFLOP/s"
        if c["fast"]:
            parts.append(f"{name} {c['square']:.0f} {unit} ({c['size']}^2; ViT-B MLP shape {c['mlp']:.0f})")
        else:
            parts.append(f"{name} {c['square']:.1f} {unit} (256^2 probe: no fast kernel on this CPU)")
    return "; ".join(parts)


def vision_gflops(config) -> float:
    """Forward GFLOPs of one image through the vision tower (2 x multiply-adds; head and norms ignored)."""
    v = config.vision_config
    tokens = getattr(v, "num_patches", None) or (v.image_size // v.patch_size) ** 2
    D, inner = v.hidden_size, v.intermediate_size
    per_layer = tokens * (4 * D * D + 2 * D * inner) + 2 * tokens * tokens * D
    patch = tokens * 3 * v.patch_size**2 * D
    return 2 * (v.num_hidden_layers * per_layer + patch) / 1e9


def text_gflops(config) -> float:
    """Forward GFLOPs of one text (the full position table) through the text tower, as ``vision_gflops``."""
    t = config.text_config
    L, D, inner = t.max_position_embeddings, t.hidden_size, t.intermediate_size
    per_layer = L * (4 * D * D + 2 * D * inner) + 2 * L * L * D
    return 2 * (t.num_hidden_layers * per_layer + D * t.projection_size) / 1e9


def relative(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.float() - ref.float()).abs().max() / ref.float().abs().max())


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.float(), b.float()).min())


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
        self.metrics: dict[str, list[float]] = {}

    def metric(self, key: str, value: float) -> None:
        """A number the targets table is computed from (every row that measures ``key`` adds one)."""
        self.metrics.setdefault(key, []).append(float(value))

    def add(self, what: str, ours: str, ref: str, ratio: float | None, note: str = "") -> None:
        self.rows.append((what, ours, ref, f"{ratio:.2f}x" if ratio is not None else "", note))
        print(f"  {what:<58} siglip {ours:>12}  transformers {ref:>12}  {self.rows[-1][3]:>7}  {note}", flush=True)

    def markdown(self) -> str:
        lines = ["| measurement | siglip | transformers | ratio | note |", "|---|---:|---:|---:|---|"]
        lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in self.rows]
        return "\n".join(lines)


def targets(report: Report, ceilings: dict[str, dict]) -> str:
    """Issue 14's targets against this run's numbers, each with the range it was measured in and whether it holds."""
    m = report.metrics

    def span(key: str, scale: float = 1.0, fmt: str = "{:.2f}", unit: str = "x") -> str:
        values = m.get(key)
        if not values:
            return "not measured"
        lo, hi = min(values) * scale, max(values) * scale
        return (fmt.format(lo) + unit) if lo == hi else f"{fmt.format(lo)}-{fmt.format(hi)}{unit}"

    def holds(key: str, test) -> str:
        values = m.get(key)
        return "-" if not values else "yes" if all(test(v) for v in values) else "NO"

    if ceilings["bfloat16"]["fast"]:
        bf16_share = (
            span("bfloat16 image share of the bfloat16 ceiling", 100, "{:.0f}", "%"),
            holds("bfloat16 image share of the bfloat16 ceiling", lambda v: v >= 0.8),
        )
    else:  # the bf16 twin computes in fp32 on this CPU: its share of the fp32 ceiling is what it reaches
        bf16_share = (
            span("bfloat16 image share of the float32 ceiling", 100, "{:.0f}", "%") + " of the fp32 "
            "ceiling (siglip's bf16 computes in fp32 here)",
            "n/a: no bf16 matmul kernels on this CPU",
        )
    rows = [
        (
            "bf16 image embeddings >= 1.3x transformers",
            span("bfloat16 image ratio"),
            holds("bfloat16 image ratio", lambda v: v >= 1.3),
        ),
        ("bf16 image >= 80% of the bf16 ceiling x model FLOPs", *bf16_share),
        (
            "bf16 text embeddings >= 1.3x transformers",
            span("bfloat16 text ratio"),
            holds("bfloat16 text ratio", lambda v: v >= 1.3),
        ),
        (
            "fp32 image >= 1.0x transformers at every batch",
            span("image ratio"),
            holds("image ratio", lambda v: v >= 1.0),
        ),
        ("fp32 text >= 1.0x transformers", span("text ratio"), holds("text ratio", lambda v: v >= 1.0)),
        (
            "fp32 image >= 85% of the fp32 ceiling x model FLOPs",
            span("image share of the float32 ceiling", 100, "{:.0f}", "%"),
            holds("image share of the float32 ceiling", lambda v: v >= 0.85),
        ),
        (
            "fp32 optimized equals plain within 1e-5",
            span("fp32 difference", 1, "{:.1e}", ""),
            holds("fp32 difference", lambda v: v <= 1e-5),
        ),
        (
            "bf16 cosine >= 0.999 to fp32, no further than transformers' bf16",
            span("bf16 cosine", 1, "{:.5f}", ""),
            holds("bf16 cosine met", bool),
        ),
        (
            "zero-shot job (100 JPEG x 10 labels) >= 4x transformers' pipeline",
            span("zero-shot ratio"),
            holds("zero-shot ratio", lambda v: v >= 4),
        ),
        (
            "siglip embed of 500 JPEG >= 90% of model-only img/s",
            span("embed share", 100, "{:.0f}", "%"),
            holds("embed share", lambda v: v >= 0.9),
        ),
        ("cold start >= 2x transformers", span("cold start ratio"), holds("cold start ratio", lambda v: v >= 2)),
        (
            "dynamic int8 >= 1.2x our bf16 at cosine >= 0.99 (else not shipped)",
            f"{span('int8 vs bf16')}, cosine {span('int8 cosine', 1, '{:.4f}', '')}",
            holds("int8 vs bf16", lambda v: v >= 1.2)
            + ("" if holds("int8 vs bf16", lambda v: v >= 1.2) == "yes" else ": not shipped"),
        ),
    ]
    lines = ["| target | this run | met |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if m.get("profile projections share"):
        lines.append(
            f"\nProfile of the optimized fp32 image forward (batch 8): the projections take "
            f"{span('profile projections share', 100, '{:.0f}', '%')} of the time and run at "
            f"{span('profile projections efficiency', 100, '{:.0f}', '%')} of this CPU's fp32 GEMM rate at "
            f"the ViT-B MLP shape; the rest is attention, layer norms and elementwise work. The share of the "
            f"ceiling a forward can reach is at most (projection FLOP share) x (their efficiency) / (their "
            f"time share); the profile rows above give the split per model."
        )
    if not ceilings["bfloat16"]["fast"]:
        lines.append(
            f"\nThis CPU has no bf16 matmul kernels (no avx512_bf16 / amx_bf16, and torch's oneDNN reports "
            f"no bf16 support): a bf16 GEMM runs at {ceilings['bfloat16']['square']:.1f} GFLOP/s against "
            f"{ceilings['float32']['square']:.0f} in fp32, and transformers' bf16 image forward reaches "
            f"{span('transformers bfloat16 image GFLOP/s', 1, '{:.1f}', ' GFLOP/s')}. siglip's bf16 twin "
            f"computes in fp32 on the bf16 weights (outputs in bf16), so the bf16 ratios compare that with "
            f"transformers' bf16 fallback, and the 80%-of-the-bf16-ceiling target has no ceiling to measure "
            f"against. `--dtype auto` picks fp32 on such a CPU."
        )
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


def short(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def bench_models(report: Report, folders: dict[str, Path], args) -> None:
    import transformers

    for name, folder in folders.items():
        plain = siglip.AutoModel.from_pretrained(folder)
        reference: dict[str, torch.Tensor] = {}
        fast = {}
        for dtype in (torch.float32, torch.bfloat16):
            fast[dtype] = siglip.optimize(plain, dtype=dtype)
            ref = transformers.AutoModel.from_pretrained(folder, dtype=dtype).eval()
            bench_towers(report, name, folder, plain, fast[dtype], ref, dtype, reference, args)
            del ref
        profile_forward(report, name, folder, fast[torch.float32], args)
        bench_int8(report, name, folder, plain, fast, reference, args)
        if args.compile:
            bench_compile(report, name, folder, plain, fast[torch.float32], args)
        del plain, fast


def bench_towers(
    report: Report,
    name: str,
    folder: Path,
    plain,
    fast,
    ref,
    dtype: torch.dtype,
    reference: dict[str, torch.Tensor],
    args,
) -> None:
    """Image embeddings/s at several batch sizes and text embeddings/s: the optimized twin against transformers
    (and siglip's plain model, in the note), one dtype; then the accuracy rows."""
    compute = compute_dtype(dtype, torch.device("cpu"))
    ceiling = args.ceilings[short(compute)]["square"]
    slow_ref = not args.ceilings[short(dtype)]["fast"]  # no fast bf16 kernel here: one call takes minutes
    ref_repeats = 1 if slow_ref else args.repeats
    suffix = (
        f"; siglip computes in {short(compute)} (no {short(dtype)} kernels on this CPU)" if compute != dtype else ""
    )
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def row(what: str, batch: int, gflops: float, ours_fn, ref_fn, plain_fn, key: str) -> None:
        with torch.inference_mode():
            fns = [ours_fn] + ([plain_fn] if dtype == torch.float32 else [])
            times, results = interleaved(fns, args.repeats)
            (t_ref,), (ref_out,) = interleaved([ref_fn], ref_repeats, warmup=not slow_ref)
        share = batch / times[0] * gflops / ceiling
        note = f"{100 * share:.0f}% of {short(compute)} ceiling x {gflops:.1f} GFLOP"
        kind = what if dtype == torch.float32 else f"{short(dtype)} {what}"
        report.metric(f"{kind} ratio", t_ref / times[0])
        report.metric(f"transformers {short(dtype)} {what} GFLOP/s", batch / t_ref * gflops)
        report.metric(f"{kind} share of the {short(compute)} ceiling", share)
        if dtype == torch.float32:
            note += f"; siglip plain {batch / times[1]:.2f}/s"
            reference[key] = results[1]
        if slow_ref:
            note += "; transformers timed once (one call takes minutes)"
        report.add(
            f"{name} {what} emb/s, {short(dtype)}, batch {batch}",
            f"{batch / times[0]:.2f}",
            f"{batch / t_ref:.2f}",
            t_ref / times[0],
            note + suffix,
        )
        outputs[key] = (results[0], ref_out)

    gflops = vision_gflops(plain.config)
    # Without bf16 kernels transformers' bf16 forward runs torch's fallback at ~1 GFLOP/s (a base batch of 32 would
    # take a quarter of an hour): batch 1 and the accuracy batch only, and 8 texts.
    batches = [1, 4] if args.quick else [1, 8] if slow_ref else [1, 8, 32]
    text_batch = 8 if slow_ref and not args.quick else 32
    text_key = f"text {text_batch}"
    for batch in batches:
        inputs = image_inputs(folder, batch, dtype)
        inputs32 = image_inputs(folder, batch, torch.float32)
        row(
            "image",
            batch,
            gflops,
            lambda: fast.get_image_features(**inputs),  # noqa: B023 - called right here
            lambda: ref.get_image_features(**inputs).pooler_output,  # noqa: B023
            lambda: plain.get_image_features(**inputs32),  # noqa: B023
            f"image {batch}",
        )
    ids = torch.randint(
        0, 1000, (32, plain.config.text_config.max_position_embeddings), generator=torch.Generator().manual_seed(0)
    )[:text_batch]
    row(
        "text",
        text_batch,
        text_gflops(plain.config),
        lambda: fast.get_text_features(input_ids=ids),
        lambda: ref.get_text_features(input_ids=ids).pooler_output,
        lambda: plain.get_text_features(input_ids=ids),
        text_key,
    )

    batch = 4 if args.quick else 8
    image_key = f"image {batch}"
    if dtype == torch.float32:
        worst = max(relative(outputs[k][0], reference[k]) for k in (image_key, text_key))
        report.metric("fp32 difference", worst)
        report.add(
            f"{name} fp32 optimized vs plain, max relative difference",
            f"{worst:.1e}",
            "",
            None,
            f"image batch {batch} and text batch {text_batch}; target <= 1e-5: {'yes' if worst <= 1e-5 else 'NO'}",
        )
        return
    for kind, key in (("image", image_key), ("text", text_key)):
        exact = reference[key] if key in reference else reference["text 32"][:text_batch]  # fp32 ran 32 texts
        ours, theirs = min_cosine(outputs[key][0], exact), min_cosine(outputs[key][1], exact)
        met = ours >= 0.999 and ours >= theirs - 1e-4
        report.metric("bf16 cosine", ours)
        report.metric("bf16 cosine met", met)
        report.add(
            f"{name} {short(dtype)} {kind} embeddings: min cosine to fp32",
            f"{ours:.5f}",
            f"{theirs:.5f}",
            None,
            f"target >= 0.999 and no further than transformers: {'yes' if met else 'NO'}",
        )


def profile_forward(report: Report, name: str, folder: Path, fast, args) -> None:
    """Where one optimized fp32 image forward spends its time, and the projections' rate against the ceiling."""
    from torch.profiler import ProfilerActivity, profile

    batch = 4 if args.quick else 8
    inputs = image_inputs(folder, batch, torch.float32)
    groups = {
        "projections": ("_linear_pointwise", "aten::addmm", "aten::mm"),  # self time: kernels, no wrappers
        "attention": ("flash_attention", "scaled_dot_product"),
        "layer norm": ("layer_norm",),
        "patch embedding": ("convolution",),
    }
    with torch.inference_mode():
        fast.get_image_features(**inputs)
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fast.get_image_features(**inputs)
        wall = time.perf_counter() - start
    spent = dict.fromkeys(groups, 0.0)
    for event in prof.key_averages():
        group = next((g for g, keys in groups.items() if any(k in event.key for k in keys)), None)
        if group is not None:
            spent[group] += event.self_cpu_time_total / 1e6
    total = sum(spent.values())
    v = fast.config.vision_config
    tokens = batch * (getattr(v, "num_patches", None) or (v.image_size // v.patch_size) ** 2)
    D, inner = v.hidden_size, v.intermediate_size
    # encoder projections, plus the pooling head's keys and values over every token
    projection_flops = 2 * tokens * (v.num_hidden_layers * (4 * D * D + 2 * D * inner) + 2 * D * D)
    rate = projection_flops / max(spent["projections"], 1e-9) / 1e9
    ceiling = args.ceilings["float32"]["mlp"]
    parts = ", ".join(f"{k} {100 * s / wall:.0f}%" for k, s in spent.items())
    report.metric("profile projections share", spent["projections"] / wall)
    report.metric("profile projections efficiency", rate / ceiling)
    report.add(
        f"{name} profile: optimized fp32 image forward, batch {batch}",
        f"{wall:.3f} s",
        "",
        None,
        f"{parts}, other {100 * (wall - total) / wall:.0f}%; projections at {rate:.0f} GFLOP/s = "
        f"{100 * rate / ceiling:.0f}% of the fp32 MLP-shape GEMM ({ceiling:.0f})",
    )


def bench_int8(report: Report, name: str, folder: Path, plain, fast: dict, reference: dict, args) -> None:
    """torchao int8: dynamic activations + weights (the speed candidate) and weights only (memory)."""
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError as e:
        report.add(f"{name} int8 (torchao)", "-", "-", None, str(e))
        return
    slow = not args.ceilings["int8"]["fast"]  # int8 matmul without a fast kernel: one image, one timed call
    batch = 1 if slow else 4 if args.quick else 8
    inputs = image_inputs(folder, batch, torch.float32)
    inputs16 = {k: (v.bfloat16() if v.is_floating_point() else v) for k, v in inputs.items()}
    dynamic = copy.deepcopy(plain).eval()
    linears = {
        id(m) for name_, m in dynamic.named_modules() if type(m) is torch.nn.Linear and "classifier" not in name_
    }
    quantize_(dynamic, Int8DynamicActivationInt8WeightConfig(), filter_fn=lambda m, _: id(m) in linears)
    with torch.inference_mode():
        (t_int8,), (out,) = interleaved(
            [lambda: dynamic.get_image_features(**inputs)], 1 if slow else args.repeats, warmup=not slow
        )
        (t_bf16, t_fp32), _ = interleaved(
            [
                lambda: fast[torch.bfloat16].get_image_features(**inputs16),
                lambda: fast[torch.float32].get_image_features(**inputs),
            ],
            args.repeats,
        )
    with torch.inference_mode():
        exact = plain.get_image_features(**inputs)
    cos = min_cosine(out, exact)
    shipped = t_bf16 / t_int8 >= 1.2 and cos >= 0.99
    report.metric("int8 vs bf16", t_bf16 / t_int8)
    report.metric("int8 cosine", cos)
    report.add(
        f"{name} int8 dynamic (torchao) vs siglip optimized bf16, batch {batch}",
        f"{batch / t_int8:.2f} img/s",
        f"{batch / t_bf16:.2f} img/s",
        t_bf16 / t_int8,
        f"'transformers' column: siglip optimized bf16; vs optimized fp32 ({batch / t_fp32:.2f} img/s) "
        f"{t_fp32 / t_int8:.2f}x; min cosine to fp32 {cos:.4f}; ship (>= 1.2x at cosine >= 0.99): "
        f"{'yes' if shipped else 'no'}",
    )
    batch = 4 if args.quick else 8
    inputs = image_inputs(folder, batch, torch.float32)
    weights_only = siglip.optimize(plain, int8_weights=True)
    with torch.inference_mode():
        (t_w8, t_plain), (w8_out, _) = interleaved(
            [lambda: weights_only.get_image_features(**inputs), lambda: plain.get_image_features(**inputs)],
            args.repeats,
        )
    size = lambda m: sum(weight_bytes(t) for t in m.state_dict().values()) / 2**20  # noqa: E731
    report.add(
        f"{name} int8 weights (optimize(int8_weights=True)) vs siglip plain fp32, batch {batch}",
        f"{batch / t_w8:.2f} img/s",
        f"{batch / t_plain:.2f} img/s",
        t_plain / t_w8,
        f"'transformers' column: siglip plain fp32; weights {size(weights_only):.0f} vs {size(plain):.0f} MiB, "
        f"min cosine {min_cosine(w8_out, reference[f'image {batch}']):.4f}",
    )


def bench_compile(report: Report, name: str, folder: Path, plain, fast, args) -> None:
    """torch.compile with inductor freezing on the plain model, against ``optimize``: compile time and speed."""
    import torch._inductor.config as inductor_config

    batch = 8
    inputs = image_inputs(folder, batch, torch.float32)
    compiled = copy.deepcopy(plain).eval()
    inductor_config.freezing = True
    try:
        for module in compiled.modules():
            if type(module).__name__ == "SiglipEncoder":
                module.compile()
        with torch.inference_mode():
            start = time.perf_counter()
            out = compiled.get_image_features(**inputs)
            compile_s = time.perf_counter() - start
            (t_comp, t_fast), _ = interleaved(
                [lambda: compiled.get_image_features(**inputs), lambda: fast.get_image_features(**inputs)], args.repeats
            )
    finally:
        inductor_config.freezing = False
    report.add(
        f"{name} torch.compile (freezing) fp32 vs siglip optimized, batch {batch}",
        f"{batch / t_comp:.2f} img/s",
        f"{batch / t_fast:.2f} img/s",
        t_fast / t_comp,
        f"'transformers' column: siglip optimized fp32; first call (compile) {compile_s:.0f} s; "
        f"relative difference to optimize {relative(out, fast.get_image_features(**inputs)):.1e}",
    )


def bench_mlp_block(report: Report, args) -> None:
    """One ViT-B MLP block (fc1 -> GELU-tanh -> fc2 + residual) on the kernel choices of
    ``siglip.optimization.Projection``: what ``choose_kernels`` picks for each dtype comes from this row."""
    rows, D, inner = (64, 64, 256) if args.quick else (1568, 768, 3072)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, D, generator=g)
    w1, b1 = torch.randn(inner, D, generator=g) * D**-0.5, torch.randn(inner, generator=g) * 0.1
    w2, b2 = torch.randn(D, inner, generator=g) * inner**-0.5, torch.randn(D, generator=g) * 0.1
    exact = F.linear(F.gelu(F.linear(x, w1, b1), approximate="tanh"), w2, b2) + x
    choices = {
        "F.linear + torch ops": Kernels(),
        "oneDNN + torch ops": Kernels(True, False, False),
        "oneDNN packed + torch ops": Kernels(True, True, False),
        "oneDNN packed + post-ops": Kernels(True, True, True),
    }
    for dtype in (torch.float32, torch.bfloat16):
        if compute_dtype(dtype, torch.device("cpu")) != dtype:
            report.add(f"MLP block, {short(dtype)}", "-", "-", None, f"no oneDNN {short(dtype)} kernels on this CPU")
            continue
        xd = x.to(dtype)
        blocks = {}
        for label, kernels in choices.items():
            fc1 = Projection([(w1.to(dtype), b1.to(dtype))], kernels, "gelu_pytorch_tanh", rows)
            fc2 = Projection([(w2.to(dtype), b2.to(dtype))], kernels, rows=rows)
            blocks[label] = lambda fc1=fc1, fc2=fc2, xd=xd: fc2(fc1(xd), residual=xd)
        with torch.inference_mode():
            for block in blocks.values():
                block()
            times, outs = interleaved(list(blocks.values()), args.repeats + 2)
        chosen = choose_kernels(torch.device("cpu"), dtype)
        label = next(k for k, v in choices.items() if v == chosen)
        t = dict(zip(blocks, times, strict=True))
        errors = {k: float((o.float() - exact).abs().max()) for k, o in zip(blocks, outs, strict=True)}
        parts = "; ".join(f"{k} {1e3 * t[k]:.1f} ms (max error {errors[k]:.1e})" for k in blocks)
        report.add(
            f"MLP block (fc1 -> GELU -> fc2 + residual), {short(dtype)}, {rows} rows",
            f"{1e3 * t[label]:.1f} ms",
            f"{1e3 * t['F.linear + torch ops']:.1f} ms",
            t["F.linear + torch ops"] / t[label],
            f"siglip runs {label}; 'transformers' column: F.linear + torch ops (the plain model); {parts}",
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
    report.metric("zero-shot ratio", t_ref / t_ours)
    report.add(
        f"{name} zero-shot job: {n} JPEG x {k} labels (s)",
        f"{t_ours:.1f}",
        f"{t_ref:.1f}",
        t_ref / t_ours,
        f"fp32 both; max score difference {worst:.1e}",
    )


def bench_embed(report: Report, folder: Path, name: str, args) -> None:
    """``siglip embed`` on JPEG files (decode and preprocess in its workers) against the model alone."""
    n, batch = (12, 4) if args.quick else (500, 16)
    dtype = auto_dtype("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        write_jpegs(images, n)
        command = [
            sys.executable,
            "-m",
            "siglip",
            "embed",
            str(images),
            "--output",
            str(Path(tmp) / "out"),
            "--model",
            str(folder),
            "--batch-size",
            str(batch),
            "--device",
            "cpu",
            "--dtype",
            short(dtype),
        ]
        out = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        rate = float(re.search(r"new at ([\d.]+) img/s", out.stderr).group(1))
        fast = siglip.optimize(siglip.AutoModel.from_pretrained(folder), dtype=dtype)
        inputs = image_inputs(folder, batch, dtype)
        with torch.inference_mode():
            seconds = best_time(lambda: fast.get_image_features(**inputs), args.repeats)
    share = rate / (batch / seconds)
    report.metric("embed share", share)
    report.add(
        f"{name} siglip embed: {n} JPEG vs the model alone (img/s)",
        f"{rate:.2f}",
        f"{batch / seconds:.2f}",
        None,
        f"'transformers' column: siglip optimized model on preprocessed tensors, {short(dtype)}, batch "
        f"{batch}; {100 * share:.0f}% of it (target >= 90%: {'yes' if share >= 0.9 else 'NO'})",
    )


def bench_cold_start(report: Report, folder: Path, name: str, args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        image = write_jpegs(Path(tmp), 1)[0]
        times = {lib: [] for lib in COLD_START}
        for _ in range(args.cold_repeats):
            for lib in COLD_START:
                times[lib].append(cold_start(lib, folder, image))
    t_ours, t_ref = min(times["siglip"]), min(times["transformers"])
    report.metric("cold start ratio", t_ref / t_ours)
    report.add(
        f"{name} cold start: fresh process, 1 image (s)",
        f"{t_ours:.1f}",
        f"{t_ref:.1f}",
        t_ref / t_ours,
        "import + load + optimize + preprocess + forward",
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
        (t_ours, t_ref), _ = interleaved(
            [lambda: ours(paths, return_tensors="pt"), lambda: ref(paths, return_tensors="pt")], args.repeats
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
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile row")
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
    args.ceilings = matmul_ceilings(n, args.repeats + 1)
    flags = cpu_flags()
    present = [f for f in FLAGS if f in flags]
    absent = [f for f in FLAGS if f not in flags]
    load = "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    machine = (
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}, siglip {siglip.__version__}"
    )
    flag_line = f"CPU flags: {' '.join(present) or '-'}; absent: {' '.join(absent) or '-'} ({load} at start)"
    ceilings = describe_ceilings(args.ceilings)
    print(f"machine: {machine}\n{flag_line}\nmatmul ceilings: {ceilings}", flush=True)
    report = Report()
    folders = build_checkpoints(workdir, args.quick)
    first = next(iter(folders))
    bench_mlp_block(report, args)
    bench_models(report, folders, args)
    bench_zero_shot(report, folders[first], first, args)
    bench_embed(report, folders[first], first, args)
    bench_cold_start(report, folders[first], first, args)
    bench_preprocessing(report, args)
    bench_loading(report, folders)

    command = "python benchmarks/run.py" + (" --quick" if args.quick else "")
    text = (
        f"# Benchmarks: siglip vs transformers, same machine, same run\n\nCommand: `{command}`\n\n"
        f"Machine: {machine}\n\n{flag_line}\n\nMatmul ceilings (best of {args.repeats + 1}): {ceilings}.\n\n"
        f"siglip rows run `siglip.optimize(model)` (what the pipeline and the commands use by default). Ratios "
        f"are transformers time / siglip time (higher is better for siglip), except peak RSS where it is "
        f"transformers / siglip memory; rows that compare siglip with itself say so. Shares of the ceiling are "
        f"images (or texts)/s x model GFLOP / the square-GEMM ceiling of the dtype siglip computes in. Best of "
        f"{args.repeats} interleaved repeats.\n\n{report.markdown()}\n\n## Targets of issue 14 in this run\n\n"
        f"{targets(report, args.ceilings)}\n"
    )
    if args.out != "-":
        write_section(Path(args.out), "run.py", text)  # the other scripts' sections stay as they are
        print(f"wrote {args.out}")
    print(json.dumps({"rows": len(report.rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
