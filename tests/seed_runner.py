"""Run the code samples of the seed documents in a fresh process, for one library (siglip or transformers).

Usage: ``python seed_runner.py SAMPLES.json LIBRARY IMAGE_SERVER_URL OUT.pkl``

Every http(s) URL is redirected to the local image server (requests, urllib and httpx alike), the hub is
offline (``HF_HUB_OFFLINE=1``, ``HF_HUB_CACHE`` set by the caller), and each sample runs in its own namespace
with REPL semantics: values of bare expressions are recorded as they would be displayed. After each sample the
printed text, the displayed values, the exception (if any), and a fingerprint of the tensors, outputs, models and
configs it created are written to OUT.pkl for the test to compare between libraries.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import pickle
import sys
import traceback
from urllib.parse import urlsplit


def redirect_urls(base: str) -> None:
    def local(url: str) -> str:
        return base + urlsplit(str(url)).path

    import urllib.request

    original_urlopen = urllib.request.urlopen

    def urlopen(request, *args, **kwargs):
        if isinstance(request, urllib.request.Request):
            request = urllib.request.Request(local(request.full_url), headers=dict(request.header_items()))
        else:
            request = local(request)
        return original_urlopen(request, *args, **kwargs)

    urllib.request.urlopen = urlopen
    try:
        import requests

        original_request = requests.Session.request
        requests.Session.request = lambda self, method, url, *a, **k: original_request(
            self, method, local(url), *a, **k
        )
    except ImportError:
        pass
    # transformers' load_image calls huggingface_hub.utils.httpx.get (an httpx-compatible module)
    modules = []
    for name in ("httpx", "httpx2"):
        try:
            modules.append(__import__(name))
        except ImportError:
            pass
    try:
        from huggingface_hub import utils as hub_utils

        modules.append(hub_utils.httpx)
    except (ImportError, AttributeError):
        pass
    for module in {id(m): m for m in modules}.values():
        original_get = module.get
        module.get = lambda url, *a, _get=original_get, **k: _get(local(url), *a, **k)


def fingerprint(value, depth: int = 0):
    """A comparable, picklable summary: tensors as float64 numpy, outputs as dicts, models by parameter shapes."""
    import numpy as np
    import torch

    if depth > 3:
        return None
    if isinstance(value, torch.Tensor):
        return (
            "tensor",
            str(value.dtype).replace("torch.", ""),
            value.detach().float().cpu().numpy().astype(np.float64),
        )
    if isinstance(value, torch.nn.Module):
        return ("module", type(value).__name__, sorted((k, tuple(v.shape)) for k, v in value.state_dict().items()))
    if hasattr(value, "to_dict") and hasattr(value, "model_type"):
        data = value.to_dict()
        return (
            "config",
            type(value).__name__,
            {k: v for k, v in data.items() if isinstance(v, (int, float, str, bool))},
        )
    if hasattr(value, "keys") and hasattr(value, "__getitem__") and not isinstance(value, dict):
        return ("mapping", {k: fingerprint(value[k], depth + 1) for k in value.keys()})
    if isinstance(value, dict):
        return ("mapping", {str(k): fingerprint(v, depth + 1) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return ("sequence", [fingerprint(v, depth + 1) for v in value])
    if isinstance(value, (int, float, str, bool)) or value is None:
        return ("value", value)
    return ("other", type(value).__name__)


def run_sample(code: str, namespace: dict) -> tuple[str, list, str | None]:
    """Exec ``code`` statement by statement; bare expressions are displayed (recorded) as in a REPL."""
    displayed = []
    printed = io.StringIO()
    tree = ast.parse(code)
    error = None
    with contextlib.redirect_stdout(printed):
        try:
            for node in tree.body:
                if isinstance(node, ast.Expr):
                    value = eval(compile(ast.Expression(node.value), "<sample>", "eval"), namespace)
                    if value is not None and not (
                        isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "print"
                    ):
                        displayed.append(fingerprint(value))
                else:
                    exec(compile(ast.Module([node], []), "<sample>", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - the test compares how each library fails
            error = f"{type(e).__name__}: {e}"
            traceback.print_exc(file=sys.stderr)
    return printed.getvalue(), displayed, error


def main() -> None:
    samples_file, library, base, out_file = sys.argv[1:5]
    redirect_urls(base)
    samples = json.loads(open(samples_file, encoding="utf-8").read())
    results = []
    for sample in samples:
        code = sample["code"]
        if library == "siglip":
            code = code.replace("from transformers.", "from siglip.").replace(
                "from transformers import", "from siglip import"
            )
        namespace = {"__name__": "__sample__"}
        exec(sample.get("prelude", ""), namespace)
        printed, displayed, error = run_sample(code, namespace)
        created = {
            name: fingerprint(value)
            for name, value in namespace.items()
            if not name.startswith("_")
            and name not in ("torch", "requests", "Image")
            and not callable(value)
            or name in ("model",)
        }
        results.append(
            {"name": sample["name"], "printed": printed, "displayed": displayed, "error": error, "created": created}
        )
        print(f"[{library}] {sample['name']}: {'error ' + error if error else 'ok'}", file=sys.stderr)
    with open(out_file, "wb") as f:
        pickle.dump(results, f)


if __name__ == "__main__":
    main()
