"""The HTTP service behind ``siglip serve``: embeddings, zero-shot classification and store search.

This module owns:

* ``ServeConfig``: every limit of the service, with its default;
* ``load_model``: the one place the served pipeline is built (``siglip.pipeline``, so results are the pipeline's);
* ``Batcher``: the thread that owns the model. Requests queue as jobs; the oldest job waits at most ``max_wait``
  for others of its kind (texts with texts, images with images) to fill a batch of ``max_batch_size`` items,
  then they run in one forward pass. A job whose client left or timed out is withdrawn before it runs;
* request validation (``parse_embeddings``, ``parse_classify``, ``parse_search``) and ``ApiError``, the
  OpenAI-style JSON error that names the field and the problem;
* image inputs (``decode_image``): base64 and ``data:`` URIs through ``image_processing``'s decoder (with its
  decompression-bomb refusal) and a per-image pixel limit; http(s) URLs only when allowed, fetched by
  ``fetch_url`` from public addresses only. A request never makes the server open a path on its own disk;
* ``create_app`` (FastAPI routes, auth, metrics) and ``serve`` (uvicorn, draining in-flight requests on SIGTERM).

The event loop never runs the model: JSON parsing, image decoding, preprocessing and response rendering run in a
thread pool, and every forward pass runs on the batcher's thread. FastAPI, uvicorn and prometheus_client are the
``serve`` extra and are imported only by the functions that need them.
"""

import asyncio
import base64
import binascii
import hmac
import http.client
import io
import ipaddress
import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at run time.
if TYPE_CHECKING:  # torch and numpy load with the model, not when the CLI builds its parser
    import torch

log = logging.getLogger("siglip")

SERVE_EXTRA = "pip install 'siglip[serve]'"
MAX_TOP_K = 1000  # results per search request
MAX_REDIRECTS = 3  # followed for URL inputs, each re-checked
LABEL_CACHE_SIZE = 64  # (labels, template) sets whose embeddings are kept; the pipeline's own cache is unbounded
MODEL_ROUTES = ("/v1/embeddings", "/v1/classify", "/v1/search")
ROUTES = MODEL_ROUTES + (
    "/v1/models",
    "/health",
    "/metrics",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
)


def require_serve_extra() -> None:
    """Raise an ImportError that names the extra when FastAPI, uvicorn or prometheus_client is missing."""
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ImportError(f"siglip serve needs the serve extra: {SERVE_EXTRA} ({e})") from None


