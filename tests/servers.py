"""Servers for the serve tests: a real `edgebert serve` process on a free loopback port."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server_process(model, *options: str):
    """(url, process); its stderr goes to a file, so a chatty server never blocks on a full
    pipe, and the test reads it (`process.log.read_text()`)."""
    port = free_port()
    command = [sys.executable, "-m", "compress.cli", "serve", str(model), "--port", str(port)]
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "stderr.log"
        with log.open("wb") as stderr:
            proc = subprocess.Popen([*command, *options], stdout=subprocess.DEVNULL, stderr=stderr)
        proc.log = log
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/live", timeout=1).status_code == 200:
                        break
                assert proc.poll() is None, log.read_text()
                time.sleep(0.1)
            yield url, proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
