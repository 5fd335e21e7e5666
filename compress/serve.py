"""`edgebert serve`: a small HTTP JSON API around one model, with batching and monitoring.

Requests that arrive together are answered by one ORT call: a collector task waits at most
`max_wait_ms` for up to `max_batch` texts, runs them as one length-sorted batch in a worker
thread, and resolves each request's future. `/metrics` speaks Prometheus text format: request
count by status, request latency and batch size histograms, and the predicted label
distribution (the cheapest drift alarm: a label's share moving is visible at once).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from compress.errors import EdgebertError
from compress.predict import Predictor

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
MAX_TEXTS_PER_REQUEST = 256


class PredictRequest(BaseModel):
    """Body of POST /predict (module level: FastAPI resolves the annotation by name)."""

    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS_PER_REQUEST)


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future


class Metrics:
    """Prometheus collectors in a registry of their own (one per app, so tests stay isolated)."""

    def __init__(self, labels: list[str]):
        from prometheus_client import CollectorRegistry, Counter, Histogram

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
        for label in labels:  # every label present from the start, at 0
            self.predicted.labels(label=label)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class Batcher:
    """Collects texts from concurrent requests and runs them through the model together."""

    def __init__(self, predictor: Predictor, metrics: Metrics, max_batch: int, max_wait_ms: float):
        self.predictor = predictor
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def submit(self, texts: list[str]) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(texts, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0].texts)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                try:
                    item = await asyncio.wait_for(
                        self.queue.get(), max(0.0, deadline - loop.time())
                    )
                except TimeoutError:
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


def create_app(model: Path, max_batch: int = 32, max_wait_ms: float = 5.0):
    """The FastAPI app for one model (loaded now, so a bad model fails before serving)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    predictor = Predictor(model)
    labels = predictor.runner.label_names
    metrics = Metrics(labels)
    batcher = Batcher(predictor, metrics, max_batch, max_wait_ms)

    @asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="edgebert", lifespan=lifespan)

    @app.post("/predict")
    async def predict(request: PredictRequest):
        started = time.perf_counter()
        try:
            results = await batcher.submit(request.texts)
        except EdgebertError as exc:
            metrics.requests.labels(status="422").inc()
            return JSONResponse(status_code=422, content={"error": str(exc)})
        for result in results:  # a label per text, or an entity type per entity (NER)
            for label in (
                [result["label"]] if "label" in result else [e["type"] for e in result["entities"]]
            ):
                metrics.predicted.labels(label=label).inc()
        metrics.requests.labels(status="200").inc()
        metrics.latency.observe(time.perf_counter() - started)
        return {"predictions": results}

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "model": str(model),
            "kind": predictor.runner.kind,
            "labels": labels,
        }

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(model: Path, host: str, port: int, max_batch: int, max_wait_ms: float) -> None:
    import uvicorn

    app = create_app(model, max_batch=max_batch, max_wait_ms=max_wait_ms)
    uvicorn.run(app, host=host, port=port, log_level="warning")


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
    (and at most `max_requests`); return requests/s and latency percentiles. Loopback only."""
    import threading

    import httpx
    import numpy as np

    check_loopback(url)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=30.0) as http:
            i = worker
            while time.perf_counter() < stop_at:
                with lock:
                    if len(latencies) + errors[0] >= max_requests:
                        return
                t0 = time.perf_counter()
                try:
                    response = http.post("/predict", json={"texts": [texts[i % len(texts)]]})
                except httpx.HTTPError:
                    with lock:
                        errors[0] += 1
                    return
                with lock:
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors[0] += 1
                i += concurrency

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(w,)) for w in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if not latencies:
        raise EdgebertError(f"{url}: no successful answers ({errors[0]} failed requests)")
    values = np.asarray(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "errors": errors[0],
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p99_ms": round(float(np.percentile(values, 99)), 2),
        "concurrency": concurrency,
    }
