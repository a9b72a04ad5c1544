"""The connections of one worker: accept, count, park, drain, hand over.

The server owns what outlives a connection: the listeners' acceptors, the counters
the worker's heartbeat reads, and the drain that ends every connection by a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from unbroken.engines import EngineSettings
from unbroken.engines.core.acceptor import Acceptor
from unbroken.engines.core.access_log import AccessLog
from unbroken.engines.core.connection import Clock, HTTPConnection
from unbroken.engines.core.exchange import Exchange, RequestHandler
from unbroken.engines.core.states import (
    IDLE,
    RESPONSE_ENDED,
    SERVING,
)
from unbroken.engines.core.tls import server_context
from unbroken.http.errors import HTTPError
from unbroken.http.forwarded import parse_trusted_proxies
from unbroken.http.parser import ParserLimits
from unbroken.http.response import DateCache
from unbroken.observability.cuts import CutRequest
from unbroken.observability.latency import ResponseStats

error_log = logging.getLogger("unbroken.error")

# After the drain deadline, how long an upgraded stream may take to finish its
# closing handshake (WebSocket close 1012) before the socket is aborted. It is
# spent past the deadline, inside the master's kill margin (rollout/planner.py).
CLOSE_HANDSHAKE_TIMEOUT = 0.5

# At the connection cap, a connection that has kept the server waiting this long is
# evicted when no idle one is left (`eviction_victim`); a client mid-send is not.
STALL_GRACE = 1.0

# Given the descriptors of connections between requests, passes them to a sibling
# worker; True if it did (then ours are closed without a word to the client).
HandOver = Callable[[list[int]], bool]


class ConnectionServer:
    """Accepts on the listeners, owns the connections, counts, and drains.

    Counters are plain ints written only by the loop thread.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: EngineSettings,
        handler: RequestHandler,
        access_log: AccessLog | None = None,
        *,
        eof_is_disconnect: bool = False,
        capacity: int | None = None,
        clock: Clock | None = None,
        shortcuts: bool = True,
    ) -> None:
        self.loop = loop
        # The connections' timers: the loop, unless a test drives them with a fake clock.
        self.clock: Clock = loop if clock is None else clock
        # The fast paths (states.py rule 3); off only to test them against the plain path.
        self.shortcuts = shortcuts
        # A client's FIN ends its exchange at once (ASGI: the app hears http.disconnect,
        # as under uvicorn) instead of being read as a half-close awaiting the answer.
        self.eof_is_disconnect = eof_is_disconnect
        self.settings = settings
        self.handler = handler
        self.access_log = access_log
        # Built here, at worker boot, from the files as they are now (engines/core/tls.py);
        # raises TLSError, which fails the boot.
        self.tls = server_context(settings)
        self.parser_limits = ParserLimits(
            request_line=settings.limit_request_line,
            field_size=settings.limit_request_field_size,
            fields=settings.limit_request_fields,
            header_block=settings.limit_request_headers,
            max_body_size=settings.max_body_size,
            chunk_extensions=settings.limit_chunk_extensions,
        )
        self.trusted_proxies = parse_trusted_proxies(settings.forwarded_allow_ips)
        self.requests_served = 0
        self.in_flight = 0
        # Requests the engine runs at once (its threads), if bounded: see Acceptor's busy.
        self.capacity = capacity
        self.response_stats = ResponseStats()  # status classes and latency, for metrics
        # --keep-alive 0: every response says `Connection: close`, rather than keeping
        # the connection in words and closing it under the client at once.
        self.no_keep_alive = settings.keep_alive_timeout <= 0
        self.draining = False
        # Not accepting while a new generation is on probation; undone by `unpark`.
        self.parked = False
        # Requests still running when the drain deadline passed (set by `drain`).
        self.cut: list[CutRequest] = []
        self._dates = DateCache()
        self._acceptors: list[Acceptor] = []
        self._connections: set[HTTPConnection] = set()
        # Accepted, not yet connected to a protocol: nothing of them has been read.
        self._adopting: set[socket.socket] = set()
        self._accepted = 0  # sockets accepted and not yet closed
        self.evicted = 0  # connections evicted to make room at max_connections
        self._cap_retry: asyncio.TimerHandle | None = None
        self._all_closed: asyncio.Event | None = None

    @property
    def connections(self) -> int:
        return len(self._connections)

    def date_field(self) -> bytes:
        return self._dates.field(time.time())

    # ------------------------------------------------------------ accepting

    def start(self, listeners: list[socket.socket]) -> None:
        """Begin accepting; returns at once (the loop does the rest)."""
        for listener in listeners:
            acceptor = Acceptor(self.loop, listener, self._accepted_socket, self._may_accept,
                                self._busy, self._refused)
            self._acceptors.append(acceptor)
            acceptor.resume()

    def stop_accepting(self) -> None:
        for acceptor in self._acceptors:
            acceptor.stop()

    def park(self) -> None:
        """Stop accepting for now, and close kept-alive connections after their next
        response, as a drain does; but keep serving, and be ready to `unpark`."""
        self.parked = True
        for acceptor in self._acceptors:
            acceptor.pause()

    def unpark(self) -> None:
        self.parked = False
        if self._may_accept():
            for acceptor in self._acceptors:
                acceptor.resume()

    def _busy(self) -> bool:
        """Requests wait for a thread here: let an idle sibling take new connections first.

        More than `capacity`, not as many: a worker whose threads are merely all in use
        may be free again in microseconds (an inline request is not even started yet
        when its connection's next event is read), and deferring it costs latency."""
        return self.capacity is not None and self.in_flight > self.capacity

    def _may_accept(self) -> bool:
        return (not self.draining and not self.parked
                and self._accepted < self.settings.max_connections)

    def _accepted_socket(self, sock: socket.socket, peer: Any = None,
                         local: Any = None) -> None:
        self._accepted += 1
        self._adopting.add(sock)
        run_without_task(self._adopt(sock, peer, local))

    def _refused(self) -> None:
        """(acceptor) A client waits in the listen queue and we took none: at the cap,
        make room for it (`eviction_victim`), so a flood of idle or stalled connections
        cannot lock new clients out (HTTP-HARDENING.md §5.2). The evicted connection's
        end resumes accepting (`_socket_released`); if none can go yet, look again in
        `STALL_GRACE` (a sibling worker with room may take the client meanwhile)."""
        if self.draining or self.parked or self._cap_retry is not None:
            return
        victim = eviction_victim(self._connections, self.clock.time())
        if victim is not None:
            self.evicted += 1
            victim.evict()
        else:
            self._cap_retry = self.loop.call_later(STALL_GRACE, self._retry_at_cap)

    def _retry_at_cap(self) -> None:
        self._cap_retry = None
        if self.draining or self.parked or self._may_accept():
            return  # room came on its own (and accepting resumed with it), or no accepting
        for acceptor in self._acceptors:
            acceptor.resume()  # a client still waiting wakes it at once: `_refused` again

    def adopt(self, sockets: list[socket.socket]) -> None:
        """Serve connections a draining sibling handed over (see `handover_fds`) as if
        just accepted: whatever their clients sent is still in the kernel, unread."""
        for sock in sockets:
            sock.setblocking(False)
            self._accepted_socket(sock)

    def handover_fds(self, *, unconnected: bool = False) -> list[tuple[int, HTTPConnection | None]]:
        """The connections another worker could take over unnoticed (`movable_fd`),
        with sockets accepted but not yet connected if `unconnected` (only when the
        loop will never run again: it would connect and read them). Plain TCP only:
        TLS state and a PROXY header's address live in this process. Read-only, so
        the drain watchdog may call it while the loop is stuck in an application
        call (worker/main.py)."""
        if self.tls is not None or self.settings.proxy_protocol:
            return []
        found: list[tuple[int, HTTPConnection | None]] = [
            (sock.fileno(), None) for sock in list(self._adopting) if unconnected]
        for connection in list(self._connections):
            fd = connection.movable_fd()
            if fd is not None:
                found.append((fd, connection))
        return [(fd, connection) for fd, connection in found if fd >= 0]

    async def _adopt(self, sock: socket.socket, peer: Any, local: Any) -> None:
        # With TLS the handshake runs first, under header_timeout (a slowloris may
        # stall it as well as a head). A failed or timed-out handshake is a
        # client's problem: asyncio and uvloop raise an OSError (ssl.SSLError,
        # ConnectionResetError, TimeoutError) and the socket is simply released.
        try:
            if self.tls is None:
                await self.loop.connect_accepted_socket(
                    lambda: HTTPConnection(self, peer, local), sock)
            else:
                await self.loop.connect_accepted_socket(
                    lambda: HTTPConnection(self, peer, local), sock, ssl=self.tls,
                    ssl_handshake_timeout=self.settings.header_timeout)
        except OSError:
            sock.close()
            self._socket_released()
        finally:
            self._adopting.discard(sock)

    def _socket_released(self) -> None:
        self._accepted -= 1
        if self._all_closed is not None and self._accepted == 0:
            self._all_closed.set()
        if self._may_accept():
            for acceptor in self._acceptors:
                acceptor.resume()

    # -------------------------------------------------- connection callbacks

    def connection_opened(self, connection: HTTPConnection) -> None:
        self._connections.add(connection)

    def connection_closed(self, connection: HTTPConnection) -> None:
        self._connections.discard(connection)
        self._socket_released()

    def exchange_ended(self, exchange: Exchange, *, served: bool) -> None:
        self.in_flight -= 1
        if self.in_flight == self.capacity:  # busy no longer: connections may come
            for acceptor in self._acceptors:
                acceptor.room()
        if served:
            self.requests_served += 1
            plan = exchange.plan
            self.response_stats.observe(plan.status if plan else None,
                                        time.time() - exchange.started)
        if self.access_log is not None:
            self.access_log.log_exchange(exchange)

    def log_rejection(self, connection: HTTPConnection, error: HTTPError) -> None:
        if self.access_log is not None:
            self.access_log.log_rejection(connection.peername, error)

    # ------------------------------------------------------------- draining

    async def drain(self, deadline: float, hand_over: HandOver | None = None) -> None:
        """Stop accepting now; wait for connections to end; at `deadline`, end them.

        At the deadline, connections between requests are first offered to
        `hand_over` (the worker passes them to a sibling through the master): a
        kept-alive client whose next request is on its way would otherwise be reset.
        """
        self.draining = True
        self.stop_accepting()
        self._all_closed = asyncio.Event()
        # Count accepted sockets, not connections: a socket accepted just before the
        # drain may not have reached connection_made yet, and exiting then would
        # reset a client whose request is already on its way.
        await self._wait_all_closed(deadline)
        # Looked at once, here, where they are ended: nothing on the request path.
        self.cut = still_running(self._connections, time.time())
        candidates = self.handover_fds() if hand_over is not None else []
        if candidates and hand_over is not None and hand_over([fd for fd, _ in candidates]):
            # Closing our descriptor does not end a connection another process holds.
            for _fd, connection in candidates:
                if connection is not None:
                    connection.abort()
        handshakes = [c.end_at_deadline() for c in list(self._connections)]
        if any(handshakes):
            await self._wait_all_closed(time.monotonic() + CLOSE_HANDSHAKE_TIMEOUT)
        for connection in list(self._connections):
            connection.abort()
        # Let the transports run their connection_lost callbacks.
        await asyncio.sleep(0)


    async def _wait_all_closed(self, deadline: float) -> None:
        if self._accepted and self._all_closed is not None:
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(self._all_closed.wait(), timeout=max(remaining, 0))
            except TimeoutError:
                pass


