"""The ASGI app every ASGI server in bench/speed.py serves: a plain ASGI 3 callable.

The same routes and bytes as app_wsgi.py, so the two interfaces run the same cases.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from payloads import HELLO, JSON, SLEEP_SECONDS, STREAM_CHUNK, STREAM_CHUNKS

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _fixed(send: Send, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _stream(send: Send) -> None:
    # No content-length: the server has to frame it (chunked, or close at the end).
    headers = [(b"content-type", b"application/octet-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for _ in range(STREAM_CHUNKS):
        await send({"type": "http.response.body", "body": STREAM_CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _read_body(receive: Receive) -> int:
    total = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return total  # http.disconnect
        total += len(message.get("body", b""))
        if not message.get("more_body", False):
            return total


async def _lifespan(receive: Receive, send: Send) -> None:
    """Accept startup and shutdown, so servers that run lifespan do not log a failure."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path = scope["path"]
    if path == "/":
        await _fixed(send, HELLO, b"text/plain")
    elif path == "/json":
        await _fixed(send, JSON, b"application/json")
    elif path == "/stream":
        await _stream(send)
    elif path == "/upload":
        await _fixed(send, b"%d" % await _read_body(receive), b"text/plain")
    elif path == "/sleep":
        await asyncio.sleep(SLEEP_SECONDS)
        await _fixed(send, b"slept", b"text/plain")
    else:
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-length", b"0")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b""})
