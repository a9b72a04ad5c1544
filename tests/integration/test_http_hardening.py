"""Issue 14's reproduced defects, the exact bytes sent to a real server on 127.0.0.1
(each failed before its fix): a second, unasked-for 431 after a valid chunked upload
that arrives in one read, and CONNECT passed to the app."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

ASGI_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"ok\\n"})
"""
HEAD = b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
AFTER = b"GET /after HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"


def _chunks(count: int, size: int) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (size, b"x" * size) for _ in range(count)) + b"0\r\n\r\n"


def _exchange(address: tuple[str, int], data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data` in one write; everything the server answers until it closes."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        received, deadline = b"", time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                part = sock.recv(65536)
            except TimeoutError:
                break
            if not part:
                break
            received += part
        return received


def _statuses(answer: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)


BODIES = {
    "4 x 16 KiB": _chunks(4, 16384),
    "70 x 1 KiB": _chunks(70, 1024),
    "12 x 8 KiB": _chunks(12, 8192),
    "20,000 x 1 byte": _chunks(20_000, 1),
    "large trailers": _chunks(4, 16384)[:-2] + b"".join(
        b"X-T%d: %s\r\n" % (i, b"t" * 500) for i in range(20)) + b"\r\n",
}


@pytest.mark.parametrize("body", list(BODIES), ids=list(BODIES))
@pytest.mark.parametrize("worker_class", ["wsgi", "asgi"])
def test_a_chunked_upload_in_one_read_is_answered_once_and_the_next_request_runs(
        service_factory: Any, releases: Path, body: str, worker_class: str) -> None:
    (releases / "current" / "asgi_app.py").write_text(ASGI_APP)
    app = "app:app" if worker_class == "wsgi" else "asgi_app:app"
    service = service_factory("-k", worker_class, app=app)
    service.wait_serving()
    answer = _exchange(service.address, HEAD + BODIES[body] + AFTER)
    assert _statuses(answer) == [b"200", b"200"], answer[-500:]
    assert b"431" not in answer


def test_connect_is_refused_and_never_reaches_the_app(service_factory: Any) -> None:
    service = service_factory()
    service.wait_serving()
    answer = _exchange(service.address, b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n")
    assert _statuses(answer) == [b"400"], answer
    assert b"connection: close" in answer.lower()
    assert b"v1 " not in answer  # the app answers "v1 <pid>"


def test_a_body_over_limit_request_body_is_413_before_the_app_runs(
        service_factory: Any) -> None:
    service = service_factory("--limit-request-body", "1K")
    service.wait_serving()
    declared = _exchange(service.address, b"POST /x HTTP/1.1\r\nHost: h\r\n"
                         b"Content-Length: 2048\r\n\r\n" + b"x" * 2048)
    assert _statuses(declared) == [b"413"] and b"v1 " not in declared, declared
    chunked = _exchange(service.address, HEAD + _chunks(3, 512))  # crosses it at 1,025
    assert _statuses(chunked)[-1:] == [b"413"], chunked
    within = _exchange(service.address, b"POST /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
                       b"Content-Length: 1024\r\n\r\n" + b"x" * 1024)
    assert _statuses(within) == [b"200"], within
