"""The gevent engine: WSGI applications on greenlets, on the same connection core.

Design (docs/asgi.md, "gevent", has the long version):
1. The worker process is monkey-patched before anything else imports the stdlib
   (worker/__main__.py), so sockets, `time.sleep`, locks and `threading` are
   cooperative.
2. The connection core runs unchanged on asyncio's selector loop; after patching
   its selector is gevent's, so whenever the loop waits for I/O, gevent's hub runs
   the application greenlets. uvloop is never used here: its C loop would block
   in epoll without yielding to the hub (worker/main.py picks the loop).
3. Each request runs `WSGIRequest.run` (wsgi.py) in its own greenlet instead of
   a pool thread. The core admits at most `worker_connections` connections and
   runs one request per connection at a time, so that is also the bound on
   concurrent requests: limits, timeouts, keep-alive and drain are the core's.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import gevent

from unbroken.engines import EngineSettings
from unbroken.engines.core.exchange import Exchange, ExchangeListener
from unbroken.engines.wsgi.engine import WSGIApp, WSGIEngine
from unbroken.engines.wsgi.request import WSGIRequest


class GeventEngine(WSGIEngine):
    """A WSGIEngine whose requests run on greenlets (needs a monkey-patched process)."""

    def __init__(self, app: WSGIApp, settings: EngineSettings,
                 loop: asyncio.AbstractEventLoop) -> None:
        connections = settings.worker_connections
        super().__init__(app, replace(
            settings, threads=connections,
            max_connections=min(settings.max_connections, connections)), loop)
        self.inline = False  # every request gets its greenlet, even with one connection

    def handle(self, exchange: Exchange) -> ExchangeListener:
        request = WSGIRequest(self, exchange)
        request.use_pool()
        gevent.spawn(request.run)
        return request
