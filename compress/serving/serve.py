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
character cap 413. `/live` says the process and its batcher answer, `/ready` whether it takes
traffic. On SIGTERM it drains: `/ready` turns 503, new requests get 503, requests in flight are
answered, then it exits (uvicorn's graceful shutdown, bounded by `drain_seconds`).

Hostile input fails only its own request: texts are checked and cleaned when a request is
admitted (422 names the text), a fault in a model call fails only that batch, and the batcher
loop outlives anything a batch raises. Bodies are read by `guard.RequestGuard`.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from bench.probabilities import CONFIDENCE_EDGES
from compress.errors import EdgebertError
from compress.serving.guard import RequestGuard, json_bytes
from compress.serving.limits import ServeLimits
from compress.serving.predict import Predictor
from compress.serving.traffic_log import TrafficLog

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
MAX_TEXTS_PER_REQUEST = 256


class PredictRequest(BaseModel):
    """Body of POST /predict (module level: FastAPI resolves the annotation by name)."""

    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS_PER_REQUEST)


class SafeJSONResponse(JSONResponse):
    """Every answer renders, whatever string or number it holds (ASCII escapes, no NaN)."""

    def render(self, content) -> bytes:
        return json_bytes(content)


class TooManyTexts(Exception):
    """More texts than the whole queue holds: no wait makes room, so 413, not 503."""


