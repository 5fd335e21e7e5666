"""The HTTP front door of `edgebert serve`: an ASGI middleware that reads every POST body itself
before the app sees it, and counts every /predict answer by the status that was really sent.

Why not trust the server's parser: h11 follows `Transfer-Encoding: chunked` even when a
`Content-Length` is also given, so a length check alone lets a body grow without bound, and a
client that sends one byte a minute holds a worker for ever. Here a POST must give one
Content-Length and no Transfer-Encoding (400/411 otherwise), is refused at once above the byte
cap (413), and is read with a byte count and a deadline (413 past the cap, 408 past the
deadline). Counting in the middleware means a response that failed while it was being written
(a 500) is counted as 500, not as the 200 the handler meant to send.
"""

from __future__ import annotations

import asyncio
import json

from compress.serving.limits import ServeLimits

COUNTED_PATH = "/predict"


def json_bytes(content: dict) -> bytes:
    """JSON that any string fits into: ASCII escapes (a lone surrogate included), no NaN."""
    return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


class Refusal(Exception):
    """A request refused before the app saw it: its status and one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class RequestGuard:
    """Wraps the app: POST bodies are read here under the limits, then replayed to the app."""

    def __init__(self, app, limits: ServeLimits, count):
        self.app = app
        self.limits = limits
        self.count = count  # count(status: int) for each answered /predict request

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sent: dict[str, int] = {}

        async def send_seen(message):
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            await send(message)

        try:
            if scope["method"] == "POST":
                try:
                    body = await self._read_body(scope, receive)
                except Refusal as refusal:
                    await _respond(send_seen, refusal.status, str(refusal))
                    return
                if body is None:  # the client went away
                    return
                receive = _replay(body)
            await self.app(scope, receive, send_seen)
        finally:
            if scope["path"] == COUNTED_PATH and "status" in sent:
                self.count(sent["status"])

    async def _read_body(self, scope, receive) -> bytes | None:
        length = _declared_length(scope["headers"], self.limits.max_body_bytes)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_seconds
        body = bytearray()
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise Refusal(
                    408, f"body not received within {self.limits.body_seconds:g} s"
                ) from None
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > length:
                raise Refusal(413, f"body is longer than its Content-Length of {length} bytes")
            if not message.get("more_body"):
                return bytes(body)


def _declared_length(headers: list[tuple[bytes, bytes]], cap: int) -> int:
    """The one Content-Length of a POST, within the cap; a Refusal otherwise."""
    lengths = [v for k, v in headers if k.lower() == b"content-length"]
    if any(k.lower() == b"transfer-encoding" for k, _ in headers):
        raise Refusal(
            411 if not lengths else 400,
            "chunked bodies are refused: send the body with one Content-Length header",
        )
    if not lengths:
        raise Refusal(411, "a POST needs a Content-Length header")
    if len(lengths) > 1 or not lengths[0].isdigit():
        raise Refusal(400, "a POST needs exactly one numeric Content-Length header")
    length = int(lengths[0])
    if length > cap:
        raise Refusal(413, f"body of {length} bytes is over {cap}")
    return length


def _replay(body: bytes):
    """A `receive` that hands the app the body already read, then waits like a live one."""
    delivered = False

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the app never reads past the body; disconnects unseen

    return receive


async def _respond(send, status: int, message: str) -> None:
    body = json_bytes({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