@dataclass
class ServeConfig:
    """What ``siglip serve`` runs and the limits it enforces (the CLI flags of the same names)."""

    model: str
    store: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    optimize: bool = True  # run siglip.optimize's inference twin (--no-optimize: the plain model)
    max_batch_size: int = 32  # items per forward pass
    max_wait_ms: float = 10.0  # how long the oldest queued request waits for its batch to fill
    max_queue: int = 256  # requests admitted at once (being read, decoded or waiting for the model); then 503
    max_items: int = 64  # texts or images per request
    max_labels: int = 256  # candidate_labels per classify request
    max_text_chars: int = 4096  # per text, label and template: bounds tokenizer work (the model reads <= 64 tokens)
    max_image_pixels: int = 40_000_000  # per decoded image, checked from its header before decoding
    max_body_bytes: int = 16 * 2**20  # request body, counted while reading; also the most a URL may send
    request_timeout: float = 30.0  # seconds from arrival to response; also bounds URL downloads
    allow_urls: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        for name in (
            "max_batch_size",
            "max_queue",
            "max_items",
            "max_labels",
            "max_text_chars",
            "max_image_pixels",
            "max_body_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not 0 <= self.max_wait_ms <= 60_000:
            raise ValueError(f"--max-wait-ms must be between 0 and 60000, got {self.max_wait_ms}")
        if not 0 < self.request_timeout <= 3600:
            raise ValueError(
                f"--request-timeout must be more than 0 and at most 3600 seconds, got {self.request_timeout}"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be between 0 and 65535, got {self.port}")


def load_model(model: str, dtype: str = "auto", device: str = "auto", optimize: bool = True) -> Any:
    """The zero-shot pipeline the service runs, loaded as ``siglip classify`` loads it (device "auto": CUDA when
    available; dtype "auto": ``optimization.command_dtype``; optimized unless ``optimize=False``). Every endpoint
    computes through its methods, so results equal ``siglip.pipeline``'s."""
    from .optimization import command_dtype
    from .pipelines import pipeline

    auto = device == "auto"
    return pipeline(
        "zero-shot-image-classification",
        model=model,
        dtype=command_dtype(dtype, device, model),
        device=None if auto else device,
        device_map="auto" if auto else None,
        optimize=optimize,
    )


# ------------------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------------------

_ERROR_TYPES = {
    401: "authentication_error",
    404: "not_found_error",
    499: "client_closed_request",
    500: "server_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class ApiError(Exception):
    """A failed request: HTTP status, a message that names the problem, and the request field it concerns."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers or {}

    def body(self) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(self.status, "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.status}}


def _json_type(value: Any) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
        int: "a number",
        float: "a number",
    }
    return names.get(type(value), type(value).__name__)


# ------------------------------------------------------------------------------------------------------------
# Request validation: plain functions from the parsed JSON body to what the handlers need
# ------------------------------------------------------------------------------------------------------------

_REQUIRED = object()


def _field(body: dict[str, Any], name: str, kinds: tuple[type, ...], what: str, default: Any = _REQUIRED) -> Any:
    """``body[name]`` when it has one of ``kinds`` (bool is never an int here); ``default`` when absent or null."""
    value = body.get(name)
    if value is None:
        if default is _REQUIRED:
            raise ApiError(400, f"{name} is required", name)
        return default
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ApiError(400, f"{name} must be {what}, got {_json_type(value)}", name)
    return value


def _check_fields(body: dict[str, Any], accepted: Sequence[str]) -> None:
    unknown = sorted(set(body) - set(accepted))
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}; this endpoint takes {', '.join(accepted)}", unknown[0])


def _string_list(body: dict[str, Any], name: str, max_items: int) -> tuple[list[str], list[str], bool]:
    """A string or a non-empty list of strings: (items, the param name of each item, given as a single string?)."""
    value = _field(body, name, (str, list), "a string or an array of strings")
    if isinstance(value, str):
        return [value], [name], True
    if not value:
        raise ApiError(400, f"{name} is an empty array: give at least one item", name)
    if len(value) > max_items:
        raise ApiError(
            400, f"{name} has {len(value)} items, more than this server's limit of {max_items} (--max-items)", name
        )
    for i, item in enumerate(value):
        if not isinstance(item, str):
            hint = " (token ids are not accepted: send text)" if isinstance(item, (int, list)) else ""
            raise ApiError(400, f"{name}[{i}] must be a string, got {_json_type(item)}{hint}", f"{name}[{i}]")
    return value, [f"{name}[{i}]" for i in range(len(value))], False


def _check_text(text: str, param: str, max_chars: int, allow_empty: bool = False) -> None:
    if not text and not allow_empty:
        raise ApiError(400, f"{param} is an empty string", param)
    if len(text) > max_chars:
        raise ApiError(
            400,
            f"{param} has {len(text)} characters, more than this server's limit of {max_chars} (--max-text-chars)",
            param,
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{param} is not valid Unicode (it holds a lone surrogate)", param) from None


def _modality(body: dict[str, Any]) -> str:
    modality = _field(body, "modality", (str,), '"text" or "image"', "text")
    if modality not in ("text", "image"):
        raise ApiError(400, f'modality must be "text" or "image", got {modality!r}', "modality")
    return modality


@dataclass
class EmbeddingsCall:
    inputs: list[str]
    params: list[str]
    modality: str
    encoding_format: str
    normalize: bool


def parse_embeddings(body: dict[str, Any], config: ServeConfig, model_id: str, dim: int) -> EmbeddingsCall:
    """``POST /v1/embeddings``: OpenAI's request plus ``modality`` and ``normalize``."""
    _check_fields(body, ("input", "model", "modality", "encoding_format", "normalize", "dimensions", "user"))
    model = _field(body, "model", (str,), "a string", model_id)
    if model != model_id:
        raise ApiError(
            404, f"model {model!r} is not served here; this server serves {model_id!r} (GET /v1/models)", "model"
        )
    dimensions = _field(body, "dimensions", (int,), "an integer", dim)
    if dimensions != dim:
        raise ApiError(
            400, f"dimensions={dimensions} is not available: this model's embeddings have {dim}", "dimensions"
        )
    _field(body, "user", (str,), "a string", None)
    encoding = _field(body, "encoding_format", (str,), '"float" or "base64"', "float")
    if encoding not in ("float", "base64"):
        raise ApiError(400, f'encoding_format must be "float" or "base64", got {encoding!r}', "encoding_format")
    normalize = _field(body, "normalize", (bool,), "true or false", True)
    modality = _modality(body)
    inputs, params, _ = _string_list(body, "input", config.max_items)
    for text, param in zip(inputs, params, strict=True):
        if modality == "text":
            _check_text(text, param, config.max_text_chars)
        elif not text:
            raise ApiError(400, f"{param} is an empty string", param)
    return EmbeddingsCall(inputs, params, modality, encoding, normalize)


@dataclass
class ClassifyCall:
    images: list[str]
    params: list[str]
    single: bool
    labels: list[str]
    template: str
    sentences: list[str]
    top_k: int | None


def parse_classify(body: dict[str, Any], config: ServeConfig) -> ClassifyCall:
    """``POST /v1/classify``: the pipeline's arguments (``image``, ``candidate_labels``, ``hypothesis_template``,
    ``top_k``), images as base64 / data URIs (or URLs when allowed)."""
    from .pipelines import DEFAULT_TEMPLATE, check_labels

    _check_fields(body, ("image", "candidate_labels", "hypothesis_template", "top_k"))
    images, params, single = _string_list(body, "image", config.max_items)
    labels = _field(body, "candidate_labels", (list, str), "an array of strings")
    template = _field(body, "hypothesis_template", (str,), "a string", DEFAULT_TEMPLATE)
    top_k = _field(body, "top_k", (int,), "a positive integer", None)
    if top_k is not None and top_k < 1:
        raise ApiError(400, f"top_k must be a positive integer, got {top_k}", "top_k")
    try:
        labels = check_labels(labels, template)
    except ValueError as e:
        param = "hypothesis_template" if str(e).startswith("hypothesis_template") else "candidate_labels"
        raise ApiError(400, str(e), param) from None
    if len(labels) > config.max_labels:
        raise ApiError(
            400,
            f"candidate_labels has {len(labels)} labels, more than this server's limit of "
            f"{config.max_labels} (--max-labels)",
            "candidate_labels",
        )
    for i, label in enumerate(labels):
        _check_text(label, f"candidate_labels[{i}]", config.max_text_chars, allow_empty=True)
    _check_text(template, "hypothesis_template", config.max_text_chars)
    try:
        sentences = [template.format(label) for label in labels]  # as ZeroShotImageClassificationPipeline does
    except (IndexError, KeyError, ValueError) as e:
        raise ApiError(
            400,
            f"hypothesis_template {template!r} can't be filled with a label: it must hold one "
            f"'{{}}' and no other replacement field ({type(e).__name__}: {e})",
            "hypothesis_template",
        ) from None
    for image, param in zip(images, params, strict=True):
        if not image:
            raise ApiError(400, f"{param} is an empty string", param)
    return ClassifyCall(images, params, single, labels, template, sentences, top_k)


@dataclass
class SearchCall:
    query: str
    modality: str
    top_k: int


def parse_search(body: dict[str, Any], config: ServeConfig) -> SearchCall:
    """``POST /v1/search``: a text query, or an image query (base64 / data URI / allowed URL)."""
    _check_fields(body, ("query", "modality", "top_k"))
    query = _field(body, "query", (str,), "a string")
    modality = _modality(body)
    if modality == "text":
        _check_text(query, "query", config.max_text_chars)
    elif not query:
        raise ApiError(400, "query is an empty string", "query")
    top_k = _field(body, "top_k", (int,), "a positive integer", 10)
    if not 1 <= top_k <= MAX_TOP_K:
        raise ApiError(400, f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}", "top_k")
    return SearchCall(query, modality, top_k)


# ------------------------------------------------------------------------------------------------------------
# Image inputs: base64 / data URIs, and URLs from public addresses only
# ------------------------------------------------------------------------------------------------------------


def _address_problem(address: str) -> str | None:
    """Why an IP address may not be fetched from (None when it is a public unicast address)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for problem in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(ip, f"is_{problem}"):
            return f"a {problem.replace('_', '-')} address"
    if not ip.is_global:
        return "not a public address"
    return None


def _public_address(host: str, port: int, url: str) -> str:
    """Resolve ``host`` and return one of its addresses, refusing the URL if any of them is not public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ValueError(f"could not download {url}: the host name does not resolve ({e})") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        problem = _address_problem(address)
        if problem:
            raise ValueError(f"refused to download {url}: {host} resolves to {address}, {problem}")
    return addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to an address checked beforehand, not to whatever the host name resolves to a moment later."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float):
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)  # certificate checked for the host name


def fetch_url(url: str, max_bytes: int, timeout: float) -> bytes:
    """The body of an http(s) URL on a public address, at most ``max_bytes``, within ``timeout`` seconds overall.

    Every hop of a redirect is resolved and checked again, and the connection goes to the checked address (a
    host name that resolves differently a moment later can't redirect it). Raises ValueError naming the URL.
    """
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"could not download {url}: only http(s) URLs with a host are accepted")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"could not download {url}: invalid port") from None
        address = _public_address(parts.hostname, port, url)
        kind = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        connection = kind(parts.hostname, port, address, timeout=max(deadline - time.monotonic(), 0.01))
        try:
            connection.request(
                "GET",
                urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, "")),
                headers={"Accept": "image/*", "User-Agent": "siglip-serve"},
            )
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urllib.parse.urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise ValueError(f"could not download {url}: HTTP {response.status} {response.reason}")
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ValueError(f"could not download {url}: {declared} bytes, more than the limit of {max_bytes}")
            chunks, total = [], 0
            while chunk := response.read(65536):
                total += len(chunk)
                if total > max_bytes:
                    raise ValueError(f"could not download {url}: more than the limit of {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise ValueError(f"could not download {url}: not complete within {timeout:g} s")
                chunks.append(chunk)
            return b"".join(chunks)
        except (OSError, http.client.HTTPException) as e:
            why = f"no answer within {timeout:g} s" if isinstance(e, TimeoutError) else f"{type(e).__name__}: {e}"
            raise ValueError(f"could not download {url}: {why}") from None
        finally:
            connection.close()
    raise ValueError(f"could not download {url}: more than {MAX_REDIRECTS} redirects")


def _base64_bytes(value: str, param: str) -> bytes:
    if value.startswith("data:"):
        header, comma, payload = value.partition(",")
        if not comma or not header.endswith(";base64"):
            raise ApiError(400, f"{param}: a data: URI must carry base64 data (data:image/png;base64,...)", param)
    else:
        payload = value
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            400,
            f"{param}: not a base64 image or data: URI (invalid base64; this server never reads files by path)",
            param,
        ) from None
    if not data:
        raise ApiError(400, f"{param}: the image data is empty", param)
    return data


