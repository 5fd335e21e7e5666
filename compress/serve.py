"""`edgebert serve`: a small HTTP JSON API around one model, with batching and monitoring.

Requests that arrive together are answered by one ORT call: a collector task waits at most
`max_wait_ms` for up to `max_batch` texts, runs them as one length-sorted batch in a worker
thread, and resolves each request's future. `/metrics` speaks Prometheus text format: request
count by status, request latency and batch size histograms, queue depth, and the predicted
label distribution (the cheapest drift alarm: a label's share moving is visible at once).

Under overload the server sheds work instead of queueing it without limit (`ServeLimits`): the
queue holds about one second of work (measured at start) and a full queue answers 503 with
Retry-After; a request that cannot be answered within its deadline gets 504 and is never
computed; bodies over the byte cap get 413 (411 without a length) and requests over the
character cap 413. `/live` says the process answers, `/ready` whether it takes traffic. On
SIGTERM it drains: `/ready` turns 503, new requests get 503, requests in flight are answered,
then it exits (uvicorn's graceful shutdown, bounded by `drain_seconds`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import socket
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from bench.probabilities import CONFIDENCE_EDGES
from compress.errors import EdgebertError
from compress.predict import Predictor
from compress.serve_limits import ServeLimits
from compress.traffic_log import TrafficLog

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
MAX_TEXTS_PER_REQUEST = 256


class PredictRequest(BaseModel):
    """Body of POST /predict (module level: FastAPI resolves the annotation by name)."""

    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS_PER_REQUEST)


class Overloaded(Exception):
    """The queue is full: answer 503 with Retry-After."""

    def __init__(self, retry_after: int):
        super().__init__(f"server overloaded: retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future


def measured_capacity(predictor: Predictor, batch: int, rounds: int = 3) -> float:
    """Texts per second of full batches of a typical short review (after one warm-up call):
    what sizes the default queue at about one second of work."""
    texts = ["the battery lasts all day and the screen is sharp, but the case feels cheap"] * batch
    predictor.predict(texts)
    started = time.perf_counter()
    for _ in range(rounds):
        predictor.predict(texts)
    return rounds * batch / max(time.perf_counter() - started, 1e-6)


class Metrics:
    """Prometheus collectors in a registry of their own (one per app, so tests stay isolated)."""

    def __init__(self, labels: list[str]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "edgebert_requests", "HTTP /predict requests", ["status"], registry=self.registry
        )
        self.latency = Histogram(
            "edgebert_request_seconds",
            "/predict latency, seconds",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch = Histogram(
            "edgebert_batch_size",
            "texts per model call",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.predicted = Counter(
            "edgebert_predicted", "predicted labels", ["label"], registry=self.registry
        )
        self.confidence = Histogram(
            "edgebert_confidence",
            "probability of the predicted label (a falling share of high buckets: drift)",
            ["label"],
            buckets=CONFIDENCE_EDGES,
            registry=self.registry,
        )
        self.queued = Gauge(
            "edgebert_queue_texts", "texts waiting for the model", registry=self.registry
        )
        for label in labels:  # every label present from the start, at 0
            self.predicted.labels(label=label)
            self.confidence.labels(label=label)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class Batcher:
    """Collects texts from concurrent requests and runs them through the model together."""

    def __init__(
        self, predictor: Predictor, metrics: Metrics, limits: ServeLimits, capacity: float
    ):
        self.predictor = predictor
        self.metrics = metrics
        self.max_batch = limits.max_batch
        self.max_wait = limits.max_wait_ms / 1000.0
        self.deadline = limits.deadline_ms / 1000.0
        self.capacity = capacity  # texts per second
        self.max_queue = limits.max_queue or max(limits.max_batch, round(capacity))
        self.queued = 0  # texts submitted and not yet taken into a batch
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    @property
    def full(self) -> bool:
        return self.queued >= self.max_queue

    async def submit(self, texts: list[str]) -> list[dict]:
        """The texts' answers; Overloaded when the queue is full, TimeoutError past the
        deadline (the request is then dropped from the queue, never computed)."""
        if self.queued + len(texts) > self.max_queue:
            raise Overloaded(max(1, math.ceil(self.queued / self.capacity)))
        future = asyncio.get_running_loop().create_future()
        self.queued += len(texts)
        self.metrics.queued.set(self.queued)
        await self.queue.put(_Pending(texts, future))
        return await asyncio.wait_for(future, self.deadline)

    async def _take(self, timeout: float | None = None) -> _Pending | None:
        """The next request still waiting for its answer (None: none within `timeout`)."""
        loop = asyncio.get_running_loop()
        until = None if timeout is None else loop.time() + timeout
        while True:
            wait = None if until is None else max(0.0, until - loop.time())
            try:
                item = await asyncio.wait_for(self.queue.get(), wait)
            except TimeoutError:
                return None
            self.queued -= len(item.texts)
            self.metrics.queued.set(self.queued)
            if not item.future.done():  # a request past its deadline was cancelled: skip it
                return item

    async def _loop(self) -> None:
        while True:
            batch = [await self._take()]
            size = len(batch[0].texts)
            window_ends = asyncio.get_running_loop().time() + self.max_wait
            while size < self.max_batch:
                item = await self._take(window_ends - asyncio.get_running_loop().time())
                if item is None:
                    break
                batch.append(item)
                size += len(item.texts)
            await self._run(batch)

    async def _run(self, batch: list[_Pending]) -> None:
        texts = [t for item in batch for t in item.texts]
        self.metrics.batch.observe(len(texts))
        try:
            results = await asyncio.to_thread(self.predictor.predict, texts)
        except EdgebertError:
            # One bad text must not fail its neighbours: answer each request on its own.
            for item in batch:
                await self._run_one(item)
            return
        except Exception as exc:  # a fault in the model call: fail these requests, keep serving
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        start = 0
        for item in batch:
            part = results[start : start + len(item.texts)]
            start += len(item.texts)
            if not item.future.done():
                item.future.set_result(part)

    async def _run_one(self, item: _Pending) -> None:
        try:
            result = await asyncio.to_thread(self.predictor.predict, item.texts)
        except EdgebertError as exc:
            if not item.future.done():
                item.future.set_exception(exc)
            return
        if not item.future.done():
            item.future.set_result(result)


def create_app(model: Path, limits: ServeLimits = ServeLimits(), traffic: TrafficLog | None = None):
    """The FastAPI app for one model (loaded now, so a bad model fails before serving); with
    `traffic`, every answer is also logged for `edgebert monitor`."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    predictor = Predictor(model)
    labels = predictor.runner.label_names
    metrics = Metrics(labels)
    batcher = Batcher(predictor, metrics, limits, measured_capacity(predictor, limits.max_batch))

    @asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="edgebert", lifespan=lifespan)
    app.state.draining = False  # set on SIGTERM (DrainingServer): refuse new work, finish old
    _add_body_cap(app, limits, metrics)
    _add_predict(app, batcher, metrics, limits, traffic)
    _add_probes(app, model, predictor, batcher, metrics)
    return app


