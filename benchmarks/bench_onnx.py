"""ONNX Runtime against PyTorch, measured in one run on this machine: image and text embeddings/s, float32 and int8.

    python benchmarks/bench_onnx.py                     # base-size models; writes its section of RESULTS.md
    python benchmarks/bench_onnx.py --quick --out -     # a tiny model, seconds (what the test suite runs)

Uses run.py's random-weight checkpoints (SigLIP base-patch16-224 and SigLIP2 base NaFlex at 256 patches; ``--quick``:
the tiny SigLIP only), exports each with ``siglip.export_onnx`` in float32 and with ``quantize="int8"`` (exports
found in ``--workdir`` are reused), and times on identical inputs, keeping the best of two rounds of ``--repeats``:

* ONNX Runtime float32 and int8 (CPU provider, as many intra-op threads as torch uses);
* siglip's PyTorch model as ``siglip.pipeline`` runs it (float32);
* transformers' model (float32), the reference of the ratios.

It also reports the int8 embeddings' cosine to PyTorch float32 (the minimum over the batch), the float32 graphs' max
abs difference to PyTorch, the graph sizes and the export times.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import siglip  # noqa: E402
from bench_preprocess import cpu_name, write_section  # noqa: E402
from run import build_checkpoints, image_inputs  # noqa: E402
from siglip.onnx_backend import EXPORT_INFO_FILE, OnnxModel  # noqa: E402

SECTION = "bench_onnx.py"  # its part of RESULTS.md
BACKENDS = ("ORT fp32", "ORT int8", "siglip PyTorch", "transformers")


def best_times(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best time of each function over two rounds (in opposite orders, so drift on a shared machine hits all alike).

    Each function runs in a block (a warm-up call, then ``repeats`` timed calls) rather than alternating call by
    call: ONNX Runtime's and torch's thread pools spin for a while after a call, and alternating them in one process
    makes each pay for the other's spinning.
    """
    times: dict[str, list[float]] = {name: [] for name in functions}
    for order in (list(functions), list(reversed(functions))):
        for name in order:
            functions[name]()
            for _ in range(repeats):
                start = time.perf_counter()
                functions[name]()
                times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def export(checkpoint: Path, workdir: Path, quantize: str | None) -> tuple[Path, float | None]:
    """The export folder (built now, with its wall time, or reused from an earlier run: time None)."""
    folder = workdir / f"{checkpoint.name}-onnx-{quantize or 'float32'}"
    if (folder / EXPORT_INFO_FILE).is_file():
        return folder, None
    start = time.perf_counter()
    siglip.export_onnx(checkpoint, folder, quantize=quantize)
    return folder, time.perf_counter() - start


class Table:
    def __init__(self) -> None:
        self.rows: list[str] = []

    def add(self, what: str, rates: dict[str, float], unit: str, note: str = "") -> None:
        ref, ours = rates["transformers"], rates["siglip PyTorch"]
        cells = [f"{rates[name]:.2f}" for name in BACKENDS]
        ratios = [
            f"{rates['ORT fp32'] / ref:.2f}x",
            f"{rates['ORT int8'] / ref:.2f}x",
            f"{rates['ORT fp32'] / ours:.2f}x",
            f"{rates['ORT int8'] / ours:.2f}x",
        ]
        self.rows.append(f"| {what} ({unit}) | " + " | ".join(cells + ratios) + f" | {note} |")
        print(
            f"  {what:<40} " + "  ".join(f"{n} {c}" for n, c in zip(BACKENDS, cells, strict=True)) + f"  {note}",
            flush=True,
        )

    def markdown(self) -> str:
        head = (
            "| measurement | ORT fp32 | ORT int8 | siglip PyTorch | transformers | ORT fp32 ÷ transformers | "
            "ORT int8 ÷ transformers | ORT fp32 ÷ siglip | ORT int8 ÷ siglip | note |"
        )
        return "\n".join([head, "|---" + "|---:" * 8 + "|---|", *self.rows])


