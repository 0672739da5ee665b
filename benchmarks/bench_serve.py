"""`siglip serve` under load: concurrent clients sending single-image embedding requests, the same server with
dynamic batching and with ``--max-batch-size 1``, measured in one run on this machine.

    python benchmarks/bench_serve.py                                # base-size SigLIP, 60 s per setting
    python benchmarks/bench_serve.py --quick --duration 2 --out -   # tiny model, seconds (the test suite's run)

Builds a random-weight checkpoint (``--size base``: hidden 768, 12 layers, 224 px, patch 16, as
``benchmarks/run.py``; ``--size small``: hidden 384, 12 layers, 224 px, patch 32), writes 64 generated 640x480
JPEGs (8 with ``--quick``) and base64-encodes them, then for each setting starts ``python -m siglip serve`` on a
free loopback port, warms it up and runs ``--clients`` client tasks (one process, asyncio + httpx, one
connection each) that each send one image per request, back to back, for ``--duration`` seconds. Reported:
requests/s, p50 / p99 latency, errors, and the mean batch size from the server's /metrics; then the model alone
in this process at batch 1 and at the batch size: what batching gains in the model itself on this machine.
Prints a markdown section (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # builders.py: hub-like checkpoint folders

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bench_preprocess import cpu_name, write_jpegs  # noqa: E402

from builders import write_checkpoint  # noqa: E402

SIZES = {
    "base": (
        "SigLIP base-patch16-224 (random weights)",
        dict(
            vocab_size=32000,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=64,
        ),
        dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        224,
        16,
    ),
    "small": (
        "SigLIP small-patch32-224 (ViT-S/32 shape, random weights)",
        dict(
            vocab_size=32000,
            hidden_size=384,
            intermediate_size=1536,
            num_hidden_layers=12,
            num_attention_heads=6,
            max_position_embeddings=64,
        ),
        dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6),
        224,
        32,
    ),
    "tiny": ("SigLIP tiny (random weights)", {}, {}, 32, 8),
}


def build_checkpoint(workdir: Path, size: str) -> tuple[str, Path]:
    name, text, vision, image_size, patch_size = SIZES[size]
    folder = workdir / f"serve-{size}"
    if not (folder / "model.safetensors").is_file():
        write_checkpoint(folder, "siglip", text=text, vision=vision, image_size=image_size, patch_size=patch_size)
    return name, folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, options: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "siglip", "serve", "--model", str(model), "--port", str(port), "--quiet", *options],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the server was not ready within 300 s:\n{log.read_text()[-3000:]}")


async def load(url: str, images: list[str], clients: int, warmup: float, duration: float) -> dict[str, float]:
    """``clients`` tasks sending one image per request back to back: the requests that finish within the
    ``duration`` seconds after the warm-up count (successes with their latencies, and errors)."""
    latencies: list[float] = []
    errors = 0
    start = time.monotonic() + warmup
    stop = start + duration

    async def client(index: int, session: httpx.AsyncClient) -> None:
        nonlocal errors
        i = index
        while (sent := time.monotonic()) < stop:
            body = {"input": images[i % len(images)], "modality": "image"}
            i += clients
            try:
                response = await session.post("/v1/embeddings", json=body)
                ok = response.status_code == 200 and len(response.json()["data"]) == 1
            except httpx.HTTPError:
                ok = False
            done = time.monotonic()
            if start <= done <= stop:
                if ok:
                    latencies.append(done - sent)
                else:
                    errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as session:
        await asyncio.gather(*(client(i, session) for i in range(clients)))
    ms = np.array(latencies or [float("nan")]) * 1000
    return {
        "requests": len(latencies),
        "rps": len(latencies) / duration,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "errors": errors,
    }


def mean_batch(url: str) -> float:
    values = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            if (
                sample.name in ("siglip_batch_size_sum", "siglip_batch_size_count")
                and sample.labels.get("modality") == "image"
            ):
                values[sample.name] = sample.value
    return values.get("siglip_batch_size_sum", 0) / max(values.get("siglip_batch_size_count", 0), 1)


def model_alone(folder: Path, paths: list[str], batch: int, seconds: float) -> tuple[float, float]:
    """Images/s of the model itself in this process (``embed_pixels``, no HTTP) at batch 1 and at ``batch``, timed
    alternately for ``seconds``: what batching gains in the model itself, on this machine at this moment."""
    from PIL import Image

    import siglip

    pipe = siglip.pipeline("zero-shot-image-classification", model=folder)
    many = pipe.preprocess_images([Image.open(paths[i % len(paths)]).convert("RGB") for i in range(batch)])
    one = {key: value[:1] for key, value in many.items()}
    rates: dict[int, list[float]] = {1: [], batch: []}
    stop = time.monotonic() + seconds
    for inputs in (one, many, one, many):  # warm-up
        pipe.embed_pixels(inputs)
    while time.monotonic() < stop or not rates[batch]:
        for inputs, n in ((one, 1), (many, batch)):
            started = time.perf_counter()
            pipe.embed_pixels(inputs)
            rates[n].append(n / (time.perf_counter() - started))
    return float(np.median(rates[1])), float(np.median(rates[batch]))


def machine() -> str:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile") if f in flags]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load_avg = "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return (
        f"{cpu_name()} ({', '.join(simd) or 'no AVX2/AVX-512/AMX'}), {cores} usable cores, {load_avg} at the "
        f"start; torch {torch.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tiny model (seconds; for the tests)")
    parser.add_argument(
        "--size", choices=sorted(SIZES), default=None, help="model size (default: base; tiny with --quick)"
    )
    parser.add_argument("--model", default=None, help="serve this checkpoint folder instead of building one")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default: 16)")
    parser.add_argument("--duration", type=float, default=60, help="measured seconds per setting (default: 60)")
    parser.add_argument("--warmup", type=float, default=5, help="unmeasured seconds first (default: 5)")
    parser.add_argument("--max-batch-size", type=int, default=16, help="batching setting (default: 16)")
    parser.add_argument("--max-wait-ms", type=float, default=10, help="batching setting (default: 10)")
    parser.add_argument("--workdir", default=None, help="where the checkpoint is built (reused between runs)")
    parser.add_argument("--out", default="-", help="also write the markdown section to this file (- for none)")
    args = parser.parse_args(argv)
    size = args.size or ("tiny" if args.quick else "base")
    workdir = Path(args.workdir or Path(tempfile.gettempdir()) / "siglip-bench")
    workdir.mkdir(parents=True, exist_ok=True)
    about = machine()
    name, folder = (args.model, Path(args.model)) if args.model else build_checkpoint(workdir, size)
    paths = write_jpegs(Path(tempfile.mkdtemp(dir=workdir)), 8 if args.quick else 64)
    images = [base64.b64encode(Path(p).read_bytes()).decode() for p in paths]
    settings = [
        (
            f"dynamic batching (--max-batch-size {args.max_batch_size} --max-wait-ms {args.max_wait_ms:g})",
            ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)],
        ),
        ("no batching (--max-batch-size 1)", ["--max-batch-size", "1"]),
    ]
    rows = []
    for label, options in settings:
        # Both settings get a long request timeout: on a slow machine the unbatched server's queue would otherwise
        # answer 504 (and its throughput would count fewer requests than it can serve).
        proc, url = start_server(folder, [*options, "--request-timeout", "600"], workdir / "serve.log")
        try:
            result = asyncio.run(load(url, images, args.clients, args.warmup, args.duration))
            result["batch"] = mean_batch(url)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
        if code != 0:
            raise SystemExit(f"the server exited with {code} after SIGTERM")
        rows.append((label, result))
        print(f"{label}: {result}", file=sys.stderr)
    alone = model_alone(folder, paths, args.max_batch_size, args.duration / 2)
    about += ", load average {:.2f} {:.2f} {:.2f} at the end".format(*os.getloadavg())
    base_rps = rows[-1][1]["rps"]
    command = "python benchmarks/bench_serve.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"## `siglip serve`: {args.clients} concurrent clients, single-image embedding requests",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {about}. Model: {name}, float32. Images: 640x480 JPEG, base64 in JSON. Each setting: "
        f"{args.warmup:g} s warm-up, then {args.duration:g} s measured (requests/s: successful responses in that "
        "window); `--request-timeout 600`; clients and server share the machine.",
        "",
        "| setting | requests/s | p50 latency (ms) | p99 latency (ms) | errors | mean batch | throughput vs batch 1 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in rows:
        ratio = r["rps"] / base_rps if base_rps else float("nan")
        lines.append(
            f"| {label} | {r['rps']:.2f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['errors']} | "
            f"{r['batch']:.1f} | {ratio:.2f}x |"
        )
    lines += [
        "",
        f"The model alone right after, in one process without HTTP (`embed_pixels` on preprocessed images, "
        f"{args.duration / 2:g} s, median): {alone[0]:.2f} images/s at batch 1, {alone[1]:.2f} at batch "
        f"{args.max_batch_size} ({alone[1] / alone[0]:.2f}x).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out != "-":
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