def decode_image(value: str, param: str, config: ServeConfig, timeout: float) -> Any:
    """An upright RGB ``PIL.Image`` from a request string: base64, a ``data:`` URI, or an http(s) URL when the
    server allows URLs. Any other string is a 400: it is never opened as a path."""
    from PIL import Image

    from .image_io import ImageLoadError, load_image_bytes

    if value.startswith(("http://", "https://")):
        if not config.allow_urls:
            raise ApiError(
                400,
                f"{param}: image URLs are not accepted by this server (it was started without "
                "--allow-urls); send the image as base64 or a data: URI",
                param,
            )
        try:
            data = fetch_url(value, config.max_body_bytes, min(timeout, 30.0))
        except ValueError as e:
            raise ApiError(400, f"{param}: {e}", param) from None
    else:
        data = _base64_bytes(value, param)
    try:
        with Image.open(io.BytesIO(data)) as probe:  # the header only: nothing is decoded yet
            width, height = probe.size
    except Image.DecompressionBombError as e:  # over twice PIL.Image.MAX_IMAGE_PIXELS
        raise ApiError(
            400,
            f"{param}: refused as a possible decompression bomb ({e}); this server's limit is "
            f"{config.max_image_pixels} pixels (--max-image-pixels)",
            param,
        ) from None
    except Exception:  # noqa: BLE001 - load_image_bytes below names what is wrong with the data
        width = height = 0
    if width * height > config.max_image_pixels:
        raise ApiError(
            400,
            f"{param}: the image is {width}x{height} = {width * height} pixels, more than this "
            f"server's limit of {config.max_image_pixels} (--max-image-pixels)",
            param,
        )
    try:
        return load_image_bytes(data, param)
    except ImageLoadError as e:
        raise ApiError(400, str(e), param) from None
    except Exception as e:  # noqa: BLE001 - a malformed EXIF block and the like: still the client's image
        raise ApiError(400, f"{param}: could not read the image ({type(e).__name__}: {e})", param) from None