def bench_model(table: Table, name: str, checkpoint: Path, workdir: Path, args) -> list[str]:
    import onnxruntime as ort
    import transformers

    notes = []
    folders = {}
    for quantize in (None, "int8"):
        folders[quantize], seconds = export(checkpoint, workdir, quantize)
        sizes = ", ".join(
            f"{p.name} {p.stat().st_size / 2**20:.1f} MiB" for p in sorted(folders[quantize].glob("*.onnx"))
        )
        took = f"exported and checked in {seconds:.0f} s" if seconds is not None else "reused"
        notes.append(f"{name} {quantize or 'float32'}: {sizes} ({took})")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    runtimes = {
        "ORT fp32": OnnxModel(folders[None], session_options=options),
        "ORT int8": OnnxModel(folders["int8"], session_options=options),
    }
    pipe_model = siglip.pipeline("zero-shot-image-classification", model=str(checkpoint)).model
    reference = transformers.AutoModel.from_pretrained(checkpoint).eval()

    def embeddings(method: str, inputs: dict[str, torch.Tensor]) -> dict[str, Callable[[], object]]:
        calls = {label: (lambda m=m: getattr(m, method)(**inputs)) for label, m in runtimes.items()}
        calls["siglip PyTorch"] = lambda: getattr(pipe_model, method)(**inputs)
        calls["transformers"] = lambda: getattr(reference, method)(**inputs)
        return calls

    def agreement(method: str, inputs: dict[str, torch.Tensor]) -> str:
        with torch.inference_mode():
            want = getattr(pipe_model, method)(**inputs).float()
        fp32 = runtimes["ORT fp32"].__getattribute__(method)(**inputs)
        int8 = runtimes["ORT int8"].__getattribute__(method)(**inputs)
        cosine = float(F.cosine_similarity(F.normalize(int8, dim=-1), F.normalize(want, dim=-1)).min())
        return f"int8 cosine to fp32 {cosine:.4f}; fp32 max abs diff {float((fp32 - want).abs().max()):.1e}"

    for batch in [1, 4] if args.quick else [1, 8]:
        inputs = image_inputs(checkpoint, batch, torch.float32)
        with torch.inference_mode():
            best = best_times(embeddings("get_image_features", inputs), args.repeats)
        table.add(
            f"{name} image embeddings, batch {batch}",
            {k: batch / t for k, t in best.items()},
            "img/s",
            agreement("get_image_features", inputs),
        )
    text_batch = 8 if args.quick else 32
    length = pipe_model.config.text_config.max_position_embeddings
    ids = {"input_ids": torch.randint(0, 1000, (text_batch, length), generator=torch.Generator().manual_seed(0))}
    with torch.inference_mode():
        best = best_times(embeddings("get_text_features", ids), args.repeats)
    table.add(
        f"{name} text embeddings, batch {text_batch}",
        {k: text_batch / t for k, t in best.items()},
        "text/s",
        agreement("get_text_features", ids),
    )
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tiny SigLIP only, one repeat (for the tests)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (best is kept)")
    parser.add_argument("--workdir", default=None, help="where checkpoints and exports are built (reused between runs)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"), help="markdown file to update, or - for none")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    workdir = Path(
        args.workdir or Path(tempfile.gettempdir()) / ("siglip-bench-quick" if args.quick else "siglip-bench")
    )
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    import onnxruntime as ort
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    load = f"load average {os.getloadavg()[0]:.1f} at the start, " if hasattr(os, "getloadavg") else ""
    machine = (
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"onnxruntime {ort.__version__} ({torch.get_num_threads()} intra-op threads), transformers "
        f"{transformers.__version__}, siglip {siglip.__version__}"
    )
    print(f"machine: {machine}")
    checkpoints = build_checkpoints(workdir, args.quick)
    if args.quick:
        checkpoints = dict(list(checkpoints.items())[:1])
    table, notes = Table(), []
    for name, folder in checkpoints.items():
        notes += bench_model(table, name, folder, workdir, args)
    if load:
        machine += f" ({load}{os.getloadavg()[0]:.1f} at the end)"
    command = "python benchmarks/bench_onnx.py" + (" --quick" if args.quick else "")
    section = (
        f"## ONNX Runtime against PyTorch (issue 16)\n\nCommand: `{command}` ({time.strftime('%Y-%m-%d')})\n\n"
        f"Machine: {machine}\n\nEmbeddings per second, best of 2 x {args.repeats} repeats, float32 inputs "
        "from the checkpoint's own processor (NaFlex: 256 patches). ORT int8 is `--quantize int8` (dynamic "
        "quantization: int8 weights per channel in 7 bits, activations quantized at run time); cosines are to "
        "siglip's PyTorch float32 embeddings. Ratios above 1 mean ONNX Runtime is faster.\n\n"
        f"{table.markdown()}\n\nExports: " + "; ".join(notes) + ".\n"
    )
    print(section)
    if args.out != "-":
        write_section(Path(args.out), SECTION, section)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
