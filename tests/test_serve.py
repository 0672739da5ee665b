"""`siglip serve` end to end: real server processes on free loopback ports, real HTTP clients (httpx, the OpenAI
client, raw sockets). Results are compared with the in-process pipeline; no traffic leaves 127.0.0.1."""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import siglip
import siglip.cli
from siglip import serve
from siglip.store import EmbeddingStore, cosine_top_k, source_path

from builders import write_checkpoint

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KEY = "test-key-0123"
ATOL = 1e-6  # the bound, fp32


# ------------------------------------------------------------------------------------------------------------
# Helpers: a server process, images as base64, metrics
# ------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m siglip serve ...`` on a free loopback port; ``client`` carries the API key when there is one."""

    def __init__(self, args: list[str], log: Path, key: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "SIGLIP_API_KEY"}
        if key:
            env["SIGLIP_API_KEY"] = key  # the environment variable, as the README recommends
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "siglip", "serve", *args, "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )
        self.client = httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {key}"} if key else {}
        )

    def wait_ready(self, timeout: float = 90) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.proc.kill()
        raise AssertionError(f"the server was not ready within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def post_in_thread(self, body: dict, results: list, **options) -> threading.Thread:
        """POST /v1/embeddings from a thread with its own client; the response (or exception) joins ``results``."""

        def post() -> None:
            with httpx.Client(base_url=self.url, headers=self.client.headers, timeout=60) as client:
                try:
                    results.append(client.post("/v1/embeddings", json=body, **options))
                except httpx.HTTPError as e:
                    results.append(e)

        thread = threading.Thread(target=post)
        thread.start()
        return thread

    def metric(self, name: str, **labels: str) -> float:
        text = self.client.get("/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return 0.0


def b64(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def data_uri(image: Image.Image, fmt: str = "PNG") -> str:
    return f"data:image/{fmt.lower()};base64,{b64(image, fmt)}"


def shape(color: tuple[int, int, int], size: tuple[int, int] = (48, 40), mode: str = "RGB") -> Image.Image:
    image = Image.new("RGB", size, (255 - color[0], 255 - color[1], 255 - color[2]))
    for x in range(size[0] // 4, 3 * size[0] // 4):
        for y in range(size[1] // 4, 3 * size[1] // 4):
            image.putpixel((x, y), color)
    return image.convert(mode)


def embeddings(response) -> torch.Tensor:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and [d["index"] for d in body["data"]] == list(range(len(body["data"])))
    rows = []
    for item in body["data"]:
        value = item["embedding"]
        if isinstance(value, str):
            rows.append(torch.frombuffer(bytearray(base64.b64decode(value)), dtype=torch.float32))
        else:
            rows.append(torch.tensor(value, dtype=torch.float32))
    return torch.stack(rows)


def close(got: torch.Tensor, ref: torch.Tensor) -> None:
    torch.testing.assert_close(got, ref.float(), rtol=0, atol=ATOL)


def assert_error(response, status: int, param: str | None, fragment: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["code"] == status, error
    assert fragment in error["message"], error["message"]


# ------------------------------------------------------------------------------------------------------------
# Fixtures: one checkpoint, its pipeline, an image store, and the main server (API key from the environment)
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("serve") / "model", "siglip", seed=5)


@pytest.fixture(scope="module")
def pipe(checkpoint):
    return siglip.pipeline("zero-shot-image-classification", model=checkpoint)


COLORS = [(220, 30, 30), (30, 200, 40), (20, 40, 210), (230, 220, 20), (200, 40, 200), (20, 210, 210)]


@pytest.fixture(scope="module")
def store(tmp_path_factory, checkpoint) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for i, color in enumerate(COLORS):
        shape(color, (40 + 8 * i, 40)).save(folder / f"shape{i}.png")
    out = folder.parent / "images.emb"
    assert (
        siglip.cli.main(
            ["embed", str(folder), "--output", str(out), "--model", str(checkpoint), "--num-workers", "0", "--quiet"]
        )
        == 0
    )
    return out


LIMITS = [
    "--max-batch-size",
    "8",
    "--max-wait-ms",
    "50",
    "--max-items",
    "8",
    "--max-labels",
    "4",
    "--max-text-chars",
    "200",
    "--max-image-pixels",
    "250000",
    "--max-body-bytes",
    "300000",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, checkpoint, store):
    log = tmp_path_factory.mktemp("logs") / "main.log"
    running = Server(["--model", str(checkpoint), "--store", str(store), "--quiet", *LIMITS], log, key=KEY)
    running.wait_ready()
    yield running
    assert running.stop() == 0, running.output()  # SIGTERM: a clean exit


@pytest.fixture(scope="module")
def queue_server(tmp_path_factory, checkpoint):
    """Requests wait (up to 10 s) for a batch that never fills and time out after 2.5 s; two at a time."""
    log = tmp_path_factory.mktemp("logs") / "queue.log"
    running = Server(
        [
            "--model",
            str(checkpoint),
            "--max-batch-size",
            "64",
            "--max-wait-ms",
            "10000",
            "--max-queue",
            "2",
            "--request-timeout",
            "2.5",
            "--allow-urls",
            "--quiet",
        ],
        log,
    )
    running.wait_ready()
    yield running
    assert running.stop() == 0, running.output()


# ------------------------------------------------------------------------------------------------------------
# Endpoints and results
# ------------------------------------------------------------------------------------------------------------


def test_health_models_docs_and_the_api_key(server, checkpoint):
    anonymous = httpx.Client(base_url=server.url, timeout=10)
    assert anonymous.get("/health").json() == {"status": "ok", "model": str(checkpoint)}
    for method, path in [
        ("GET", "/v1/models"),
        ("GET", "/metrics"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/classify"),
        ("POST", "/v1/search"),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": KEY}):
            response = anonymous.request(method, path, headers=headers, json={"input": "x"})
            assert_error(response, 401, None, "API key")
            assert response.headers["WWW-Authenticate"] == "Bearer"
    models = server.client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [str(checkpoint)]
    assert server.client.get("/docs").status_code == 200
    schema = server.client.get("/openapi.json").json()
    assert {"/v1/embeddings", "/v1/classify", "/v1/search", "/health", "/metrics", "/v1/models"} <= set(schema["paths"])
    body = schema["paths"]["/v1/embeddings"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"input", "modality", "encoding_format", "normalize"} <= set(body["properties"])
    assert_error(server.client.get("/v1/nothing"), 404, None, "Not Found")


def test_text_embeddings_equal_encode_texts(server, pipe):
    texts = ["a red circle", "ein blauer Würfel", "東京の写真 🙂", "x" * 200]
    response = server.client.post(
        "/v1/embeddings", json={"input": texts, "model": server.client.get("/v1/models").json()["data"][0]["id"]}
    )
    close(embeddings(response), pipe.encode_texts(texts))
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] > len(texts)
    raw = server.client.post(
        "/v1/embeddings", json={"input": texts[0], "normalize": False, "encoding_format": "base64"}
    )
    close(embeddings(raw), pipe.encode_texts([texts[0]], normalize=False))


def test_image_embeddings_equal_encode_images(server, pipe):
    images = [
        data_uri(shape(COLORS[0])),
        b64(shape(COLORS[1], (64, 30)), "JPEG"),
        data_uri(shape(COLORS[2], (30, 50), "RGBA")),
        b64(shape(COLORS[3], (33, 33), "L")),
    ]
    got = embeddings(server.client.post("/v1/embeddings", json={"input": images, "modality": "image"}))
    close(got, pipe.encode_images(images))
    single = server.client.post(
        "/v1/embeddings",
        json={"input": images[1], "modality": "image", "encoding_format": "base64", "normalize": False},
    )
    close(embeddings(single), pipe.encode_images(images[1], normalize=False))


def test_the_openai_client(server, pipe, checkpoint):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY)
    texts = ["a photo of a cat", "a photo of a dog"]
    result = client.embeddings.create(model=str(checkpoint), input=texts)  # the client asks for base64
    close(torch.tensor([d.embedding for d in result.data]), pipe.encode_texts(texts))
    image = data_uri(shape(COLORS[4]))
    result = client.embeddings.create(
        model=str(checkpoint), input=[image], extra_body={"modality": "image"}, encoding_format="float"
    )
    close(torch.tensor([d.embedding for d in result.data]), pipe.encode_images([image]))
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.embeddings.create(model="text-embedding-3-small", input="x")


def test_classify_equals_the_pipeline(server, pipe):
    labels = ["red square", "green square", "blue square"]
    one = data_uri(shape(COLORS[0]))
    many = [one, b64(shape(COLORS[2], (50, 20)))]
    for image in (one, many):
        for options in ({}, {"hypothesis_template": "a {}", "top_k": 2}):
            response = server.client.post("/v1/classify", json={"image": image, "candidate_labels": labels, **options})
            assert response.status_code == 200, response.text
            expected = pipe(image, candidate_labels=labels, **options)
            got = response.json()
            if isinstance(image, str):
                got, expected = [got], [expected]
            assert len(got) == len(expected)
            for row, ref in zip(got, expected, strict=True):
                assert [r["label"] for r in row] == [r["label"] for r in ref]
                close(torch.tensor([r["score"] for r in row]), torch.tensor([r["score"] for r in ref]))


def test_search_equals_cosine_top_k(server, pipe, store):
    """Results as `siglip search` gives them: the exact top k of the stored embeddings, image rows by file path."""
    rows, matrix = EmbeddingStore(store).load()
    manifest = EmbeddingStore(store).read_manifest()
    image = data_uri(shape(COLORS[1], (56, 40)))
    for modality, query, vector in [
        ("text", "a green square", pipe.encode_texts(["a green square"])[0]),
        ("image", image, pipe.encode_images([image])[0]),
    ]:
        response = server.client.post("/v1/search", json={"query": query, "modality": modality, "top_k": 4})
        assert response.status_code == 200, response.text
        hits = response.json()["results"]
        top, scores = cosine_top_k(matrix, vector.numpy(), 4)
        assert [h["path"] for h in hits] == [source_path(manifest, rows[i]["path"]) for i in top]
        assert all(Path(h["path"]).is_file() for h in hits)
        close(torch.tensor([h["score"] for h in hits]), torch.tensor(scores))


# ------------------------------------------------------------------------------------------------------------
# Bad requests: a 4xx JSON error naming the field and the problem, and the server keeps serving
# ------------------------------------------------------------------------------------------------------------


def _bomb(width: int, height: int) -> str:
    """A small PNG that declares width x height: a decompression bomb (its pixel data stops early)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 10_000))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(png).decode()


RED = b64(shape(COLORS[0]))
LABELS = ["cat", "dog"]
BAD_REQUESTS = [
    # (route, body: a JSON value or raw bytes, status, param, what the message says)
    ("/v1/embeddings", b'{"input": ', 400, None, "not valid JSON"),
    ("/v1/embeddings", b"\xff\xfe", 400, None, "not valid JSON"),
    ("/v1/embeddings", b"", 400, None, "body is empty"),
    ("/v1/embeddings", ["a"], 400, None, "must be a JSON object, got an array"),
    ("/v1/embeddings", {}, 400, "input", "input is required"),
    ("/v1/embeddings", {"input": 5}, 400, "input", "got a number"),
    ("/v1/embeddings", {"input": [1, 2]}, 400, "input[0]", "token ids are not accepted"),
    ("/v1/embeddings", {"input": []}, 400, "input", "empty array"),
    ("/v1/embeddings", {"input": ""}, 400, "input", "empty string"),
    ("/v1/embeddings", {"input": ["a", ""]}, 400, "input[1]", "empty string"),
    ("/v1/embeddings", {"input": ["a"] * 9}, 400, "input", "9 items, more than this server's limit of 8"),
    ("/v1/embeddings", {"input": "y" * 201}, 400, "input", "201 characters"),
    ("/v1/embeddings", b'{"input": "\\ud800"}', 400, "input", "lone surrogate"),
    ("/v1/embeddings", {"input": "a", "modality": "audio"}, 400, "modality", "'audio'"),
    ("/v1/embeddings", {"input": "a", "modalty": "image"}, 400, "modalty", "unknown field"),
    ("/v1/embeddings", {"input": "a", "normalize": "yes"}, 400, "normalize", "true or false"),
    ("/v1/embeddings", {"input": "a", "encoding_format": "hex"}, 400, "encoding_format", "'hex'"),
    ("/v1/embeddings", {"input": "a", "dimensions": 7}, 400, "dimensions", "dimensions=7"),
    ("/v1/embeddings", {"input": "a", "model": "other"}, 404, "model", "not served here"),
    ("/v1/embeddings", {"input": "%%%notbase64", "modality": "image"}, 400, "input", "invalid base64"),
    ("/v1/embeddings", {"input": "data:image/png,abc", "modality": "image"}, 400, "input", "must carry base64"),
    (
        "/v1/embeddings",
        {"input": base64.b64encode(b"plain text, no image").decode(), "modality": "image"},
        400,
        "input",
        "not an image",
    ),
    ("/v1/embeddings", {"input": ["a" * 8, RED[:200]], "modality": "image"}, 400, "input[0]", "not an image"),
    ("/v1/embeddings", {"input": [RED, RED[:-40]], "modality": "image"}, 400, "input[1]", ""),
    (
        "/v1/embeddings",
        {"input": b64(Image.new("RGB", (600, 500))), "modality": "image"},
        400,
        "input",
        "600x500 = 300000 pixels, more than this server's limit of 250000",
    ),
    ("/v1/embeddings", {"input": _bomb(100_000, 100_000), "modality": "image"}, 400, "input", "decompression bomb"),
    ("/v1/embeddings", {"input": _bomb(2000, 2000), "modality": "image"}, 400, "input", "--max-image-pixels"),
    ("/v1/embeddings", {"input": "http://127.0.0.1:1/x.png", "modality": "image"}, 400, "input", "--allow-urls"),
    ("/v1/classify", {"candidate_labels": LABELS}, 400, "image", "image is required"),
    ("/v1/classify", {"image": [], "candidate_labels": LABELS}, 400, "image", "empty array"),
    ("/v1/classify", {"image": RED, "candidate_labels": []}, 400, "candidate_labels", "is empty"),
    ("/v1/classify", {"image": RED, "candidate_labels": ["a", "b", "a"]}, 400, "candidate_labels", "duplicates"),
    ("/v1/classify", {"image": RED, "candidate_labels": list("abcde")}, 400, "candidate_labels", "5 labels"),
    ("/v1/classify", {"image": RED, "candidate_labels": ["a", 3]}, 400, "candidate_labels", "all be strings"),
    ("/v1/classify", {"image": RED, "candidate_labels": {"a": 1}}, 400, "candidate_labels", "got an object"),
    (
        "/v1/classify",
        {"image": RED, "candidate_labels": LABELS, "hypothesis_template": "a photo"},
        400,
        "hypothesis_template",
        "must contain '{}'",
    ),
    (
        "/v1/classify",
        {"image": RED, "candidate_labels": LABELS, "hypothesis_template": "{} {}"},
        400,
        "hypothesis_template",
        "can't be filled",
    ),
    ("/v1/classify", {"image": RED, "candidate_labels": LABELS, "top_k": 0}, 400, "top_k", "positive"),
    ("/v1/classify", {"image": [RED, "n%pe"], "candidate_labels": LABELS}, 400, "image[1]", "invalid base64"),
    ("/v1/search", {"query": ""}, 400, "query", "empty string"),
    ("/v1/search", {"query": "a", "top_k": 0}, 400, "top_k", "between 1 and 1000"),
    ("/v1/search", {"query": "a", "top_k": "5"}, 400, "top_k", "got a string"),
    ("/v1/search", {"query": "a", "top_k": True}, 400, "top_k", "got a boolean"),
    ("/v1/search", {"query": 3}, 400, "query", "must be a string"),
    ("/v1/search", {"query": "n%pe", "modality": "image"}, 400, "query", "invalid base64"),
]


def test_bad_requests_get_a_4xx_that_names_the_field(server, pipe):
    errors_before = server.metric("siglip_request_errors_total", route="/v1/embeddings", code="400")
    for route, body, status, param, fragment in BAD_REQUESTS:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = server.client.post(route, content=content, headers={"Content-Type": "application/json"})
        assert_error(response, status, param, fragment)
        assert response.json()["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    embedding_errors = sum(1 for route, _, status, *_ in BAD_REQUESTS if route == "/v1/embeddings" and status == 400)
    assert (
        server.metric("siglip_request_errors_total", route="/v1/embeddings", code="400")
        == errors_before + embedding_errors
    )
    close(
        embeddings(server.client.post("/v1/embeddings", json={"input": "still here"})),
        pipe.encode_texts(["still here"]),
    )


def test_a_path_is_never_opened(server, tmp_path):
    """A string naming an image file on the server's disk is a 400, even when it is also valid base64."""
    folder = Path(tempfile.gettempdir()) / f"siglipServeTest{os.getpid()}"
    folder.mkdir(exist_ok=True)
    try:
        path = folder / ("redSquare" + "A" * (-(len(str(folder)) + 10) % 4))
        shape(COLORS[0]).save(path, "PNG")
        assert base64.b64decode(str(path), validate=True)  # a loadable file and valid base64 at once
        assert siglip.load_image(str(path)).size == (48, 40)
        for name in (str(path), str(tmp_path), "/etc/passwd", f"file://{path}", f"data:image/png;base64,{path}"):
            response = server.client.post("/v1/embeddings", json={"input": name, "modality": "image"})
            assert response.status_code == 400, (name, response.text)
    finally:
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()


def test_the_body_limit_is_enforced_while_reading(server):
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Type: application/json\r\n"
    )

    def answer(sock: socket.socket) -> bytes:
        """The whole response: headers, then content-length bytes of body."""
        sock.settimeout(20)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
            data.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]
        ):
            chunk = sock.recv(65536)
            assert chunk, f"the connection closed after {data!r}"
            data += chunk
        return data

    # A declared length over the limit: answered at once, with no body sent at all.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall((head + "Content-Length: 1000000000\r\n\r\n").encode())
        reply = answer(sock)
    assert reply.startswith(b"HTTP/1.1 413") and b"--max-body-bytes" in reply
    # A chunked body that never ends: answered as soon as what arrived passes the limit.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
        chunk = b"x" * 100_000
        for _ in range(4):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = answer(sock)
    assert reply.startswith(b"HTTP/1.1 413")
    # The same through a client, with a length and without.
    response = server.client.post("/v1/embeddings", content=b"[" * 400_000)
    assert_error(response, 413, None, "larger than this server's limit of 300000 bytes")
    response = server.client.post("/v1/embeddings", content=iter([b"[" * 100_000] * 5))
    assert_error(response, 413, None, "--max-body-bytes")
    assert server.client.get("/health").status_code == 200


# ------------------------------------------------------------------------------------------------------------
# Dynamic batching, concurrency, metrics
# ------------------------------------------------------------------------------------------------------------


def test_16_concurrent_clients_get_their_own_results(server, pipe):
    requests = []
    for i in range(16):
        if i % 2:
            texts = [f"client {i} text {j}: {'blue' if j else 'red'} shape" for j in range(1 + i % 3)]
            requests.append(({"input": texts}, pipe.encode_texts(texts)))
        else:
            images = [data_uri(shape(COLORS[(i + j) % 6], (30 + i, 40 + j))) for j in range(1 + i % 3)]
            requests.append(({"input": images, "modality": "image"}, pipe.encode_images(images)))
    forwards_before = {m: server.metric("siglip_batch_size_count", modality=m) for m in ("text", "image")}
    start = threading.Barrier(len(requests))
    results: list = [[] for _ in requests]

    def client(i: int) -> None:
        start.wait()
        server.post_in_thread(requests[i][0], results[i]).join()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for [response], (_, expected) in zip(results, requests, strict=True):
        close(embeddings(response), expected)
    forwards = sum(server.metric("siglip_batch_size_count", modality=m) - forwards_before[m] for m in forwards_before)
    assert forwards < len(requests), "concurrent requests should share forward passes"


def test_metrics_move(server):
    def requests(code: str = "200") -> float:
        return server.metric("siglip_requests_total", route="/v1/embeddings", code=code)

    before = (
        requests(),
        requests("400"),
        server.metric("siglip_items_total", modality="text"),
        server.metric("siglip_request_duration_seconds_count", route="/v1/embeddings"),
        server.metric("siglip_batch_size_sum", modality="text"),
    )
    server.client.post("/v1/embeddings", json={"input": ["one", "two", "three"]})
    server.client.post("/v1/embeddings", json={"input": 1})
    after = (
        requests(),
        requests("400"),
        server.metric("siglip_items_total", modality="text"),
        server.metric("siglip_request_duration_seconds_count", route="/v1/embeddings"),
        server.metric("siglip_batch_size_sum", modality="text"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 3, 2, 3]
    assert server.metric("siglip_model_loaded") == 1
    assert server.metric("siglip_queue_depth", modality="image") == 0
    assert server.metric("siglip_requests_in_flight") == 0


def test_a_full_queue_answers_503_and_a_slow_request_504(queue_server):
    dropped = queue_server.metric("siglip_dropped_items_total", reason="timeout")
    waiting: list = []
    threads = [queue_server.post_in_thread({"input": "wait"}, waiting) for _ in range(2)]
    deadline = time.monotonic() + 2
    while queue_server.metric("siglip_queue_depth", modality="text") < 2:
        assert time.monotonic() < deadline, "the two requests were never queued"
        time.sleep(0.02)
    assert queue_server.metric("siglip_requests_in_flight") == 2
    full = queue_server.client.post("/v1/embeddings", json={"input": "one more"})
    assert_error(full, 503, None, "--max-queue 2")
    assert full.headers["Retry-After"] == "1"
    for t in threads:
        t.join()
    for response in waiting:  # their batch would have waited 10 s; the request timeout is 2.5 s
        assert_error(response, 504, None, "limit of 2.5 s (--request-timeout)")
    assert queue_server.metric("siglip_dropped_items_total", reason="timeout") == dropped + 2
    assert queue_server.metric("siglip_items_total", modality="text") == 0  # no forward pass was spent on them
    assert queue_server.metric("siglip_queue_depth", modality="text") == 0


def test_a_client_that_leaves_costs_no_forward_pass(queue_server):
    dropped = queue_server.metric("siglip_dropped_items_total", reason="disconnect")
    with pytest.raises(httpx.ReadTimeout):
        queue_server.client.post("/v1/embeddings", json={"input": ["gone", "too"]}, timeout=0.3)
    deadline = time.monotonic() + 2.0  # before the request's own 2.5 s timeout
    while queue_server.metric("siglip_dropped_items_total", reason="disconnect") < dropped + 2:
        assert time.monotonic() < deadline, "the job of a client that left stayed queued"
        time.sleep(0.02)
    assert queue_server.metric("siglip_items_total", modality="text") == 0


def test_url_inputs_to_loopback_are_refused(queue_server):
    """With --allow-urls, a URL that resolves to this machine is refused (checked after DNS resolution)."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(base64.b64decode(RED))

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as local:
        threading.Thread(target=local.serve_forever, daemon=True).start()
        port = local.server_address[1]
        for url in (
            f"http://127.0.0.1:{port}/x.png",
            f"http://localhost:{port}/x.png",
            f"http://[::1]:{port}/x",
            f"http://127.1:{port}/x.png",
            f"http://2130706433:{port}/x.png",
        ):
            response = queue_server.client.post("/v1/embeddings", json={"input": url, "modality": "image"})
            assert_error(response, 400, "input", "loopback")
        response = queue_server.client.post("/v1/embeddings", json={"input": "ftp://127.0.0.1/x", "modality": "image"})
        assert response.status_code == 400
        local.shutdown()
    assert hits == []


# ------------------------------------------------------------------------------------------------------------
# URL fetching (in process, loopback only: the address check is widened to 127.0.0.1 for these tests)
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, problem",
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.5.4", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "public"),
        ("240.0.0.1", "reserved"),
        ("fd00::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
    ],
)
def test_only_public_unicast_addresses_may_be_fetched(address, problem):
    found = serve._address_problem(address)
    assert (found is None) if problem is None else (problem in found), found


@pytest.fixture
def web(monkeypatch):
    """A loopback web server (/image, /big, /slow, /redirect-out, /redirect-in) that fetch_url may reach."""
    image = base64.b64decode(RED)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/redirect"):
                target = "http://127.0.0.2:9/image" if self.path == "/redirect-out" else "/image"
                self.send_response(302)
                self.send_header("Location", target)
                self.end_headers()
                return
            if self.path == "/slow":
                time.sleep(1.5)
            body = image if self.path in ("/image", "/slow") else b"\0" * 300_000
            self.send_response(200)
            if self.path != "/big":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    real = serve._address_problem
    monkeypatch.setattr(serve, "_address_problem", lambda a: None if a == "127.0.0.1" else real(a))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as local:
        threading.Thread(target=local.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{local.server_address[1]}", image
        local.shutdown()


def test_fetch_url_limits_size_time_and_redirects(web):
    url, image = web
    assert serve.fetch_url(url + "/image", 100_000, 5) == image
    assert serve.fetch_url(url + "/redirect-in", 100_000, 5) == image
    with pytest.raises(ValueError, match="127.0.0.2, a loopback address"):
        serve.fetch_url(url + "/redirect-out", 100_000, 5)  # every hop is checked again
    with pytest.raises(ValueError, match="more than the limit of 100000 bytes"):
        serve.fetch_url(url + "/big", 100_000, 5)
    started = time.monotonic()
    with pytest.raises(ValueError, match="no answer within 0.5 s"):
        serve.fetch_url(url + "/slow", 100_000, 0.5)
    assert time.monotonic() - started < 1.4


def test_decode_image_takes_allowed_urls(web, pipe):
    url, _ = web
    config = serve.ServeConfig(model="m", allow_urls=True)
    image = serve.decode_image(url + "/image", "input", config, 5)
    close(pipe.encode_images([image]), pipe.encode_images([RED]))


# ------------------------------------------------------------------------------------------------------------
# The batcher on its own: NaFlex inputs of different aspect ratios from different requests share a forward pass
# ------------------------------------------------------------------------------------------------------------


def test_batcher_joins_naflex_requests(tmp_path):
    import asyncio

    folder = write_checkpoint(tmp_path / "naflex", "siglip2", seed=4)
    pipe = siglip.pipeline("zero-shot-image-classification", model=folder)
    images = [shape(COLORS[0], (64, 16)), shape(COLORS[1], (20, 70)), shape(COLORS[2], (33, 33))]
    texts = ["a wide red bar", "a tall green bar"]
    batcher = serve.Batcher(max_batch_size=8, max_wait=0.5)
    batcher.start(lambda: pipe, lambda error: pytest.fail(str(error)))
    batches = []
    forward = batcher._forward
    batcher._forward = lambda jobs: batches.append([len(job.inputs) for job in jobs]) or forward(jobs)

    async def requests():
        jobs = [batcher.submit("image", [pipe.preprocess_images([image])], True) for image in images]
        jobs.append(batcher.submit("text", texts, False))
        return await asyncio.gather(*(job.future for job in jobs))

    try:
        results = asyncio.run(requests())
    finally:
        batcher.stop()
    assert batches == [[1, 1, 1], [2]]  # the three image requests in one pass, the texts in another
    close(torch.cat([r.embeddings for r in results[:3]]), pipe.encode_images(images))
    close(results[3].embeddings, pipe.encode_texts(texts, normalize=False))
    assert len(results[3].tokens) == 2 and results[0].tokens == []


# ------------------------------------------------------------------------------------------------------------
# Start-up and shutdown
# ------------------------------------------------------------------------------------------------------------


def test_health_waits_for_the_model_and_a_failed_forward_pass_is_a_500(checkpoint, monkeypatch):
    """In process (Starlette's test client): the model loads in the background; until then /health and the model
    routes answer 503. A forward pass that raises fails its own requests with a 500, and the next one works."""
    from starlette.testclient import TestClient

    loading = threading.Event()
    load = serve.load_model
    monkeypatch.setattr(serve, "load_model", lambda *args: loading.wait(60) and load(*args))
    service = serve.Service(serve.ServeConfig(model=str(checkpoint)))
    with TestClient(serve.create_app(service)) as client:
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        response = client.post("/v1/embeddings", json={"input": "too early"})
        assert_error(response, 503, None, "still loading")
        assert response.headers["Retry-After"] == "1"
        loading.set()
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)

        def broken(*args, **kwargs):
            raise RuntimeError("out of memory, say")

        monkeypatch.setattr(service.pipe, "encode_texts", broken)
        assert_error(
            client.post("/v1/embeddings", json={"input": "x"}),
            500,
            None,
            "the model failed: RuntimeError: out of memory, say",
        )
        monkeypatch.undo()
        assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 200


def test_sigterm_drains_requests_in_flight(tmp_path, checkpoint, pipe):
    running = Server(
        ["--model", str(checkpoint), "--max-batch-size", "64", "--max-wait-ms", "3000"], tmp_path / "drain.log"
    ).wait_ready()
    results: list = []
    request = running.post_in_thread({"input": "in flight at SIGTERM"}, results)
    deadline = time.monotonic() + 5
    while running.metric("siglip_queue_depth", modality="text") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    running.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while True:  # no new connections once draining, while the request still waits for its batch (3 s)
        assert time.monotonic() < deadline, "the server kept accepting connections after SIGTERM"
        try:
            httpx.get(running.url + "/health", timeout=2)
        except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
            break  # refused, or accepted by the kernel's backlog and then reset as the listening socket closes
        time.sleep(0.05)
    assert request.is_alive()
    request.join()
    close(embeddings(results[0]), pipe.encode_texts(["in flight at SIGTERM"]))
    assert running.proc.wait(timeout=30) == 0
    log = running.output()
    assert "Shutting down" in log and '"POST /v1/embeddings HTTP/1.1" 200' in log


def test_a_model_that_fails_to_load_exits_1(tmp_path):
    running = Server(["--model", str(tmp_path / "missing")], tmp_path / "fail.log")
    assert running.proc.wait(timeout=90) == 1
    assert "siglip: error:" in running.output() and "missing" in running.output()


def test_cli_defaults_and_errors(monkeypatch, capsys, checkpoint):
    args = siglip.cli.build_parser().parse_args(["serve"])
    assert (args.host, args.api_key, args.allow_urls) == ("127.0.0.1", None, False)  # loopback, no URLs by default
    assert siglip.cli.main(["serve", "--model", str(checkpoint), "--max-batch-size", "0"]) == 1
    assert "--max-batch-size must be a positive integer" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "fastapi", None)
    assert siglip.cli.main(["serve", "--model", str(checkpoint)]) == 1
    assert "pip install 'siglip[serve]'" in capsys.readouterr().err


def test_serve_benchmark_runs(tmp_path, checkpoint):
    """benchmarks/bench_serve.py end to end on a tiny model for about a second per setting (not a timed test)."""
    out = tmp_path / "serve.md"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_serve.py"),
            "--quick",
            "--model",
            str(checkpoint),
            "--duration",
            "1",
            "--warmup",
            "0.5",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    for row in ("--max-batch-size 1", "--max-batch-size 16", "requests/s", "p50", "p99", "errors", "Machine"):
        assert row in report, row
