"""--request-timeout (issue 16, item 3): a request running longer is answered 503 while
its siblings keep serving, logged with its method, path and duration, and its worker is
replaced (a new one ready first); on the inline path (--threads 1), the pool path
(--threads 4) and an ASGI task."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from loadcheck import assert_no_failures
from waiting import wait_until

from unbroken.loadgen import Load

ASGI_APP = '''
import asyncio, os


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(30)
    body = ("asgi %d\\n" % os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
'''


def _slow_request(address: tuple[str, int], seconds: float = 30) -> tuple[float, bytes]:
    started = time.monotonic()
    with socket.create_connection(address, timeout=20) as sock:
        sock.sendall(b"GET /slow?s=%g HTTP/1.1\r\nHost: t\r\n\r\n" % seconds)
        answer = b""
        while True:
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    return time.monotonic() - started, answer


@pytest.mark.parametrize("mode", ["inline", "threads", "asgi"])
def test_a_request_past_the_timeout_is_503_and_its_worker_replaced(
        service_factory: Any, releases: Path, mode: str) -> None:
    extra = {"inline": [], "threads": ["--threads", "4"], "asgi": ["-k", "asgi"]}[mode]
    if mode == "asgi":
        (releases / "current" / "asgi_app.py").write_text(ASGI_APP)
    service = service_factory("--request-timeout", "1", *extra,
                              app="asgi_app:app" if mode == "asgi" else "app:app")
    before = set(service.wait_serving() and service.worker_pids())
    load = Load(service.address, clients=2, keep_alive=False, duration=30,
                max_requests=50_000, timeout=15).start()
    time.sleep(0.3)
    took, answer = _slow_request(service.address)
    wait_until(lambda: len(set(service.worker_pids()) - before) >= 1, timeout=20,
               message="a replacement worker")
    wait_until(lambda: len(service.worker_pids()) == 2, timeout=20,
               message="back to two workers")
    time.sleep(0.3)
    samples = load.stop()
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert answer.endswith(b"the request ran past 1s\n")
    assert 1.0 <= took < 4.0, took
    assert_no_failures(samples, service)  # its siblings kept serving
    output = service.output()
    assert re.search(r"GET /slow ran \d+\.\ds, past --request-timeout 1s: answered 503", output)
    assert re.search(r"asks to be replaced: GET /slow ran past --request-timeout 1s", output)
    assert len(set(service.worker_pids()) - before) == 1  # one replaced, through the gate
