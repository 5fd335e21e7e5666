"""`edgebert serve`: batched answers, Prometheus metrics, a bounded loopback load test."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time

import httpx
import pytest

from compress.errors import EdgebertError
from compress.serving.limits import ServeLimits
from compress.serving.loadtest import check_loopback, load_test
from compress.serving.predict import Predictor
from compress.serving.serve import create_app
from tests.conftest import sample_rows

TEXTS = [r["text"] for r in sample_rows("validation", 40, seed=5)]


@contextlib.contextmanager
def serving(model, max_wait_ms: float = 20, traffic=None):
    """A real uvicorn server on a free loopback port, in a thread, stopped at the end."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(model, ServeLimits(max_batch=16, max_wait_ms=max_wait_ms), traffic)
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    for _ in range(100):
        if instance.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        instance.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with serving(tiny_model_dir) as url:
        yield url


@pytest.fixture(scope="module")
def shipped_files(tiny_model_dir, tmp_path_factory):
    """The tiny classifier as an .onnx file and as an ORT mobile .ort file."""
    from export.mobile import convert_to_ort
    from export.onnx_export import export_onnx

    onnx_path = export_onnx(tiny_model_dir, tmp_path_factory.mktemp("shipped"))
    ort_path, _ = convert_to_ort(onnx_path, onnx_path.parent)
    return {"onnx": onnx_path, "ort": ort_path}


@pytest.mark.parametrize("kind", ["onnx", "ort"])
def test_predict_cli_on_shipped_files_matches_pytorch(kind, shipped_files, tiny_model_dir, run_cli):
    code, out, err = run_cli("predict", shipped_files[kind], TEXTS[0])
    assert code == 0, err
    got = json.loads(out)
    want = Predictor(tiny_model_dir).predict(TEXTS[:1])[0]
    assert got["label"] == want["label"]
    assert got["probs"] == pytest.approx(want["probs"], abs=1e-4)


@pytest.mark.parametrize("kind", ["onnx", "ort"])
def test_a_bad_text_does_not_fail_the_good_request_batched_with_it(kind, shipped_files):
    """Two requests inside one batching window: ORT runs them as one length-sorted batch; the
    empty text fails its own request (422) and the good one still gets its answer (200)."""
    expected = Predictor(shipped_files[kind]).predict(TEXTS[:3])
    with serving(shipped_files[kind], max_wait_ms=200) as url, httpx.Client(base_url=url) as http:
        assert http.get("/health").json()["kind"] == kind
        answers: dict[str, httpx.Response] = {}

        def send(name: str, texts: list[str]) -> None:
            answers[name] = http.post("/predict", json={"texts": texts})

        threads = [
            threading.Thread(target=send, args=("bad", ["fine", "   "])),
            threading.Thread(target=send, args=("good", TEXTS[:3])),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        metrics = http.get("/metrics").text
    assert answers["bad"].status_code == 422
    assert answers["good"].status_code == 200
    got = answers["good"].json()["predictions"]
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    assert _metric(metrics, "edgebert_batch_size_count") >= 1


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_predict_health_and_metrics(server, tiny_model_dir):
    expected = Predictor(tiny_model_dir).predict(TEXTS[:5])
    with httpx.Client(base_url=server) as http:
        health = http.get("/health").json()
        assert health["status"] == "ok" and health["labels"] == ["negative", "positive"]
        answer = http.post("/predict", json={"texts": TEXTS[:5]}).json()["predictions"]
        assert [a["label"] for a in answer] == [e["label"] for e in expected]
        for got, want in zip(answer, expected):
            assert got["probs"] == pytest.approx(want["probs"], abs=1e-5)
        bad = http.post("/predict", json={"texts": ["fine", "   "]})
        assert bad.status_code == 422 and bad.json() == {"error": "text 2 is empty after cleaning"}
        assert http.post("/predict", json={"texts": []}).status_code == 422
        metrics = http.get("/metrics").text
    assert 'edgebert_requests_total{status="200"}' in metrics
    assert _metric(metrics, 'edgebert_requests_total{status="422"}') == 2  # each as answered
    assert _metric(metrics, "edgebert_predicted_total") >= 5


def test_concurrent_requests_are_batched_and_load_test_is_bounded(server):
    with httpx.Client(base_url=server) as http:
        before = http.get("/metrics").text
    result = load_test(server, TEXTS, seconds=1.5, concurrency=8, max_requests=400)
    assert result["errors"] == 0 and 0 < result["requests"] <= 400 and result["seconds"] < 10
    assert result["requests_per_s"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"]
    with httpx.Client(base_url=server) as http:
        after = http.get("/metrics").text
    served = _metric(after, 'edgebert_requests_total{status="200"}') - _metric(
        before, 'edgebert_requests_total{status="200"}'
    )
    assert served == result["requests"]
    calls = _metric(after, "edgebert_batch_size_count") - _metric(
        before, "edgebert_batch_size_count"
    )
    texts = _metric(after, "edgebert_batch_size_sum") - _metric(before, "edgebert_batch_size_sum")
    assert texts == result["requests"] and calls < texts  # 8 clients: several texts per model call
    labels = _metric(after, "edgebert_predicted_total") - _metric(
        before, "edgebert_predicted_total"
    )
    assert labels == result["requests"]


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8000",
        "http://127.0.0.1@10.0.0.1:8000",  # userinfo: the host is 10.0.0.1
        "http://localhost.example.com",  # a name that only starts like loopback
        "http://[2001:db8::1]:8000",  # IPv6, not ::1
        "ftp://127.0.0.1",
    ],
)
def test_load_test_refuses_every_non_loopback_target(url):
    with pytest.raises(EdgebertError, match="loopback addresses only"):
        load_test(url, ["a"], seconds=0.1)