def _error(status: int, message: str, metrics: Metrics, headers: dict | None = None):
    from fastapi.responses import JSONResponse

    metrics.requests.labels(status=str(status)).inc()
    return JSONResponse(status_code=status, content={"error": message}, headers=headers)


def _add_body_cap(app, limits: ServeLimits, metrics: Metrics) -> None:
    """413 before the body is read when Content-Length is over the cap; 411 without one."""

    @app.middleware("http")
    async def body_cap(request, call_next):
        if request.method == "POST":
            length = request.headers.get("content-length", "")
            if not length.isdigit():
                return _error(411, "a POST needs a Content-Length header", metrics)
            if int(length) > limits.max_body_bytes:
                return _error(
                    413, f"body of {length} bytes is over {limits.max_body_bytes}", metrics
                )
        return await call_next(request)


def _add_predict(
    app, batcher: Batcher, metrics: Metrics, limits: ServeLimits, traffic: TrafficLog | None
) -> None:
    @app.post("/predict")
    async def predict(request: PredictRequest):
        started = time.perf_counter()
        if app.state.draining:
            return _error(503, "server shutting down", metrics, {"Retry-After": "1"})
        chars = sum(len(t) for t in request.texts)
        if chars > limits.max_chars:
            return _error(413, f"{chars} characters of text is over {limits.max_chars}", metrics)
        try:
            results = await batcher.submit(request.texts)
        except Overloaded as exc:
            return _error(503, str(exc), metrics, {"Retry-After": str(exc.retry_after)})
        except TimeoutError:
            return _error(504, f"not answered within {limits.deadline_ms:.0f} ms", metrics)
        except EdgebertError as exc:
            return _error(422, str(exc), metrics)
        for result in results:  # a label per text, or an entity type per entity (NER)
            for label in (
                [result["label"]] if "label" in result else [e["type"] for e in result["entities"]]
            ):
                metrics.predicted.labels(label=label).inc()
            if "score" in result:
                metrics.confidence.labels(label=result["label"]).observe(result["score"])
        if traffic is not None:
            traffic.record(results)
        metrics.requests.labels(status="200").inc()
        metrics.latency.observe(time.perf_counter() - started)
        return {"predictions": results}