class Overloaded(Exception):
    """The queue is full: answer 503 with Retry-After."""

    def __init__(self, retry_after: int):
        super().__init__(f"server overloaded: retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Pending:
    texts: list[str]
    cleaned: list[str]
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
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def full(self) -> bool:
        return self.queued >= self.max_queue

    async def submit(self, texts: list[str], cleaned: list[str]) -> list[dict]:
        """The texts' answers; TooManyTexts when the whole queue could not hold them,
        Overloaded when it is full now, TimeoutError past the deadline (the request is then
        dropped from the queue, never computed)."""
        if len(texts) > self.max_queue:
            raise TooManyTexts(f"{len(texts)} texts is over the queue's {self.max_queue}")
        if self.queued + len(texts) > self.max_queue:
            raise Overloaded(max(1, math.ceil(self.queued / self.capacity)))
        future = asyncio.get_running_loop().create_future()
        self.queued += len(texts)
        self.metrics.queued.set(self.queued)
        await self.queue.put(_Pending(texts, cleaned, future))
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
        """Batches for ever: whatever one batch raises fails that batch's requests only."""
        while True:
            batch = [await self._take()]
            try:
                size = len(batch[0].texts)
                window_ends = asyncio.get_running_loop().time() + self.max_wait
                while size < self.max_batch:
                    item = await self._take(window_ends - asyncio.get_running_loop().time())
                    if item is None:
                        break
                    batch.append(item)
                    size += len(item.texts)
                await self._run(batch)
            except asyncio.CancelledError:
                _fail(batch, EdgebertError("server shutting down"))
                raise
            except BaseException as exc:  # noqa: BLE001 - a tokenizer panic is a BaseException
                _fail(batch, exc)

    async def _run(self, batch: list[_Pending]) -> None:
        texts = [t for item in batch for t in item.texts]
        cleaned = [t for item in batch for t in item.cleaned]
        self.metrics.batch.observe(len(texts))
        try:
            results = await asyncio.to_thread(self.predictor.predict, texts, cleaned)
        except asyncio.CancelledError:
            raise
        except BaseException:  # noqa: BLE001 - find the request that caused it: one at a time
            for item in batch:
                await self._run_one(item)
            return
        start = 0
        for item in batch:
            part = results[start : start + len(item.texts)]
            start += len(item.texts)
            if not item.future.done():
                item.future.set_result(part)

    async def _run_one(self, item: _Pending) -> None:
        try:
            result = await asyncio.to_thread(self.predictor.predict, item.texts, item.cleaned)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - this request's fault, or the model's
            _fail([item], exc)
            return
        if not item.future.done():
            item.future.set_result(result)


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    """Fail the requests still waiting, with a plain Exception (a future refuses some
    BaseExceptions, and the handler answers any other error as a 500 without its text)."""
    error = exc if isinstance(exc, Exception) else RuntimeError(type(exc).__name__)
    for item in batch:
        if not item.future.done():
            item.future.set_exception(error)


def create_app(
    model: Path,
    limits: ServeLimits = ServeLimits(),
    traffic: TrafficLog | None = None,
    docs: bool = False,
):
    """The ASGI app for one model (loaded now, so a bad model fails before serving), behind
    `RequestGuard`; with `traffic`, every answer is also logged for `edgebert monitor`. The
    API pages (/docs, /openapi.json) exist only with `docs`."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError

    predictor = Predictor(model)
    labels = predictor.runner.label_names
    metrics = Metrics(labels)
    batcher = Batcher(predictor, metrics, limits, measured_capacity(predictor, limits.max_batch))

    @asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        yield
        await batcher.stop()

    pages = {} if docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(
        title="edgebert", lifespan=lifespan, default_response_class=SafeJSONResponse, **pages
    )
    app.state.draining = False  # set on SIGTERM (DrainingServer): refuse new work, finish old
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request, exc: RequestValidationError):
        """422 naming the field, never echoing the input (it may not even render)."""
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return _error(422, f"{where or 'body'}: {first.get('msg', 'invalid request')}")

    _add_predict(app, predictor, batcher, metrics, limits, traffic)
    _add_probes(app, model, predictor, batcher, metrics)
    app.state.guarded = RequestGuard(app, limits, lambda status: _count(metrics, status))
    return app.state.guarded


def _count(metrics: Metrics, status: int) -> None:
    metrics.requests.labels(status=str(status)).inc()


def _error(status: int, message: str, headers: dict | None = None) -> SafeJSONResponse:
    return SafeJSONResponse(status_code=status, content={"error": message}, headers=headers)


def _add_predict(
    app,
    predictor: Predictor,
    batcher: Batcher,
    metrics: Metrics,
    limits: ServeLimits,
    traffic: TrafficLog | None,
) -> None:
    @app.post("/predict")
    async def predict(request: PredictRequest):
        started = time.perf_counter()
        if app.state.draining:
            return _error(503, "server shutting down", {"Retry-After": "1"})
        chars = sum(len(t) for t in request.texts)
        if chars > limits.max_chars:
            return _error(413, f"{chars} characters of text is over {limits.max_chars}")
        try:
            cleaned = predictor.prepare(request.texts)
            results = await batcher.submit(request.texts, cleaned)
        except TooManyTexts as exc:
            return _error(413, f"{exc}: send at most {batcher.max_queue} texts per request")
        except Overloaded as exc:
            return _error(503, str(exc), {"Retry-After": str(exc.retry_after)})
        except TimeoutError:
            return _error(504, f"not answered within {limits.deadline_ms:.0f} ms")
        except EdgebertError as exc:
            return _error(422, str(exc))
        except Exception as exc:  # noqa: BLE001 - the model failed on this batch; keep serving
            return _error(500, f"the model failed on this request ({type(exc).__name__})")
        _observe(metrics, results)
        if traffic is not None:
            traffic.record(results)
        metrics.latency.observe(time.perf_counter() - started)
        return {"predictions": results}


def _observe(metrics: Metrics, results: list[dict]) -> None:
    """Label and confidence counters: a label per text, or an entity type per entity (NER)."""
    for result in results:
        kinds = [result["label"]] if "label" in result else [e["type"] for e in result["entities"]]
        for label in kinds:
            metrics.predicted.labels(label=label).inc()
        if "score" in result:
            metrics.confidence.labels(label=result["label"]).observe(result["score"])


def _add_probes(app, model: Path, predictor: Predictor, batcher: Batcher, metrics: Metrics):
    from fastapi.responses import Response

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "model": model.name,  # not the path: it tells a client about the host's disk
            "kind": predictor.runner.kind,
            "labels": predictor.runner.label_names,
            "capacity_texts_per_s": round(batcher.capacity, 1),
            "max_queue": batcher.max_queue,
        }

    @app.get("/live")
    async def live():
        """The process, its event loop and its batcher answer (restart it when this fails)."""
        if not batcher.alive:
            return _error(503, "the batcher stopped: restart this server")
        return {"live": True}

    @app.get("/ready")
    async def ready():
        """Whether to send traffic here: not while draining, nor while the queue is full."""
        ok = not app.state.draining and not batcher.full and batcher.alive
        return SafeJSONResponse(
            status_code=200 if ok else 503,
            content={"ready": ok, "draining": app.state.draining, "queued": batcher.queued},
        )

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


def serve(
    model: Path,
    host: str,
    port: int,
    limits: ServeLimits,
    traffic: TrafficLog | None = None,
    docs: bool = False,
) -> None:
    """Run the app under uvicorn until SIGTERM/SIGINT, then drain (module docstring)."""
    import uvicorn

    guarded = create_app(model, limits, traffic, docs)

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            guarded.app.state.draining = True
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        guarded,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=math.ceil(limits.drain_seconds),
        limit_concurrency=limits.max_connections,
    )
    DrainingServer(config).run()