def test_load_test_accepts_loopback_names_and_refuses_dead_servers():
    for url in ("http://localhost:1", "http://[::1]:1", "http://127.0.0.5:1"):
        check_loopback(url)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(EdgebertError, match="no successful answers"):
        load_test(f"http://127.0.0.1:{port}", ["a"], seconds=0.5, concurrency=2)


def test_answers_are_logged_rotating_and_confidence_is_a_histogram(tiny_model_dir, tmp_path):
    from compress.serving.traffic_log import TrafficLog, read_traffic

    log = tmp_path / "traffic.jsonl"
    traffic = TrafficLog(log, keep_texts=False, max_bytes=2000, backups=2)
    with serving(tiny_model_dir, traffic=traffic) as url, httpx.Client(base_url=url) as http:
        answers = []
        for i in range(0, 40, 8):
            answers += http.post("/predict", json={"texts": TEXTS[i : i + 8]}).json()["predictions"]
        metrics = http.get("/metrics").text
    traffic.close()
    entries = read_traffic(log)
    kept = len(entries)  # the oldest rotated away: 3 files of at most 2,000 bytes
    assert 0 < kept < 40 and sorted(p.name for p in tmp_path.iterdir()) == [
        "traffic.jsonl", "traffic.jsonl.1", "traffic.jsonl.2"
    ]  # fmt: skip
    (tmp_path / "traffic.jsonl.bak").write_text("an operator's copy, not a rotation\n")
    assert read_traffic(log) == entries
    for entry, answer in zip(entries, answers[-kept:]):  # the newest, in order
        assert entry["label"] == answer["label"] and entry["score"] == answer["score"]
        assert entry["text_sha256"] == hashlib.sha256(answer["text"].encode()).hexdigest()
        assert "text" not in entry
    counts = {
        label: _metric(metrics, f'edgebert_confidence_count{{label="{label}"}}')
        for label in ("negative", "positive")
    }
    assert sum(counts.values()) == 40
    for label, count in counts.items():
        assert _metric(metrics, f'edgebert_confidence_bucket{{label="{label}",le="1.0"}}') == count
        assert _metric(metrics, f'edgebert_confidence_bucket{{label="{label}",le="0.4"}}') == 0