def still_running(connections: Iterable[HTTPConnection], now: float) -> list[CutRequest]:
    """The requests an abort now would cut: begun and not answered in full, oldest first.

    Not counted: a response already ended (a lingering close), an upgraded stream
    (it gets its own closing handshake), a head still arriving or a pipelined request
    not yet started: none of them is a request the application is running.
    """
    running = [connection.current for connection in connections
               if connection.current is not None
               and connection.current.response is not RESPONSE_ENDED
               and connection.state is SERVING]
    return [CutRequest(exchange.head.method.decode("latin-1"),
                       exchange.head.target.decode("latin-1").partition("?")[0],
                       max(now - exchange.started, 0.0))
            for exchange in sorted(running, key=lambda exchange: exchange.started)]


def run_without_task(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` to its end as a task would, but without one: step it now, and again
    each time the future it waits on is done.

    Why: every connection's `_adopt` is a coroutine (connect_accepted_socket is one,
    in asyncio and uvloop alike) that only waits for connection_made. A task per
    connection costs a Task, its entry in asyncio's WeakSet of all tasks and a done
    callback: 2-3 µs of a connection-per-request client's ~69. Nothing cancels these
    coroutines; what they raise (`_adopt` handles OSError) is logged, not lost."""
    try:
        future = coro.send(None)
    except StopIteration:
        return
    except Exception:
        error_log.exception("accepting a connection failed")
        return
    if future is None:  # a bare yield (asyncio.sleep(0)): step again on the next turn
        asyncio.get_running_loop().call_soon(run_without_task, coro)
    else:
        future.add_done_callback(lambda _done: run_without_task(coro))


class CoreCounters:
    """The `Engine` counters, read from the connection core, and its park switch: one
    copy for every engine.

    The worker's heartbeat reads the counters; the core owns and writes them.
    """

    _server: ConnectionServer

    def pause_accepting(self) -> None:
        self._server.park()

    def resume_accepting(self) -> None:
        self._server.unpark()

    def adopt(self, sockets: list[socket.socket]) -> None:
        self._server.adopt(sockets)

    def handover_fds(self) -> list[int]:
        """For the drain watchdog, while the loop is stuck: see ConnectionServer."""
        return [fd for fd, _ in self._server.handover_fds(unconnected=True)]

    def running_requests(self) -> list[CutRequest]:
        """For the drain watchdog: what exiting now would cut."""
        return still_running(list(self._server._connections), time.time())

    def overdue(self, limit: float) -> list[Exchange]:
        """For --request-timeout's thread: requests running for more than `limit`
        seconds, not answered yet in full (read under the GIL from another thread)."""
        now = time.time()
        return [connection.current for connection in list(self._server._connections)
                if connection.current is not None and connection.state is SERVING
                and connection.current.response is not RESPONSE_ENDED
                and now - connection.current.started > limit]

    @property
    def requests_served(self) -> int:
        return self._server.requests_served

    @property
    def in_flight(self) -> int:
        return self._server.in_flight

    @property
    def response_stats(self) -> ResponseStats:
        return self._server.response_stats

    @property
    def connections(self) -> int:
        return self._server.connections

    @property
    def cut_requests(self) -> list[CutRequest]:
        """After `drain`: the requests its deadline cut (the worker reports them)."""
        return self._server.cut


def eviction_victim(connections: Iterable[HTTPConnection],
                    now: float) -> HTTPConnection | None:
    """Which connection makes room at the cap. Idle kept-alive ones first, the longest
    idle: a client may lose those at any moment and retries on a new connection (RFC
    9112 §9.3.1), as at the idle timeout. Then the one stalled longest, if for at least
    `STALL_GRACE`: silent since accepted, a head begun but not ended, a body nobody has
    begun to answer (the slowloris and the trickle, which their own timers would cut
    anyway, only later). Never one whose response has begun: that is someone's work."""
    idle: HTTPConnection | None = None
    stalled: HTTPConnection | None = None
    stalled_since = now - STALL_GRACE
    for connection in connections:
        if connection.state is IDLE:
            if idle is None or connection.idle_since < idle.idle_since:
                idle = connection
            continue
        since = connection.stalled_since
        if since is not None and since <= stalled_since:
            stalled, stalled_since = connection, since
    return idle if idle is not None else stalled