# ------------------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------------------


class Metrics:
    """The Prometheus series of one service, in their own registry."""

    def __init__(self, queue_depth: Callable[[str], int], in_flight: Callable[[], int], loaded: Callable[[], bool]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()  # this service's series only
        r = self.registry
        self.requests = Counter("siglip_requests", "HTTP requests answered", ["route", "code"], registry=r)
        self.errors = Counter(
            "siglip_request_errors", "HTTP requests answered with a 4xx or 5xx status", ["route", "code"], registry=r
        )
        self.latency = Histogram(
            "siglip_request_duration_seconds",
            "Time from request to response",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.batch_size = Histogram(
            "siglip_batch_size",
            "Items per forward pass",
            ["modality"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.forward = Histogram(
            "siglip_forward_duration_seconds",
            "Time of one forward pass",
            ["modality"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.items = Counter("siglip_items", "Texts and images embedded", ["modality"], registry=r)
        self.dropped = Counter(
            "siglip_dropped_items",
            "Queued items withdrawn before their forward pass because the client left or the request timed out",
            ["reason"],
            registry=r,
        )
        Gauge("siglip_model_loaded", "1 once the model is loaded", registry=r).set_function(loaded)
        depth = Gauge("siglip_queue_depth", "Items waiting for the model", ["modality"], registry=r)
        for modality in ("text", "image"):
            depth.labels(modality).set_function(lambda m=modality: queue_depth(m))
        Gauge(
            "siglip_requests_in_flight", "Requests admitted and not yet answered (at most --max-queue)", registry=r
        ).set_function(in_flight)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# ------------------------------------------------------------------------------------------------------------
# The batcher: one thread owns the model
# ------------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Job:
    kind: str  # "text": inputs are strings; "image": per-image processor outputs
    inputs: list[Any]
    normalize: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)
    queued: bool = True


@dataclass
class Embedded:
    """One job's result: (n, D) float32 embeddings on the CPU, and the tokens of each text (empty for images)."""

    embeddings: "torch.Tensor"
    tokens: list[int]


class Batcher:
    """Runs every forward pass on one thread, batching queued jobs of the same kind.

    ``start(load)`` runs ``load()`` on that thread (so the thread that loads the model is the one that uses it),
    then serves. The oldest queued job decides the kind of the next batch; jobs of that kind join it in arrival
    order up to ``max_batch_size`` items (a larger job runs alone, in chunks). A job waits at most ``max_wait``
    seconds for the batch to fill. Jobs withdrawn before their batch starts are never computed.
    """

    def __init__(self, max_batch_size: int, max_wait: float):
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.pipe: Any = None
        self.metrics: Metrics | None = None
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._depth = {"text": 0, "image": 0}
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- called from the event loop -----------------------------------------------------------------------------
    def start(self, load: Callable[[], Any], on_failure: Callable[[BaseException], None]) -> None:
        def main() -> None:
            try:
                self.pipe = load()
            except BaseException as e:  # noqa: BLE001 - reported to the server, which exits with it
                on_failure(e)
                return
            self._serve()

        self._thread = threading.Thread(target=main, name="siglip-model", daemon=True)
        self._thread.start()

    def submit(self, kind: str, inputs: list[Any], normalize: bool) -> _Job:
        loop = asyncio.get_running_loop()
        job = _Job(kind, inputs, normalize, loop, loop.create_future())
        with self._cond:
            self._queue.append(job)
            self._depth[kind] += len(inputs)
            self._cond.notify()
        return job

    def withdraw(self, job: _Job, reason: str) -> None:
        """Take a job out of the queue if its batch has not started (it then costs no forward pass)."""
        with self._cond:
            if job.queued:
                self._queue.remove(job)
                job.queued = False
                self._depth[job.kind] -= len(job.inputs)
                if self.metrics:
                    self.metrics.dropped.labels(reason).inc(len(job.inputs))
                self._cond.notify()
        if not job.future.done():
            job.future.cancel()

    def depth(self, kind: str) -> int:
        return self._depth[kind]

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the model thread ---------------------------------------------------------------------------------------
    def _serve(self) -> None:
        while (jobs := self._next_batch()) is not None:
            try:
                results = self._forward(jobs)
            except Exception as e:  # noqa: BLE001 - an error of one batch fails its jobs, not the server
                log.exception("forward pass failed")
                results = [e] * len(jobs)
            for job, result in zip(jobs, results, strict=True):
                try:
                    job.loop.call_soon_threadsafe(_settle, job.future, result)
                except RuntimeError:  # the event loop is closed: nobody is waiting any more
                    pass

    def _next_batch(self) -> list[_Job] | None:
        with self._cond:
            while True:
                if not self._queue:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                first = self._queue[0]
                same = [job for job in self._queue if job.kind == first.kind]
                wait = first.enqueued + self.max_wait - time.monotonic()
                if sum(len(job.inputs) for job in same) < self.max_batch_size and wait > 0 and not self._stopping:
                    self._cond.wait(wait)  # for more jobs, a withdrawal or the deadline
                    continue
                batch, size = [], 0
                for job in same:
                    if batch and size + len(job.inputs) > self.max_batch_size:
                        break
                    batch.append(job)
                    size += len(job.inputs)
                for job in batch:
                    self._queue.remove(job)
                    job.queued = False
                self._depth[first.kind] -= size
                return batch

    def _forward(self, jobs: list[_Job]) -> list[Embedded]:
        import torch
        import torch.nn.functional as F

        kind, pipe, step = jobs[0].kind, self.pipe, self.max_batch_size
        items = [item for job in jobs for item in job.inputs]
        started = time.perf_counter()
        if kind == "text":
            embeddings = pipe.encode_texts(items, normalize=False, batch_size=step)
            tokens = [
                len(ids) for ids in pipe.tokenizer(items, truncation=True, max_length=pipe.text_length)["input_ids"]
            ]
        else:
            inputs = {key: torch.cat([item[key] for item in items]) for key in items[0]}
            embeddings = torch.cat(
                [
                    pipe.embed_pixels(
                        {key: value[start : start + step] for key, value in inputs.items()}, normalize=False
                    )
                    for start in range(0, len(items), step)
                ]
            )
            tokens = []
        results, start = [], 0
        for job in jobs:
            rows = embeddings[start : start + len(job.inputs)]  # float32 on the model's device, as the pipeline's
            rows = F.normalize(rows, dim=-1) if job.normalize else rows
            results.append(Embedded(rows.cpu(), tokens[start : start + len(job.inputs)]))
            start += len(job.inputs)
        if self.metrics:
            self.metrics.forward.labels(kind).observe(time.perf_counter() - started)
            for start in range(0, len(items), step):
                self.metrics.batch_size.labels(kind).observe(min(step, len(items) - start))
            self.metrics.items.labels(kind).inc(len(items))
        return results


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():  # withdrawn meanwhile
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


# ------------------------------------------------------------------------------------------------------------
# The service: model, store, limits and the work of each endpoint
# ------------------------------------------------------------------------------------------------------------


class Service:
    """State shared by the routes: the batcher (and through it the pipeline), the store, metrics and limits."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.model_id = config.model
        self.batcher = Batcher(config.max_batch_size, config.max_wait_ms / 1000)
        self.in_flight = 0
        self.metrics = Metrics(self.batcher.depth, lambda: self.in_flight, lambda: self.ready)
        self.batcher.metrics = self.metrics
        self.pool = ThreadPoolExecutor(min(8, os.cpu_count() or 1), thread_name_prefix="siglip-decode")
        self.store: Any = None  # the --store's EmbeddingStore, searched through index.search_many
        self.manifest: dict[str, Any] = {}
        self.store_key = "path"
        self.labels: OrderedDict[tuple[tuple[str, ...], str], torch.Tensor] = OrderedDict()
        self.created = int(time.time())
        self.load_error: BaseException | None = None

    @property
    def pipe(self) -> Any:
        return self.batcher.pipe

    @property
    def ready(self) -> bool:
        """The model (and the store) are loaded: the batcher has its pipeline once ``_load`` has returned it."""
        return self.batcher.pipe is not None

    @property
    def dim(self) -> int:
        return self.pipe.model.config.text_config.projection_size

    def start(self, on_failure: Callable[[BaseException], None]) -> None:
        def failed(error: BaseException) -> None:
            self.load_error = error
            on_failure(error)

        self.batcher.start(self._load, failed)

    def _load(self) -> Any:
        """Runs on the model thread: the pipeline, then the store (whose dimension must match the model's)."""
        from .store import EmbeddingStore

        started = time.perf_counter()
        pipe = load_model(self.config.model, self.config.dtype, self.config.device, self.config.optimize)
        if self.config.store:
            store = EmbeddingStore(self.config.store)
            manifest = store.read_manifest()
            rows = manifest.get("rows")
            if rows is None:  # an unfinished job's store: count its live rows (metadata only)
                rows = len(store.read_rows(store.key)[0])
            self.store, self.manifest, self.store_key = store, manifest, store.key
            dim = pipe.model.config.text_config.projection_size
            if manifest.get("dim") != dim:
                raise ValueError(
                    f"--model gives {dim}-d embeddings but the store {self.config.store} holds "
                    f"{manifest.get('dim')}-d ones"
                )
            folder = Path(self.config.model).expanduser()
            served = str(folder.resolve()) if folder.is_dir() else self.config.model
            if manifest.get("model") != served:
                log.warning(
                    "the store %s was embedded with %s, not %s: search results compare different models",
                    self.config.store,
                    manifest.get("model"),
                    served,
                )
        log.info(
            "loaded %s (%s, %s)%s in %.1fs; ready",
            self.config.model,
            pipe.device,
            pipe.dtype,
            f" and {rows} stored embeddings" if self.config.store else "",
            time.perf_counter() - started,
        )
        return pipe

    def stop(self) -> None:
        self.batcher.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- work done in the thread pool ---------------------------------------------------------------------------
    def prepare_image(self, value: str, param: str, timeout: float) -> dict[str, "torch.Tensor"]:
        """Decode one request image and preprocess it into model inputs (a batch of one)."""
        image = decode_image(value, param, self.config, timeout)
        try:
            return self.pipe.preprocess_images([image])
        except ValueError as e:  # the processor's own checks
            raise ApiError(400, f"{param}: {e}", param) from None

    def cached_labels(self, key: tuple[tuple[str, ...], str]) -> "torch.Tensor | None":
        if key in self.labels:
            self.labels.move_to_end(key)
        return self.labels.get(key)

    def remember_labels(self, key: tuple[tuple[str, ...], str], embeddings: "torch.Tensor") -> None:
        self.labels[key] = embeddings
        while len(self.labels) > LABEL_CACHE_SIZE:
            self.labels.popitem(last=False)

    def search(self, query: "torch.Tensor", top_k: int) -> list[dict[str, Any]]:
        """The stored rows nearest to a normalised query: through the store's index when it is fresh, else an exact
        search streamed over the shards (``index.search_many``, as ``siglip search``); image rows by file path."""
        from .index import search_many
        from .store import source_path

        hits = search_many(self.store, query.numpy()[None], top_k)[0]
        key = self.store_key
        show = (lambda v: source_path(self.manifest, v)) if key == "path" else (lambda v: v)
        return [{key: show(row[key]), "score": float(score)} for row, score in hits]


def render_embeddings(result: Embedded, encoding: str, model_id: str) -> bytes:
    data = []
    for index, row in enumerate(result.embeddings):
        if encoding == "base64":
            value: Any = base64.b64encode(row.numpy().astype("<f4").tobytes()).decode("ascii")
        else:
            value = row.tolist()
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = sum(result.tokens)
    return json.dumps(
        {"object": "list", "data": data, "model": model_id, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    ).encode()


def classify_results(pipe: Any, call: ClassifyCall, images: "torch.Tensor", labels: "torch.Tensor") -> bytes:
    from .pipelines import rank_labels

    results = [rank_labels(row, call.labels, call.top_k) for row in pipe.scores(images, labels)]
    return json.dumps(results[0] if call.single else results).encode()


class _Call:
    """One admitted request: its deadline, its body, its jobs on the model thread and its client's connection."""

    def __init__(self, service: Service, request: Any):
        self.service = service
        self.request = request
        self.deadline = time.monotonic() + service.config.request_timeout
        self.jobs: list[_Job] = []
        self.gone: asyncio.Task | None = None

    async def __aenter__(self) -> "_Call":
        service = self.service
        if not service.ready:
            raise ApiError(503, "the model is still loading; retry shortly", headers={"Retry-After": "1"})
        if service.in_flight >= service.config.max_queue:
            raise ApiError(
                503,
                f"the server is busy ({service.in_flight} requests queued, --max-queue "
                f"{service.config.max_queue}); retry shortly",
                headers={"Retry-After": "1"},
            )
        service.in_flight += 1
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.service.in_flight -= 1
        for job in self.jobs:  # still queued only when the handler was cancelled (a forced shutdown)
            self.service.batcher.withdraw(job, "cancelled")
        if self.gone is not None:
            self.gone.cancel()

    def timed_out(self) -> ApiError:
        limit = self.service.config.request_timeout
        return ApiError(504, f"the request took longer than this server's limit of {limit:g} s (--request-timeout)")

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    async def within(self, awaitable: Any) -> Any:
        try:
            return await asyncio.wait_for(awaitable, self.remaining())
        except asyncio.TimeoutError:
            raise self.timed_out() from None

    async def offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the thread pool, within the deadline."""
        return await self.within(asyncio.get_running_loop().run_in_executor(self.service.pool, fn, *args))

    async def read_json(self) -> dict[str, Any]:
        """The body as a JSON object; its size is counted while it arrives and reading stops past the limit."""
        from starlette.requests import ClientDisconnect

        limit = self.service.config.max_body_bytes
        too_large = ApiError(
            413, f"the request body is larger than this server's limit of {limit} bytes (--max-body-bytes)"
        )
        declared = self.request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large

        async def read() -> bytes:
            chunks, total = [], 0
            async for chunk in self.request.stream():
                total += len(chunk)
                if total > limit:
                    raise too_large
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            data = await self.within(read())
        except ClientDisconnect:
            raise ApiError(499, "the client closed the connection") from None
        if not data.strip():
            raise ApiError(400, "the request body is empty: send a JSON object")
        try:
            body = await self.offload(json.loads, data)
        except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ApiError(400, f"the request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise ApiError(400, f"the request body must be a JSON object, got {_json_type(body)}")
        return body

    async def images(self, values: Sequence[str], params: Sequence[str]) -> list[dict[str, "torch.Tensor"]]:
        """Decode and preprocess request images in parallel in the thread pool; the first bad one is the error."""
        loop, pool = asyncio.get_running_loop(), self.service.pool
        timeout = self.remaining()
        work = [
            loop.run_in_executor(pool, self.service.prepare_image, value, param, timeout)
            for value, param in zip(values, params, strict=True)
        ]
        results = await self.within(asyncio.gather(*work, return_exceptions=True))
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    async def embed(self, *work: tuple[str, list[Any], bool]) -> list[Embedded]:
        """Queue (kind, inputs, normalize) jobs on the model thread and wait for all of them, the deadline or the
        client's disconnection, whichever comes first; withdrawn jobs cost no forward pass."""
        batcher = self.service.batcher
        jobs = [batcher.submit(kind, inputs, normalize) for kind, inputs, normalize in work]
        self.jobs.extend(jobs)
        everything = asyncio.gather(*(job.future for job in jobs), return_exceptions=True)
        if self.gone is None:
            self.gone = asyncio.ensure_future(self._client_gone())
        done, _ = await asyncio.wait(
            {everything, self.gone}, timeout=self.remaining(), return_when=asyncio.FIRST_COMPLETED
        )
        if everything in done:
            results = everything.result()
            for result in results:
                if isinstance(result, BaseException):
                    raise ApiError(500, f"the model failed: {type(result).__name__}: {result}")
            return results
        everything.cancel()
        gone = self.gone in done
        for job in jobs:
            batcher.withdraw(job, "disconnect" if gone else "timeout")
        if gone:
            raise ApiError(499, "the client closed the connection")
        raise self.timed_out()

    async def _client_gone(self) -> None:
        """Returns when the client disconnects (the body has been read: the server sends nothing else)."""
        while (await self.request.receive())["type"] != "http.disconnect":
            await asyncio.sleep(0.05)

    # -- the endpoints ------------------------------------------------------------------------------------------
    async def image_embeddings(self, values: Sequence[str], params: Sequence[str], normalize: bool) -> Embedded:
        [result] = await self.embed(("image", await self.images(values, params), normalize))
        return result

    async def embeddings(self) -> bytes:
        service = self.service
        call = parse_embeddings(await self.read_json(), service.config, service.model_id, service.dim)
        if call.modality == "text":
            [result] = await self.embed(("text", call.inputs, call.normalize))
        else:
            result = await self.image_embeddings(call.inputs, call.params, call.normalize)
        return await self.offload(render_embeddings, result, call.encoding_format, service.model_id)

    async def classify(self) -> bytes:
        service = self.service
        call = parse_classify(await self.read_json(), service.config)
        images = await self.images(call.images, call.params)
        key = (tuple(call.labels), call.template)
        labels = service.cached_labels(key)
        if labels is None:  # the pipeline's label_embeddings: the filled-in templates, normalised
            image_result, label_result = await self.embed(("image", images, True), ("text", call.sentences, True))
            labels = label_result.embeddings
            service.remember_labels(key, labels)
        else:
            [image_result] = await self.embed(("image", images, True))
        return await self.offload(classify_results, service.pipe, call, image_result.embeddings, labels)

    async def search(self) -> bytes:
        service = self.service
        if service.store is None:
            raise ApiError(404, "this server has no embedding store: start it with --store DIR to search")
        call = parse_search(await self.read_json(), service.config)
        if call.modality == "text":
            [result] = await self.embed(("text", [call.query], True))
        else:
            result = await self.image_embeddings([call.query], ["query"], True)
        hits = await self.offload(service.search, result.embeddings[0], call.top_k)
        return json.dumps({"results": hits}).encode()


# ------------------------------------------------------------------------------------------------------------
# The FastAPI app
# ------------------------------------------------------------------------------------------------------------


def _error_response(error: ApiError) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


class _Guard:
    """ASGI middleware: the API key on every route but /health (compared in constant time), and the request
    metrics (route, status, latency) for every answer, errors included."""

    def __init__(self, app: Any, service: Service):
        self.app = app
        self.service = service
        key = service.config.api_key
        self.key = key.encode() if key else None

    def authorized(self, scope: dict[str, Any]) -> bool:
        given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        scheme, _, token = given.partition(b" ")
        return hmac.compare_digest(token.strip(), self.key) and scheme.lower() == b"bearer"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = 500
        started = time.perf_counter()

        async def send_and_record(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.key is not None and scope["path"] != "/health" and not self.authorized(scope):
                error = ApiError(
                    401,
                    "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await _error_response(error)(scope, receive, send_and_record)
                return
            await self.app(scope, receive, send_and_record)
        finally:
            metrics = self.service.metrics
            metrics.requests.labels(route, str(status)).inc()
            if status >= 400:
                metrics.errors.labels(route, str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)


def _openapi_models() -> SimpleNamespace:
    """Pydantic models of the request and response bodies, for the OpenAPI document only: the handlers validate
    requests themselves, so that every error names its field in one sentence."""
    from typing import Literal

    from pydantic import BaseModel, Field

    class EmbeddingsRequest(BaseModel):
        input: str | list[str] = Field(description="texts, or images as base64 / data: URIs (URLs with --allow-urls)")
        model: str | None = Field(None, description="the served model's id (GET /v1/models); optional")
        modality: Literal["text", "image"] = "text"
        encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32")
        normalize: bool = Field(True, description="L2-normalise the embeddings")
        dimensions: int | None = Field(None, description="if given, must equal the model's dimension")
        user: str | None = Field(None, description="accepted and ignored (OpenAI compatibility)")

    class Embedding(BaseModel):
        object: Literal["embedding"] = "embedding"
        index: int
        embedding: list[float] | str

    class Usage(BaseModel):
        prompt_tokens: int
        total_tokens: int

    class EmbeddingsResponse(BaseModel):
        object: Literal["list"] = "list"
        data: list[Embedding]
        model: str
        usage: Usage

    class ClassifyRequest(BaseModel):
        image: str | list[str] = Field(description="base64 / data: URI images (URLs with --allow-urls)")
        candidate_labels: list[str]
        hypothesis_template: str = Field("This is a photo of {}.", description="'{}' is replaced by each label")
        top_k: int | None = Field(None, description="only the k best labels per image")

    class LabelScore(BaseModel):
        label: str
        score: float

    class SearchRequest(BaseModel):
        query: str = Field(description="a text, or an image (base64 / data: URI) with modality image")
        modality: Literal["text", "image"] = "text"
        top_k: int = Field(10, ge=1, le=MAX_TOP_K)

    class SearchHit(BaseModel):
        path: str | None = Field(None, description="for a store of images")
        text: str | None = Field(None, description="for a store of texts")
        score: float

    class SearchResponse(BaseModel):
        results: list[SearchHit]

    class ErrorDetail(BaseModel):
        message: str
        type: str
        param: str | None
        code: int

    class ErrorResponse(BaseModel):
        error: ErrorDetail

    return SimpleNamespace(**{name: value for name, value in locals().items() if isinstance(value, type)})


def create_app(service: Service) -> Any:
    """The FastAPI app of ``service``: routes, error handlers, the auth and metrics middleware, and a lifespan
    that starts the model thread (the model loads in the background; /health answers 503 until it is ready)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

    from .version import __version__

    m = _openapi_models()

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        service.start(service_failed)
        yield
        await asyncio.to_thread(service.stop)

    def service_failed(error: BaseException) -> None:
        log.error("could not start: %s", error)
        stop = getattr(app.state, "stop_server", None)
        if stop is not None:
            stop()

    app = FastAPI(
        title="siglip",
        version=__version__,
        lifespan=lifespan,
        description="SigLIP / SigLIP2 embeddings, zero-shot classification and search, with dynamic "
        'batching. Errors: `{"error": {"message", "type", "param", "code"}}`.',
    )
    app.add_middleware(_Guard, service=service)
    errors = {code: {"model": m.ErrorResponse} for code in (400, 401, 404, 413, 503, 504)}

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Any:
        return _error_response(error)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Any:
        message = f"{error.detail}: {request.method} {request.url.path}"
        return _error_response(ApiError(error.status_code, message, headers=error.headers))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Any:
        log.error("unexpected error on %s: %s: %s", request.url.path, type(error).__name__, error)
        return _error_response(ApiError(500, f"internal error: {type(error).__name__}"))

    def body_doc(model: Any) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}

    def answer(payload: bytes) -> Response:
        return Response(payload, media_type="application/json")

    @app.post(
        "/v1/embeddings",
        response_model=m.EmbeddingsResponse,
        responses=errors,
        openapi_extra=body_doc(m.EmbeddingsRequest),
        summary="Embed texts or images (OpenAI-compatible)",
    )
    async def embeddings(request: Request) -> Response:
        async with _Call(service, request) as call:
            return answer(await call.embeddings())

    @app.post(
        "/v1/classify",
        response_model=list[m.LabelScore] | list[list[m.LabelScore]],
        responses=errors,
        openapi_extra=body_doc(m.ClassifyRequest),
        summary="Zero-shot classify images against labels",
    )
    async def classify(request: Request) -> Response:
        async with _Call(service, request) as call:
            return answer(await call.classify())

    @app.post(
        "/v1/search",
        response_model=m.SearchResponse,
        responses=errors,
        openapi_extra=body_doc(m.SearchRequest),
        summary="Search the --store by text or image",
    )
    async def search(request: Request) -> Response:
        async with _Call(service, request) as call:
            return answer(await call.search())

    @app.get("/v1/models", summary="The served model")
    async def models() -> Any:
        return {
            "object": "list",
            "data": [{"id": service.model_id, "object": "model", "created": service.created, "owned_by": "siglip"}],
        }

    @app.get("/health", summary="200 once the model is loaded, 503 before (no API key needed)")
    async def health() -> Any:
        if service.ready:
            return {"status": "ok", "model": service.model_id}
        return JSONResponse(
            {"status": "loading", "model": service.model_id}, status_code=503, headers={"Retry-After": "1"}
        )

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(config: ServeConfig) -> int:
    """Run the service until SIGTERM or Ctrl-C; in-flight requests finish first. Returns the exit status."""
    require_serve_extra()
    import uvicorn

    # The model thread gives up the GIL in every torch op and must win it back from the event loop and the decoding
    # threads; at Python's default 5 ms switch interval a small model's forward pass waits more than it computes
    # (measured: 11 -> 171 text requests/s from 16 clients on a tiny model, 2 cores). 1 ms keeps the waits short.
    sys.setswitchinterval(0.001)
    service = Service(config)
    app = create_app(service)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="warning" if config.quiet else "info",
            access_log=not config.quiet,
            timeout_graceful_shutdown=int(config.request_timeout) + 5,
        )
    )
    app.state.stop_server = lambda: setattr(server, "should_exit", True)
    if config.api_key is None and not _is_loopback(config.host):
        log.warning("listening on %s without an API key: anyone who can reach it can use it", config.host)
    log.info("serving %s on http://%s:%d (API docs at /docs)", config.model, config.host, config.port)

    def drained(signum: int, frame: Any) -> None:
        # uvicorn drains on SIGTERM, then raises the signal again for the previous handler: this one. A SIGTERM
        # before uvicorn took over (nothing to drain yet) ends the process as the default handler would.
        if not server.started:
            raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, drained)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if service.load_error is not None:
        raise service.load_error
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
