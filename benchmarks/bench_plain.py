"""siglip's plain models (no ``siglip.optimize``) against transformers, the same checkpoints, one run (issue 13).

The plain model is what a user trains, wraps with PEFT, hooks or exports: it must not be slower than transformers'
(ratio >= 0.95). Each row times both libraries in turn, round after round (``run.interleaved``), on the same
inputs; the ratio is transformers' best time over siglip's. The machine's matmul ceilings are measured in the same
run. On a CPU without bf16 matmul kernels both libraries' bf16 forwards run torch's slow bf16 fallback (seconds per
image at base size): the bf16 rows then use batch 1 and fewer repeats.

    python benchmarks/bench_plain.py                 # SigLIP base-patch16-224 and SigLIP2 base NaFlex-256
    python benchmarks/bench_plain.py --quick --out - # the tiny configuration (what the test runs)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run  # noqa: E402 - the shared timing, checkpoints and ceilings of benchmarks/run.py
import siglip  # noqa: E402
from bench_preprocess import cpu_name, write_section  # noqa: E402

SECTION = "bench_plain.py"


def bench(folders: dict[str, Path], ceilings: dict[str, dict], args) -> list[tuple[str, float, float]]:
    """(row, siglip per second, transformers per second) for every model, dtype and batch."""
    import transformers

    rows = []
    for name, folder in folders.items():
        for dtype in (torch.float32, torch.bfloat16):
            fast_kernels = ceilings[run.short(dtype)]["fast"]
            repeats = args.repeats if fast_kernels else 1
            ours = siglip.AutoModel.from_pretrained(folder, dtype=dtype).eval()
            ref = transformers.AutoModel.from_pretrained(folder, dtype=dtype).eval()
            batches = ([1, 4] if args.quick else [1, 8, 32]) if fast_kernels else [1]
            for batch in batches:
                inputs = run.image_inputs(folder, batch, dtype)
                with torch.inference_mode():
                    (t_ours, t_ref), _ = run.interleaved(
                        [
                            lambda: ours.get_image_features(**inputs),  # noqa: B023 - called right here
                            lambda: ref.get_image_features(**inputs).pooler_output,  # noqa: B023
                        ],
                        repeats,
                    )
                rows.append((f"{name} image emb/s, {run.short(dtype)}, batch {batch}", batch / t_ours, batch / t_ref))
            text_batch = 32 if fast_kernels else 4
            length = ours.config.text_config.max_position_embeddings
            ids = torch.randint(0, 1000, (text_batch, length), generator=torch.Generator().manual_seed(0))
            with torch.inference_mode():
                (t_ours, t_ref), _ = run.interleaved(
                    [
                        lambda: ours.get_text_features(input_ids=ids),  # noqa: B023
                        lambda: ref.get_text_features(input_ids=ids).pooler_output,  # noqa: B023
                    ],
                    repeats,
                )
            rows.append(
                (f"{name} text emb/s, {run.short(dtype)}, batch {text_batch}", text_batch / t_ours, text_batch / t_ref)
            )
    return rows


def report(rows: list[tuple[str, float, float]], ceilings: dict[str, dict], command: str) -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    flags = sorted(run.cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni"})
    lines = [
        "## Plain models against transformers (issue 13)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, flags {' '.join(flags) or 'none of the AVX-512/AMX set'}; "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); load average at the end {load}.",
        f"Ceilings in this run: {run.describe_ceilings(ceilings)}.",
        "",
        "| measurement | siglip plain | transformers | ratio (>= 0.95) |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {row} | {ours:.2f} | {ref:.2f} | {ours / ref:.2f}x |" for row, ours, ref in rows]
    ratios = [ours / ref for _, ours, ref in rows]
    lines += ["", f"Lowest ratio {min(ratios):.2f}x, median {sorted(ratios)[len(ratios) // 2]:.2f}x.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tiny configuration, one repeat (for the tests)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per row (best is kept; default 5)")
    parser.add_argument("--workdir", default=None, help="where the checkpoints are built (reused between runs)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"), help="markdown file to update, or - for stdout")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 5)
    workdir = Path(
        args.workdir or Path(tempfile.gettempdir()) / ("siglip-bench-quick" if args.quick else "siglip-bench")
    )
    workdir.mkdir(parents=True, exist_ok=True)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    ceilings = run.matmul_ceilings(256 if args.quick else 2048, args.repeats + 1)
    folders = run.build_checkpoints(workdir, args.quick)
    command = "python benchmarks/bench_plain.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip()
    text = report(bench(folders, ceilings, args), ceilings, command)
    if args.out == "-":
        print(text)
    else:
        write_section(Path(args.out), SECTION, text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
