"""The admission limits of `edgebert serve`, declared once: the CLI reads its option defaults
here without importing the server (and its model runtime) at start-up."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeLimits:
    """What one server admits: the defaults of `edgebert serve` are declared here only."""

    max_batch: int = 32  # texts per model call
    max_wait_ms: float = 5.0  # batching window
    max_queue: int = 0  # texts waiting at most; 0: about one second of work, measured at start
    deadline_ms: float = 2000.0  # a request not answered by then gets 504 (and is not computed)
    max_body_bytes: int = 1 << 20  # 413 above; 411 when a POST gives no Content-Length
    body_seconds: float = 10.0  # a body not received by then gets 408 (slow senders)
    max_connections: int = 64  # open connections at most (uvicorn's limit_concurrency); 503 above
    max_chars: int = 100_000  # characters in one request's texts, all together; 413 above
    drain_seconds: float = 10.0  # on SIGTERM: longest wait for requests in flight
