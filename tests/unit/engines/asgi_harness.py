"""A real ASGIEngine on 127.0.0.1:0 in a background thread (lifespan startup included).

Same shape as `wsgi_harness.serve`: the test binds the port and keeps the socket,
the loop runs in its own thread, tests use plain blocking sockets.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from wsgi_harness import FAST, new_loop

from unbroken.engines.asgi.engine import ASGIEngine


@dataclass
class RunningASGI:
    port: int
    engine: ASGIEngine
    loop: asyncio.AbstractEventLoop

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=2)

    def drain(self, timeout: float) -> float:
        started = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(self.engine.drain(started + timeout), self.loop)
        future.result(timeout + 5)
        return time.monotonic() - started

    def drain_in_background(self, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(
            self.engine.drain(time.monotonic() + timeout), self.loop)


def start_engine(app: Any, **overrides: Any) -> tuple[ASGIEngine, asyncio.AbstractEventLoop]:
    """Run lifespan startup on a fresh loop; raises what startup raises."""
    loop = new_loop()
    engine = ASGIEngine(app, replace(FAST, **overrides), loop)
    try:
        loop.run_until_complete(asyncio.wait_for(engine.startup(), 5))
    except BaseException:
        loop.close()
        raise
    return engine, loop


@contextmanager
def serve(app: Any, **overrides: Any) -> Iterator[RunningASGI]:
    engine, loop = start_engine(app, **overrides)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(engine.start([listener]))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(2)
    server = RunningASGI(listener.getsockname()[1], engine, loop)
    try:
        yield server
    finally:
        if not engine._server.draining:
            server.drain(0.2)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(2)
        loop.close()
        listener.close()
