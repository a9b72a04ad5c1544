"""A real WSGIEngine on 127.0.0.1:0 in a background thread, and a tiny raw client.

The test binds the port itself and keeps the socket (no free-port race); the
engine's loop runs in its own thread so tests can use plain blocking sockets.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from unbroken.engines import EngineSettings
from unbroken.engines.wsgi.engine import WSGIApp, WSGIEngine

FAST = EngineSettings(
    threads=4,
    keep_alive_timeout=1.0,
    header_timeout=0.5,
    body_timeout=0.5,
)


def new_loop() -> asyncio.AbstractEventLoop:
    """asyncio's loop by default; UNBROKEN_TEST_LOOP=uvloop runs the suite on uvloop."""
    if os.environ.get("UNBROKEN_TEST_LOOP") == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


@dataclass
class RunningServer:
    port: int
    engine: WSGIEngine
    loop: asyncio.AbstractEventLoop

    def connect(self) -> socket.socket:
        client = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        return client

    def drain(self, timeout: float) -> float:
        """Drain with a deadline `timeout` from now; return how long it took."""
        started = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(
            self.engine.drain(started + timeout), self.loop
        )
        future.result(timeout + 2)
        return time.monotonic() - started


@contextmanager
def serve(app: WSGIApp, **overrides: Any) -> Iterator[RunningServer]:
    settings = replace(FAST, **overrides)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    loop = new_loop()
    ready = threading.Event()
    holder: dict[str, WSGIEngine] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        engine = WSGIEngine(app, settings, loop)
        holder["engine"] = engine
        loop.run_until_complete(engine.start([listener]))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(2)
    server = RunningServer(listener.getsockname()[1], holder["engine"], loop)
    try:
        yield server
    finally:
        try:
            server.drain(0.2)
        except RuntimeError:
            pass  # already drained by the test
        loop.call_soon_threadsafe(loop.stop)
        thread.join(2)
        loop.close()
        listener.close()


def read_response(
    client: socket.socket, head_only: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """Read one response (Content-Length, chunked or close-delimited body)."""
    buffer = _ReadBuffer(client)
    status_line = buffer.line()
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while line := buffer.line():
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if head_only or status in (100, 204, 304):
        return status, headers, b""
    if "content-length" in headers:
        return status, headers, buffer.exactly(int(headers["content-length"]))
    if headers.get("transfer-encoding") == "chunked":
        return status, headers, buffer.chunked()
    return status, headers, buffer.rest()


class _ReadBuffer:
    def __init__(self, client: socket.socket) -> None:
        self.client = client

    def _byte(self) -> bytes:
        data = self.client.recv(1)
        if not data:
            raise ConnectionError("closed")
        return data

    def line(self) -> str:
        data = b""
        while not data.endswith(b"\r\n"):
            data += self._byte()
        return data[:-2].decode("latin-1")

    def exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.client.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed mid-body")
            data += chunk
        return data

    def chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self.line().split(";")[0], 16)
            if size == 0:
                while self.line():
                    pass
                return body
            body += self.exactly(size)
            assert self.line() == ""

    def rest(self) -> bytes:
        data = b""
        while chunk := self.client.recv(65536):
            data += chunk
        return data


def is_closed(client: socket.socket, timeout: float = 1.5) -> bool:
    """True if the server closes (EOF or reset) within `timeout`."""
    client.settimeout(timeout)
    try:
        return client.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
