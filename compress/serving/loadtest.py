"""`edgebert loadtest`: a bounded load test of a running server, on loopback addresses only.

The target must be this machine: its name must resolve to loopback addresses only, the clients
connect to the checked address (never resolving the name again) and ignore proxy settings.
"""

from __future__ import annotations

import ipaddress
import socket
import time
import urllib.parse

from compress.errors import EdgebertError


def check_loopback(url: str) -> str:
    """The base URL to connect to, naming the checked loopback address itself: the URL is
    parsed (so `127.0.0.1@host` is the host it really names), every address its host resolves
    to must be loopback, and the clients then connect to that address, so the name is not
    resolved a second time (a DNS answer that changes in between cannot redirect them)."""
    refuse = EdgebertError(f"load test targets loopback addresses only, not {url}")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise refuse from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise refuse
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        raise refuse from None
    addresses = sorted({info[4][0].split("%")[0] for info in infos})
    if not addresses or not all(ipaddress.ip_address(a).is_loopback for a in addresses):
        raise refuse
    address = ipaddress.ip_address(addresses[0])
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{parts.scheme}://{host}:{port}"


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

    base_url = check_loopback(url)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(worker: int) -> None:
        # trust_env=False: HTTP_PROXY and friends must not send loopback traffic elsewhere.
        with httpx.Client(base_url=base_url, timeout=30.0, trust_env=False) as http:
            i = worker
            while time.perf_counter() < stop_at:
                with lock:
                    if sum(statuses.values()) >= max_requests:
                        return
                t0 = time.perf_counter()
                try:
                    response = http.post("/predict", json={"texts": [texts[i % len(texts)]]})
                    status = str(response.status_code)
                except Exception:  # noqa: BLE001 - any failure to talk is one count, no traceback
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
