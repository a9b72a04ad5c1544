"""The WSGI engine: PEP 3333 applications on the shared core, inline or in threads.

Rules:
1. The loop thread does all socket I/O and parsing; a request reaches the app only
   once its head is complete and its body is here, or `BODY_AHEAD` bytes of it
   (then the rest streams), so slow clients never hold a thread (the flaw of
   gunicorn's gthread worker, HTTP-HARDENING.md §5.1): one connection trickling a
   body would otherwise take the only thread of a `--threads 1` worker from
   everyone. The body is read ahead on the loop, under the body timer. Not when
   the client sent `Expect: 100-continue`: it waits for the app to decide on the
   head alone (RFC 9110 §10.1.1), so the app gets the request at once and `100
   Continue` goes out when it first reads, as before.
2. With `--threads 1` (the default) a request whose body is all here runs *inline*,
   on the loop thread, when no pool thread is busy: no thread hop, no GIL hand-over,
   one `transport.write` for a list body. The worker then serves one request at a
   time as it would with one pool thread, but a busy worker stops accepting, so new
   connections go to idle siblings, as under gunicorn's sync worker. A response the
   transport cannot take at once (a stream to a slow reader) and a file to send
   continue on the pool's thread, as does a request whose body is still arriving;
   the pool is also what `--threads N` > 1 uses for every request.
3. In a pool thread the common case costs two hops: `executor.submit` there, one
   `call_soon_threadsafe(exchange.send, plan, body, end=True)` back, and that is
   one `transport.write` of head and body joined.
4. `close()` on the application's iterable is always called, on the thread that
   iterated it last.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from unbroken.engines import EngineSettings, RequestHooks
from unbroken.engines.core.access_log import AccessLog
from unbroken.engines.core.exchange import Exchange, ExchangeListener
from unbroken.engines.core.server import ConnectionServer, CoreCounters, HandOver
from unbroken.engines.probe import probe_wsgi
from unbroken.engines.wsgi.environ import base_environ, build_environ, connection_environ
from unbroken.engines.wsgi.request import ClientGone, WSGIApp, WSGIRequest
from unbroken.engines.wsgi.streams import FileWrapper
from unbroken.http.response import DateCache

__all__ = ["ClientGone", "WSGIApp", "WSGIEngine"]


class WSGIEngine(CoreCounters):
    """Serves one WSGI application. The worker calls start, drain, reopen_logs."""

    def __init__(self, app: WSGIApp, settings: EngineSettings, loop: asyncio.AbstractEventLoop):
        self.app = app
        self.loop = loop
        self.settings = settings
        self.dates = DateCache()
        self._executor = ThreadPoolExecutor(
            max_workers=settings.threads, thread_name_prefix="unbroken-wsgi"
        )
        self._access_log = (AccessLog(settings.access_log, settings.access_log_format)
                            if settings.access_log else None)
        self._server = ConnectionServer(loop, settings, self, self._access_log,
                                        capacity=settings.threads)
        self._base_environ = base_environ(settings.url_scheme, settings.threads, FileWrapper)
        # Rule 2: with one thread, serve on the loop thread when nothing waits in the pool.
        self.inline = settings.threads == 1
        # The drain watchdog's view of inline calls (worker/main.py InlineCalls).
        self.in_app = False
        self.held = False
        self.inline_exchange: Exchange | None = None  # the one `in_app` is about
        self.request_hooks: RequestHooks | None = None  # set by the worker, if any
        self._submitted = 0  # written by the loop thread only
        self._finished = 0  # written by the pool's one thread only (when inline is on)

    async def startup(self) -> None:
        """WSGI has no startup protocol: importing the app was its startup."""

    async def probe(self, path: str) -> None:
        await self.loop.run_in_executor(self._executor, probe_wsgi, self.app, path,
                                        self.settings.url_scheme)

    async def start(self, listeners: list[socket.socket]) -> None:
        """Accept on `listeners` (bound and listening already); returns when accepting."""
        self._server.start(listeners)

    async def drain(self, deadline: float, hand_over: HandOver | None = None) -> None:
        try:
            await self._server.drain(deadline, hand_over)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            if self._access_log is not None:
                self._access_log.close()

    def reopen_logs(self) -> None:
        if self._access_log is not None:
            self._access_log.reopen()

    # -------------------------------------------------- RequestHandler (loop)

    def handle(self, exchange: Exchange) -> ExchangeListener:
        request = WSGIRequest(self, exchange)
        if exchange.head.has_body:
            # Soon: the body events the core already parsed are routed after we return.
            self.loop.call_soon(request.dispatch)
        elif self.inline:
            # Soon, not now: the core is still routing this request's body events,
            # and a response sent from here would start the next request re-entrantly.
            self.loop.call_soon(request.run_inline)
        else:
            self.submit(request)
        return request

    def run_request(self, request: WSGIRequest) -> None:
        """(loop) The request has what it needs: inline if allowed, else the pool."""
        if self.inline:
            request.run_inline()
        else:
            self.submit(request)

    def wait_while_held(self) -> None:
        """(loop) Back from the app while the watchdog decides: touch no socket until it
        lets go (then go on) or exits the process."""
        while self.held:
            time.sleep(0.005)

    @property
    def pool_busy(self) -> bool:
        """(loop) A pool thread has a request. One writer each, so no lock: rule 2's
        inline path exists only with one pool thread."""
        return self._submitted != self._finished

    def submit(self, request: WSGIRequest) -> None:
        request.use_pool()
        self._submitted += 1
        self._executor.submit(self._in_pool, request.run)

    def submit_rest(self, request: WSGIRequest, result: Iterable[bytes],
                    rest: Iterator[bytes] | FileWrapper) -> None:
        request.use_pool()
        self._submitted += 1
        self._executor.submit(self._in_pool, request.finish_in_pool, result, rest)

    def _in_pool(self, work: Callable[..., None], *args: Any) -> None:
        try:
            work(*args)
        finally:
            self._finished += 1

    def environ_for(self, exchange: Exchange) -> dict[str, Any]:
        connection = exchange.connection
        template = connection.engine_template
        if template is None:
            connection.engine_template = template = connection_environ(
                self._base_environ, connection.sockname, connection.peername)
        return build_environ(exchange.head, template, exchange.forwarded,
                             server_from_host=not isinstance(connection.sockname, tuple))
