"""Hostile input against `edgebert serve`: no request, body or client takes the server down,
leaks the host's paths or grows its memory without bound."""

from __future__ import annotations

import json
import os
import random
import socket
import stat
import threading
import time

import httpx
import psutil
import pytest

from compress.serving.limits import ServeLimits
from compress.serving.serve import create_app
from compress.serving.traffic_log import TrafficLog, read_traffic
from tests.conftest import sample_rows
from tests.servers import server_process

pytestmark = pytest.mark.fault  # the fault suite (README "Fault suite")

TEXTS = [r["text"] for r in sample_rows("validation", 30, seed=11)]
JSON = {"content-type": "application/json"}


def raw(texts) -> bytes:
    """A JSON body as a client may send it: lone surrogates as `\\ud800` escapes."""
    return json.dumps({"texts": texts}).encode()


def post_raw(client, body: bytes) -> httpx.Response:
    return client.post("/predict", content=body, headers=JSON)


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_poison_texts_in_one_batching_window_fail_alone_and_the_server_keeps_serving(
    tiny_model_dir, tmp_path
):
    """The poison of the bug report (an empty text and a lone surrogate, inside one window, on
    a model that cleans nothing), a surrogate inside a text, then 20 good requests: 422 for
    each poison naming its text, 200 for every good one, /live still 200, and /metrics counts
    each answer by the status really sent. The traffic log takes all of it."""
    from fastapi.testclient import TestClient

    (tmp_path / "model").symlink_to(tiny_model_dir)  # no edgebert.json: cleaning is []
    log = tmp_path / "traffic.jsonl"
    traffic = TrafficLog(log)
    app = create_app(tmp_path / "model", ServeLimits(max_wait_ms=300), traffic)
    with TestClient(app) as client:
        answers: dict[str, httpx.Response] = {}
        bodies = {"blank": raw([" "]), "lone": raw(["\ud800"]), "mixed": raw(["ok \ud800 text"])}
        senders = [
            threading.Thread(target=lambda n=n, b=b: answers.__setitem__(n, post_raw(client, b)))
            for n, b in bodies.items()
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(timeout=30)
        good = [client.post("/predict", json={"texts": [t]}) for t in TEXTS[:20]]
        live = client.get("/live")
        metrics = client.get("/metrics").text
    traffic.close()
    assert answers["blank"].status_code == 422
    assert answers["blank"].json() == {"error": "text 1 is empty after cleaning"}
    assert answers["lone"].status_code == 422
    assert answers["lone"].json() == {
        "error": "text 1 is not valid Unicode: a lone surrogate at character 1"
    }
    assert answers["mixed"].json()["error"].endswith("a lone surrogate at character 4")
    assert [r.status_code for r in good] == [200] * 20
    assert live.status_code == 200
    assert metric(metrics, 'edgebert_requests_total{status="422"}') == 3
    assert metric(metrics, 'edgebert_requests_total{status="200"}') == 20
    assert len(read_traffic(log)) == 20
    assert stat.S_IMODE(log.stat().st_mode) == 0o600  # users' traffic is private


class Panic(BaseException):
    """What a Rust tokenizer raises on a panic (pyo3's PanicException): not an Exception."""


def test_a_model_call_that_raises_fails_only_its_request_and_live_tracks_the_batcher(
    tiny_model_dir, monkeypatch
):
    from fastapi.testclient import TestClient

    from compress.serving.predict import Predictor

    predict = Predictor.predict

    def panicky(self, texts, cleaned=None):
        if any("boom" in t for t in texts):
            raise Panic("tokenizer panicked")
        return predict(self, texts, cleaned)

    monkeypatch.setattr(Predictor, "predict", panicky)
    guarded = create_app(tiny_model_dir, ServeLimits(max_wait_ms=50))
    with TestClient(guarded) as client:
        failed = client.post("/predict", json={"texts": ["boom"]})
        after = [client.post("/predict", json={"texts": [t]}) for t in TEXTS[:5]]
        assert client.get("/live").status_code == 200
        metrics = client.get("/metrics").text
        guarded.app.state.batcher.task.cancel()  # a batcher that is gone...
        time.sleep(0.2)
        dead = client.get("/live")
    assert failed.status_code == 500
    assert failed.json() == {"error": "the model failed on this request (RuntimeError)"}
    assert [r.status_code for r in after] == [200] * 5
    assert metric(metrics, 'edgebert_requests_total{status="500"}') == 1
    assert dead.status_code == 503  # ... fails /live, so an orchestrator restarts the process


def test_more_texts_than_the_queue_holds_is_413_naming_the_limit(tiny_model_dir):
    from fastapi.testclient import TestClient

    with TestClient(create_app(tiny_model_dir, ServeLimits(max_queue=8))) as client:
        answer = client.post("/predict", json={"texts": TEXTS[:20]})
        fits = client.post("/predict", json={"texts": TEXTS[:8]})
    assert answer.status_code == 413
    assert answer.json() == {
        "error": "20 texts is over the queue's 8: send at most 8 texts per request"
    }
    assert fits.status_code == 200


def test_health_hides_paths_and_api_pages_are_off_unless_asked(tiny_model_dir):
    from fastapi.testclient import TestClient

    with TestClient(create_app(tiny_model_dir)) as client:
        health = client.get("/health").json()
        pages = [client.get(p).status_code for p in ("/docs", "/openapi.json", "/redoc")]
    assert health["model"] == tiny_model_dir.name and str(tiny_model_dir.parent) not in str(health)
    assert pages == [404, 404, 404]
    with TestClient(create_app(tiny_model_dir, docs=True)) as client:
        assert client.get("/openapi.json").status_code == 200


def test_traffic_log_is_never_written_through_a_symlink(tmp_path):
    from bench.errors import BenchError

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "traffic.jsonl").symlink_to(victim)
    with pytest.raises(BenchError, match="is a symbolic link"):
        TrafficLog(tmp_path / "traffic.jsonl")
    assert victim.read_text() == "precious\n"


