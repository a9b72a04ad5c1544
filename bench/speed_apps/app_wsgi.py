"""The WSGI app every WSGI server in bench/speed.py serves: a plain PEP 3333 callable.

No framework, so the numbers are the server's; each route exercises one cost (see
payloads.py for the bodies).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from payloads import HELLO, JSON, SLEEP_SECONDS, STREAM_CHUNK, STREAM_CHUNKS

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


def _fixed(start_response: StartResponse, body: bytes, content_type: str) -> list[bytes]:
    start_response("200 OK", [("Content-Type", content_type),
                              ("Content-Length", str(len(body)))])  # fmt: skip
    return [body]


def _stream() -> Iterator[bytes]:
    for _ in range(STREAM_CHUNKS):
        yield STREAM_CHUNK


def _read_body(environ: Environ) -> int:
    """Bytes read from the request body, in bounded reads as a real app would."""
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    total = 0
    while remaining > 0:
        chunk = stream.read(min(remaining, 65536))
        if not chunk:
            break
        total += len(chunk)
        remaining -= len(chunk)
    return total


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        return _fixed(start_response, HELLO, "text/plain")
    if path == "/json":
        return _fixed(start_response, JSON, "application/json")
    if path == "/stream":
        # No Content-Length: the server has to frame it (chunked, or close at the end).
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _stream()
    if path == "/upload":
        return _fixed(start_response, b"%d" % _read_body(environ), "text/plain")
    if path == "/sleep":
        time.sleep(SLEEP_SECONDS)
        return _fixed(start_response, b"slept", "text/plain")
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]
