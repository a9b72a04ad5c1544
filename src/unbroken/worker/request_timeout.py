"""--request-timeout (uWSGI's harakiri): a request running longer is answered 503, and
its worker is replaced through the gated path.

A thread, like the heartbeat, because a request served inline (`--threads 1`) holds the
loop: the loop cannot be the one to notice. Every `interval` it asks the engine for the
requests past the limit and, for each, once:

1. logs its method, path and how long it has run;
2. answers it. When the loop is free (the request runs in a pool thread, or is an ASGI
   task), on the loop: `exchange.time_out` sends the 503 if nothing was sent yet, else
   closes. When the loop itself is inside that request, from this thread, while the
   loop is held (the drain watchdog's Dekker-style meeting, worker/main.py): the 503 is
   written to the socket and the socket is shut down, so what the app sends when (if)
   it comes back fails and closes the connection. A TLS connection cannot be written
   to from here (its state is the loop's): it is only shut down;
3. asks the master to replace the worker (`Retire`). The master starts a replacement
   and drains this worker only once the replacement is ready, so capacity never drops.
   A worker whose loop is stuck drains at once when told to (`stuck`): there is
   nothing it could finish.

The application's thread cannot be stopped from outside; it ends with the process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from unbroken.engines.core.exchange import END_CLOSE, Exchange, timed_out_response
from unbroken.engines.core.states import NOT_STARTED

log = logging.getLogger("unbroken.worker")


class RequestTimeout:
    def __init__(self, limit: float, engine: Any, loop: asyncio.AbstractEventLoop,
                 retire: Callable[[str], None]) -> None:
        self.limit = limit
        self.engine = engine
        self.loop = loop
        self.retire = retire
        self.interval = min(1.0, limit / 4)
        self.stuck = False  # the loop is inside a timed-out request (inline)
        self._seen: set[int] = set()
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="unbroken-request-timeout",
                         daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        retired = False
        while not self._stop.wait(self.interval):
            for exchange in self.engine.overdue(self.limit):
                if id(exchange) in self._seen:
                    continue
                self._seen.add(id(exchange))
                self._time_out(exchange)
                if not retired:
                    retired = True
                    head = exchange.head
                    self.retire(f"{head.method.decode()} {_path(exchange)} ran past "
                                f"--request-timeout {self.limit:g}s")

    def _time_out(self, exchange: Exchange) -> None:
        ran = max(0.0, time.time() - exchange.started)
        log.warning("worker %d: %s %s ran %.1fs, past --request-timeout %gs: answered 503 "
                    "and the worker is replaced", os.getpid(), exchange.head.method.decode(),
                    _path(exchange), ran, self.limit)
        engine = self.engine
        if getattr(engine, "inline", False) and engine.inline_exchange is exchange:
            engine.held = True
            try:
                if engine.in_app and engine.inline_exchange is exchange:
                    self.stuck = True
                    self._answer_here(exchange)
                    return
            finally:
                engine.held = False
        try:
            self.loop.call_soon_threadsafe(exchange.time_out, self.limit)
        except RuntimeError:
            pass  # the loop closed: the worker is exiting anyway

    def _answer_here(self, exchange: Exchange) -> None:
        """(this thread, the loop held inside the app) 503 if nothing was sent, then
        shut the socket down under the app."""
        transport = exchange.connection.transport
        raw = transport.get_extra_info("socket") if transport is not None else None
        if transport is None or raw is None:
            return
        sock = socket.socket(fileno=os.dup(raw.fileno()))
        try:
            tls = transport.get_extra_info("sslcontext") is not None
            if exchange.response is NOT_STARTED and not tls:
                plan, body = timed_out_response(exchange, self.limit)
                try:
                    sock.send(plan.head + END_CLOSE + body, socket.MSG_DONTWAIT)
                except OSError:
                    pass
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        finally:
            sock.close()


def _path(exchange: Exchange) -> str:
    return exchange.head.target.decode("latin-1").partition("?")[0]
