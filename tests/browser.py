"""Drive a page written by `edgebert export --web` in headless Chromium (Debian's `chromium`,
through Playwright), served from loopback by a plain static file server.

Used by tests/test_web.py and by docs/measurements/browser/measure.py.
"""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}


class _QuietHandler(SimpleHTTPRequestHandler):
    extra_headers: dict[str, str] = {}

    def end_headers(self) -> None:
        for name, value in self.extra_headers.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        pass


@contextmanager
def serve_folder(folder: Path, isolated: bool = False) -> Iterator[str]:
    """Serve `folder` on 127.0.0.1 (a free port); yields the base URL. `isolated` adds the
    COOP/COEP headers that let the page use WebAssembly threads."""
    handler = type(
        "Handler", (_QuietHandler,), {"extra_headers": ISOLATION_HEADERS if isolated else {}}
    )
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def open_page(url: str) -> Iterator:
    """A headless Chromium page at `url`, once its model has loaded."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.wait_for_function("() => window.edgebert !== undefined", timeout=60_000)
            page.evaluate("() => edgebert.ready")
            assert not errors, errors
            yield page
        finally:
            browser.close()


def classify_in_page(page, texts: list[str]) -> tuple[dict, list[dict]]:
    """The page's runtime settings and one result per text (batch 1, in order)."""
    settings = page.evaluate("() => edgebert.ready")
    results = page.evaluate("texts => edgebert.classify(texts)", texts)
    return settings, results