def _add_probes(app, model: Path, predictor: Predictor, batcher: Batcher, metrics: Metrics):
    from fastapi.responses import JSONResponse, Response

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "model": str(model),
            "kind": predictor.runner.kind,
            "labels": predictor.runner.label_names,
            "capacity_texts_per_s": round(batcher.capacity, 1),
            "max_queue": batcher.max_queue,
        }

    @app.get("/live")
    async def live():
        """The process and its event loop answer (restart it when this fails)."""
        return {"live": True}

    @app.get("/ready")
    async def ready():
        """Whether to send traffic here: not while draining, nor while the queue is full."""
        ok = not app.state.draining and not batcher.full
        return JSONResponse(
            status_code=200 if ok else 503,
            content={"ready": ok, "draining": app.state.draining, "queued": batcher.queued},
        )

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


def serve(
    model: Path, host: str, port: int, limits: ServeLimits, traffic: TrafficLog | None = None
) -> None:
    """Run the app under uvicorn until SIGTERM/SIGINT, then drain (module docstring)."""
    import uvicorn

    app = create_app(model, limits, traffic)

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.draining = True
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=math.ceil(limits.drain_seconds),
    )
    DrainingServer(config).run()


def check_loopback(url: str) -> None:
    """Refuse any target that is not this machine: the URL is parsed (so `127.0.0.1@host` is
    the host it really names) and every address its host resolves to must be loopback."""
    parts = urllib.parse.urlsplit(url)
    refuse = EdgebertError(f"load test targets loopback addresses only, not {url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise refuse
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        raise refuse from None
    addresses = {info[4][0].split("%")[0] for info in infos}
    if not addresses or not all(ipaddress.ip_address(a).is_loopback for a in addresses):
        raise refuse


def load_test(
    url: str, texts: list[str], seconds: float, concurrency: int = 8, max_requests: int = 100_000
) -> dict:
    """Send single-text /predict requests from `concurrency` clients for at most `seconds`
    (and at most `max_requests`), each client sending its next request as soon as the last is
    answered (refused ones too: an overload test). Returns answered requests/s, latency
    percentiles of the answered (200) requests and counts by status. Loopback only."""
    import threading

    import httpx
    import numpy as np

    check_loopback(url)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=30.0) as http:
            i = worker
            while time.perf_counter() < stop_at:
                with lock:
                    if sum(statuses.values()) >= max_requests:
                        return
                t0 = time.perf_counter()
                try:
                    response = http.post("/predict", json={"texts": [texts[i % len(texts)]]})
                    status = str(response.status_code)
                except httpx.HTTPError:
                    status = "connection error"
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == "200":
                        latencies.append(time.perf_counter() - t0)
                if status == "connection error":
                    return
                i += concurrency

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(w,)) for w in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if not latencies:
        raise EdgebertError(f"{url}: no successful answers (statuses: {statuses})")
    values = np.asarray(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "errors": sum(statuses.values()) - len(latencies),
        "statuses": dict(sorted(statuses.items())),
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p99_ms": round(float(np.percentile(values, 99)), 2),
        "max_ms": round(float(values.max()), 2),
        "concurrency": concurrency,
    }