def _exchange(port: int, request: bytes, pause_after: int | None = None) -> bytes:
    """Send raw HTTP (optionally stopping after `pause_after` bytes) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request if pause_after is None else request[:pause_after])
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"}" in chunk:
                break
        return b"".join(chunks)


def test_bodies_are_counted_as_received_chunked_is_refused_and_slow_senders_time_out(
    tiny_model_dir,
):
    options = ("--max-body-bytes", "2000", "--body-seconds", "1")
    with server_process(tiny_model_dir, *options) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        both = (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"4000\r\n"
            + b"a" * 0x4000
        )
        answer = _exchange(port, both)
        assert answer.startswith(b"HTTP/1.1 400") and b"chunked bodies are refused" in answer
        body = raw(["fine"])
        slow = (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        started = time.perf_counter()
        answer = _exchange(port, slow, pause_after=len(slow) - 3)  # the last bytes never come
        assert answer.startswith(b"HTTP/1.1 408") and b"not received within 1 s" in answer
        assert time.perf_counter() - started < 5
        assert httpx.post(f"{url}/predict", json={"texts": ["fine"]}).status_code == 200


def random_string(rng: random.Random, size: int, surrogates: bool = True) -> str:
    """Random code points from every plane, controls included (and surrogates, if asked)."""
    pools = [(0, 0x20), (0x20, 0x7F), (0x80, 0x800), (0xE000, 0x110000)]
    pools += [(0xD800, 0xE000)] * surrogates
    return "".join(chr(rng.randrange(*rng.choice(pools))) for _ in range(size))


def random_body(rng: random.Random) -> bytes:
    """One hostile /predict body: surrogates, controls, huge numbers, deep nesting, wrong
    types, bad UTF-8, too many texts, or a plausible request with a random text."""
    kind = rng.randrange(10)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 300))
    if kind == 1:
        depth = rng.choice([50, 5_000, 100_000])
        return b'{"texts": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == 2:
        return b'{"texts": [' + rng.choice([b"1e999999", b"9" * 5000, b"-0", b"NaN"]) + b"]}"
    if kind == 3:
        return json.dumps({"texts": random_string(rng, 20)}).encode()  # not a list
    if kind == 4:
        return json.dumps({"texts": ["x"] * rng.choice([0, 257, 300])}).encode()
    if kind == 5:
        return json.dumps(random_string(rng, 50)).encode()
    if kind == 6:
        return json.dumps({"texts": [rng.randrange(-(10**30), 10**30), None, {"a": []}]}).encode()
    if kind == 7:
        return raw([random_string(rng, rng.randrange(0, 400)) for _ in range(rng.randrange(1, 4))])
    texts = rng.sample(TEXTS, rng.randrange(1, 4))  # real reviews with random characters inside
    return raw([t + random_string(rng, rng.randrange(0, 60), surrogates=False) for t in texts])


def test_fuzz_a_thousand_hostile_bodies_no_5xx_still_serving_memory_bounded(tiny_model_dir):
    """1,000 random bodies: every answer is 200, 4xx or 503/504 refusal (no 500), the server
    then answers a good request, and its RSS grows by less than 100 MB."""
    rng = random.Random(1234)
    with server_process(tiny_model_dir) as (url, proc), httpx.Client(base_url=url) as http:
        post_raw(http, raw(TEXTS[:4]))  # warm: allocations of a first batch are not growth
        rss_before = psutil.Process(proc.pid).memory_info().rss
        statuses: dict[int, int] = {}
        for _ in range(1000):
            status = post_raw(http, random_body(rng)).status_code
            statuses[status] = statuses.get(status, 0) + 1
        rss_after = psutil.Process(proc.pid).memory_info().rss
        good = http.post("/predict", json={"texts": TEXTS[:3]})
        live = http.get("/live").status_code
        log = proc.log.read_text()
    assert not [s for s in statuses if s >= 500 and s not in (503, 504)], statuses
    assert statuses.get(200, 0) > 50 and statuses.get(422, 0) > 100, statuses
    assert good.status_code == 200 and len(good.json()["predictions"]) == 3 and live == 200
    assert rss_after - rss_before < 100 * 2**20, (rss_before, rss_after)
    assert "Traceback" not in log, log[-2000:]
    assert os.path.exists(tiny_model_dir)


def test_connections_over_the_cap_get_503_and_the_load_test_ignores_proxies(
    tiny_model_dir, monkeypatch
):
    """`--max-connections 2`: with two connections held open, a third request is refused at
    once (uvicorn's limit_concurrency); and the load test connects to the checked loopback
    address itself, so an HTTP_PROXY in the environment cannot take its traffic elsewhere."""
    from compress.serving.loadtest import check_loopback, load_test

    with server_process(tiny_model_dir, "--max-connections", "2") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        try:
            time.sleep(0.3)
            refused = httpx.get(f"{url}/live")
        finally:
            for sock in held:
                sock.close()
        assert refused.status_code == 503
        time.sleep(0.3)
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a dead proxy
        monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
        assert check_loopback(f"http://localhost:{port}") in (
            f"http://127.0.0.1:{port}",
            f"http://[::1]:{port}",
        )
        result = load_test(url, TEXTS, seconds=1.0, concurrency=1, max_requests=5)
    assert result["errors"] == 0 and result["requests"] == 5
