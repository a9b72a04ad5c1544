"""Engines serve an application on sockets the worker inherited from the master.

Rule: an engine never touches process-level concerns (signals, the master's pipe,
heartbeats, exit codes). The worker owns those and drives the engine through the
small `Engine` protocol below, so a new worker class is one module plus one line
in `ENGINES`.

Engines are looked up lazily by name so that optional dependencies stay optional.
"""

from __future__ import annotations

import importlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

    from unbroken.engines.core.exchange import Exchange
    from unbroken.http.events import RequestHead
    from unbroken.observability.cuts import CutRequest
    from unbroken.observability.latency import ResponseStats

SECONDS = 1.0
KIB = 1024


@dataclass(frozen=True)
class EngineSettings:
    """What an engine needs from the configuration, and nothing more."""

    threads: int = 1
    keep_alive_timeout: float = 5 * SECONDS
    # Whole request line + headers must arrive within this (slowloris defence).
    header_timeout: float = 10 * SECONDS
    # A request body's first bytes must come within this, and no gap between two of
    # its reads may be longer (timers.py `body_deadline`)...
    body_timeout: float = 20 * SECONDS
    # ...and after body_timeout it must average this many bytes a second (mod_reqtimeout's
    # MinRate; 0: no rate, only the gap), so a trickle is cut with 408.
    body_min_rate: float = 500.0
    # The rest of a body the app stopped reading is read (and dropped) for at most this
    # long after the response, to keep the connection; then it closes.
    discard_timeout: float = 5 * SECONDS
    limit_request_line: int = 8 * KIB
    limit_request_fields: int = 100
    limit_request_field_size: int = 8 * KIB
    limit_request_headers: int = 64 * KIB
    max_body_size: int | None = None
    # `;name=value` after chunk sizes, in total per message (no app sees them): then 400.
    limit_chunk_extensions: int = 4 * KIB
    # Connections a worker holds open at once. At the cap, with a client waiting, an idle
    # or stalled connection makes room (server.py `eviction_victim`), else accepting waits.
    max_connections: int = 1000
    url_scheme: str = "http"
    # Path of the access log ('-' for stdout), or None for no access log.
    access_log: str | None = None
    access_log_format: str = "combined"  # a key of access_log.FORMATS
    # Concurrent requests (greenlets) in a gevent worker; also caps its connections.
    worker_connections: int = 1000
    # TLS (engines/core/tls.py): PEM paths read when the engine is built, i.e. at worker boot.
    certfile: str | None = None
    keyfile: str | None = None
    ca_certs: str | None = None
    cert_reqs: str = "none"
    # Peers whose X-Forwarded-* headers and PROXY headers we believe (http/forwarded.py).
    forwarded_allow_ips: str = "127.0.0.1,::1"
    # Every connection starts with a PROXY protocol header (http/proxy_protocol.py).
    proxy_protocol: bool = False


class RequestHooks(Protocol):
    """Called around each request by the engine that runs it (gunicorn's pre_request and
    post_request, from a config file's hooks: worker/hooks.py), on the thread that runs
    the app. `environ` is the WSGI environ, or the ASGI scope. A `before` that raises
    fails the request as the app would (500); an `after` that raises is logged."""

    def before(self, head: RequestHead, environ: dict[str, Any]) -> None: ...

    def after(self, head: RequestHead, environ: dict[str, Any], status: int,
              headers: list[tuple[bytes, bytes]]) -> None: ...


class Engine(Protocol):
    """The contract between a worker process and its engine.

    The worker calls `startup`, then `probe` (when --health-path is set), then
    `start` (the engine is accepting when it returns) and says Ready; it may pause
    and resume accepting any number of times, and calls `drain` once when told to
    stop. Counters are read by the heartbeat.
    """

    @property
    def requests_served(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def connections(self) -> int: ...

    @property
    def response_stats(self) -> ResponseStats:
        """Status classes and latencies so far, for the heartbeat (and the metrics)."""
        ...

    @property
    def cut_requests(self) -> list[CutRequest]:
        """After `drain`: the requests its deadline cut."""
        ...

    # Called around each request when a config file defines pre_request/post_request.
    request_hooks: RequestHooks | None

    async def startup(self) -> None:
        """Run the app's startup hooks (ASGI lifespan; nothing for WSGI). Raising fails
        the boot exactly like an import error."""
        ...

    async def probe(self, path: str) -> None:
        """Call the app in-process with `GET path`; raise `ProbeFailed` unless 2xx."""
        ...

    async def start(self, listeners: list[socket.socket]) -> None: ...

    def pause_accepting(self) -> None:
        """Parked (a reload's stability window): stop accepting, answer kept-alive
        connections with `Connection: close`, keep serving what is here."""
        ...

    def resume_accepting(self) -> None:
        """The reload was rolled back: accept and keep connections alive again."""
        ...

    async def drain(self, deadline: float,
                    hand_over: Callable[[list[int]], bool] | None = None) -> None:
        """Stop accepting, finish in-flight work, close keep-alive connections
        only after a `Connection: close` response or their idle timeout; return
        when every connection is closed or the monotonic `deadline` passed (then
        connections between requests are offered to `hand_over`, whatever is left
        is closed, and the requests that cut are left in a `cut_requests` list,
        which the worker reports; see observability/cuts.py)."""
        ...

    def adopt(self, sockets: list[socket.socket]) -> None:
        """Serve connections a draining sibling handed over, as if just accepted."""
        ...

    def handover_fds(self) -> list[int]:
        """Connections between requests (safe to read while the loop is stuck)."""
        ...

    def running_requests(self) -> list[CutRequest]:
        """The requests running now (safe to read while the loop is stuck)."""
        ...

    def overdue(self, limit: float) -> list[Exchange]:
        """Requests running for more than `limit` seconds (--request-timeout's thread)."""
        ...

    def reopen_logs(self) -> None: ...


ENGINES: dict[str, str] = {
    "wsgi": "unbroken.engines.wsgi.engine:WSGIEngine",
    "asgi": "unbroken.engines.asgi.engine:ASGIEngine",
    "gevent": "unbroken.engines.gevent:GeventEngine",
}


EngineFactory = Callable[[Any, EngineSettings, "asyncio.AbstractEventLoop"], Engine]


def load_engine(name: str) -> EngineFactory:
    """Return the engine class registered as `name` (imported on first use)."""
    try:
        target = ENGINES[name]
    except KeyError:
        known = ", ".join(sorted(ENGINES))
        raise LookupError(f"unknown worker class {name!r} (known: {known})") from None
    module_name, _, attr = target.partition(":")
    factory: EngineFactory = getattr(importlib.import_module(module_name), attr)
    return factory
