"""The ASGI engine: ASGI 3.0 applications (http, websocket, lifespan) on the shared core.

Rules:
1. One task per request or WebSocket, created on the loop thread in `handle`; the
   app's `receive`/`send` talk to the core directly (asgi/http.py, asgi/websocket.py).
2. Startup is the app's lifespan startup (asgi/lifespan.py): the worker is not ready,
   and the reload fails, until it completed.
3. Drain order: stop accepting; serve what is open (WebSockets and streams
   included) until the deadline; then close WebSockets with 1012 and abort the
   rest (ConnectionServer.drain); cancel the app tasks still running (their
   clients are gone; `finally` blocks run), waiting CANCEL_TIMEOUT at most;
   then run lifespan shutdown with what is left of
   the deadline, but never less than SHUTDOWN_MIN_TIMEOUT (spent inside the
   master's kill margin), so cleanup hooks always get a chance.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING

from unbroken.engines import EngineSettings, RequestHooks
from unbroken.engines.asgi.http import ASGIApp, HTTPCycle
from unbroken.engines.asgi.lifespan import Lifespan
from unbroken.engines.asgi.no_websocket import refuse_websocket, wsproto_missing
from unbroken.engines.asgi.scope import http_scope, is_websocket_upgrade, websocket_scope
from unbroken.engines.core.access_log import AccessLog
from unbroken.engines.core.exchange import Exchange, ExchangeListener
from unbroken.engines.core.server import ConnectionServer, CoreCounters, HandOver
from unbroken.engines.probe import probe_asgi

if TYPE_CHECKING:
    from unbroken.engines.asgi.websocket import WebSocketSession

SHUTDOWN_MIN_TIMEOUT = 1.0
CANCEL_TIMEOUT = 0.2


class ASGIEngine(CoreCounters):
    """Serves one ASGI application. The worker drives it through the `Engine` protocol."""

    def __init__(self, app: ASGIApp, settings: EngineSettings, loop: asyncio.AbstractEventLoop):
        self.app = app
        self.request_hooks: RequestHooks | None = None  # set by the worker, if any
        self.loop = loop
        self.settings = settings
        self.lifespan = Lifespan(app, loop)
        self._access_log = (AccessLog(settings.access_log, settings.access_log_format)
                            if settings.access_log else None)
        self._server = ConnectionServer(loop, settings, self, self._access_log,
                                        eof_is_disconnect=True)
        # Each running request's task, by its listener; the listener removes itself when
        # its app returns (cheaper than a done callback per request). Also holds the
        # tasks strongly, as the loop keeps only weak references.
        self._tasks: dict[object, asyncio.Task[None]] = {}

    async def startup(self) -> None:
        await self.lifespan.startup()

    async def probe(self, path: str) -> None:
        await probe_asgi(self.app, path, self.lifespan.state, self.settings.url_scheme)

    async def start(self, listeners: list[socket.socket]) -> None:
        self._server.start(listeners)

    async def drain(self, deadline: float, hand_over: HandOver | None = None) -> None:
        try:
            await self._server.drain(deadline, hand_over)
            await self._cancel_tasks()
            timeout = max(deadline - time.monotonic(), SHUTDOWN_MIN_TIMEOUT)
            await self.lifespan.shutdown(timeout)
        finally:
            if self._access_log is not None:
                self._access_log.close()

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_TIMEOUT)

    def reopen_logs(self) -> None:
        if self._access_log is not None:
            self._access_log.reopen()

    # -------------------------------------------------- RequestHandler (loop)

    def handle(self, exchange: Exchange) -> ExchangeListener:
        scheme, state, app = self.settings.url_scheme, self.lifespan.state, self.app
        listener: HTTPCycle | WebSocketSession
        websocket = exchange.head.upgrade is not None and is_websocket_upgrade(exchange)
        if websocket and wsproto_missing():  # the asgi extra: 501, said once in the log
            websocket, app = False, refuse_websocket
        if websocket:
            # Imported at the first WebSocket: wsproto and h11 cost a worker that never
            # sees one about a megabyte.
            from unbroken.engines.asgi.websocket import WebSocketSession

            listener = WebSocketSession(exchange, self.loop)
            scope = websocket_scope(exchange, scheme, state, listener.subprotocols)
        else:
            listener = HTTPCycle(exchange, self.loop)
            scope = http_scope(exchange, scheme, state)
        task = (listener.run(app, scope, self._tasks, self.request_hooks)
                if isinstance(listener, HTTPCycle) else listener.run(app, scope, self._tasks))
        self._tasks[listener] = self.loop.create_task(task)
        return listener
