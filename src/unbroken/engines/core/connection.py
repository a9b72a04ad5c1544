"""One HTTP/1.1 connection: parse, dispatch in order, write, time out.

Rules:
1. Everything here runs on the event-loop thread. Engines that run applications in
   threads reach it only through `loop.call_soon_threadsafe`.
2. One request at a time per connection: the next pipelined request starts when
   the previous response has ended, so responses are in order by construction.
   Later requests wait as parsed events in `_pending`.
3. The engine plugs in through `RequestHandler.handle(exchange)`, which returns an
   `ExchangeListener` that receives body data and flow-control news.
4. Whether a response keeps the connection alive is decided when its head is
   written (`Exchange.send`), because a drain may have begun since the app started.
5. After `Exchange.switch_protocols` (101, e.g. a WebSocket) the parser is done:
   every later byte and event of the transport goes to the `UpgradedStream`, and
   no HTTP timer runs. At the drain deadline the stream is asked to say goodbye
   (`deadline_reached`) and gets `CLOSE_HANDSHAKE_TIMEOUT` before being aborted.
6. With `proxy_protocol`, the first bytes are a PROXY header (http/proxy_protocol.py),
   read under the fresh connection's header_timeout; its source replaces `peername`.
   Whether X-Forwarded-* count is decided once per connection from that `peername`
   (`trusts_forwarded`, http/forwarded.py) and read once per request (`Exchange.forwarded`).

7. `state` moves only through `states.CONNECTION` (FRESH, IN_HEAD, SERVING, IDLE,
   UPGRADED, CLOSING, CLOSED); the exchange's two sides through its own tables.
   The fast path of `data_received` (one whole bodiless request on an idle
   connection) is a shortcut: the same REQUEST_STARTED move, without the queue.

Its code is in three parts of one object: this module (the transport's callbacks,
keep-alive, closing, hand-over), routing.py (`Pipeline`: each parsed event to its
request, in order) and timers.py (`Timers`: the one timer and its table).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from unbroken.engines.core.exchange import Exchange
from unbroken.engines.core.routing import Pipeline
from unbroken.engines.core.states import (
    BODY_READING,
    BODY_WAITING,
    CLOSE_BEGAN,
    CLOSED,
    CLOSING,
    CONNECTION,
    FRESH,
    IDLE,
    IN_HEAD,
    NOT_STARTED,
    REQUEST_COMPLETE,
    RESPONSE_ENDED,
    SERVING,
    SWITCHED_PROTOCOLS,
    TRANSPORT_LOST,
    UPGRADED,
    ConnectionEvent,
    ConnectionState,
)
from unbroken.engines.core.timers import NO_TIMER, Timers
from unbroken.http.errors import RequestTimeout
from unbroken.http.events import (
    MESSAGE_COMPLETE,
    Event,
    RequestHead,
)
from unbroken.http.parser import RequestParser
from unbroken.http.proxy_protocol import ProxyHeaderParser, ProxyProtocolError
from unbroken.http.response import ResponsePlan

if TYPE_CHECKING:
    from unbroken.engines.core.server import ConnectionServer

# How long a closing connection keeps swallowing unread request bytes, so that the
# client reads our response before a RST (RFC 9112 §9.6 "lingering close").
LINGER_TIMEOUT = 2.0


class UpgradedStream(Protocol):
    """What owns a connection after `101 Switching Protocols` (a WebSocket session)."""

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> None: ...

    def connection_lost(self) -> None: ...

    def writing_paused(self) -> None: ...

    def writing_resumed(self) -> None: ...

    def deadline_reached(self) -> None:
        """The drain deadline passed: start a closing handshake and close soon."""
        ...


class Clock(Protocol):
    """Where the connection's timers come from: the event loop, or a test's fake clock."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer: ...


class Timer(Protocol):
    def cancel(self) -> None: ...


class HTTPConnection(Pipeline, Timers, asyncio.Protocol):
    """One client connection: parse, dispatch in order, write, time out."""

    def __init__(self, server: ConnectionServer, peername: Any = None,
                 sockname: Any = None) -> None:
        """`peername` and `sockname`, when the acceptor knows them (accept() returns the
        peer; a concrete bind fixes the local address), spare connection_made two
        syscalls; None means ask the transport."""
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = RequestParser(server.parser_limits)
        self.state: ConnectionState = FRESH
        # Whether the fast paths (states.py rule 3) are taken; off only to test that
        # they write what the plain table path writes.
        self.shortcuts = server.shortcuts
        self._clock = server.clock
        self.current: Exchange | None = None
        self._pending: deque[Event] = deque()
        self._pending_bytes = 0
        # Why reading is paused: "body" (the app's buffer is full) and "pipeline" (parsed
        # requests queue up) are undone apart, in any state: reasons, not a state.
        self._read_pauses: set[str] = set()
        self._timer: Timer | None = None
        # Which timer `_timer` is (timers.py): the idle timer outlives the idle period,
        # and the body and discard timers are armed once, not per read; so this is not
        # the connection's state but the timer's.
        self._timer_kind = NO_TIMER
        # The body clock (timers.py `body_deadline`): since when the body is read, how
        # many bytes came in that time, and when the last did.
        self._body_since = 0.0
        self._body_bytes = 0
        self._body_last = 0.0
        self._idle_since = 0.0
        # When it last made progress, for the eviction at the connection cap
        # (`stalled_since`): accepted at, and a split head's first byte at.
        self._opened_at = 0.0
        self._head_since = 0.0
        # The client half-closed: a fact about its direction, possible in any state.
        self._eof = False
        self.upgraded: UpgradedStream | None = None
        # The client: the socket's peer, or the source a PROXY header announced.
        self.peername: Any = peername
        self.sockname: Any = sockname
        self.trusts_forwarded = False
        # What the engine keeps for every request of this connection (the WSGI environ's
        # constant part), made at the first request: addresses and trust are known by then.
        self.engine_template: Any = None
        self._proxy_header = ProxyHeaderParser() if server.settings.proxy_protocol else None

    @property
    def idle_since(self) -> float:
        """When its last idle period began (a clock time; meaningful while IDLE)."""
        return self._idle_since

    @property
    def stalled_since(self) -> float | None:
        """Since when a client keeps this connection without giving it work: silent
        since accepted, in a head since its first byte, or in a body nobody has begun
        to answer since its last byte. None while it serves, idles or closes."""
        state = self.state
        if state is FRESH:
            return self._opened_at
        if state is IN_HEAD:
            return self._head_since
        current = self.current
        if (state is SERVING and current is not None and current.request is BODY_READING
                and current.response is NOT_STARTED):
            return self._body_last
        return None

    def evict(self) -> None:
        """Make room at the connection cap (server.py `_refused`): an idle or silent
        connection is closed; a stalled head or body is answered 408, as its timer
        would have done later."""
        state = self.state
        if state is IDLE or state is FRESH:
            self.close()
        elif state is IN_HEAD:
            self._answer_error(RequestTimeout("stalled at the connection cap"))
        elif self.current is not None:
            self._reject_current(self.current, RequestTimeout("stalled at the connection cap"))

    @property
    def closing(self) -> bool:
        state = self.state
        return state is CLOSING or state is CLOSED

    def _move(self, event: ConnectionEvent) -> None:
        self.state = CONNECTION[self.state, event]

    # --------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only duck-alike.
        self.transport = transport = cast(asyncio.Transport, transport)
        if self.peername is None:
            self.peername = transport.get_extra_info("peername")
        if self.sockname is None:
            self.sockname = transport.get_extra_info("sockname")
        self._opened_at = self._clock.time()
        self.server.connection_opened(self)
        self._arm(self.server.settings.header_timeout, self.close)
        self.trusts_forwarded = self.server.trusted_proxies.trusts(self.peername)
        if self._proxy_header is not None and not self.trusts_forwarded:
            self.close()  # only a trusted proxy may announce another client address

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state is UPGRADED and self.upgraded is not None:
            self.upgraded.data_received(data)
            return
        if state is CLOSING or state is CLOSED:
            return  # lingering: swallow
        if self._proxy_header is not None:
            data = self._read_proxy_header(self._proxy_header, data)
            if not data:
                return
        parser = self.parser
        events = parser.feed(data)
        if (len(events) == 2 and events[1] is MESSAGE_COMPLETE and self.current is None
                and not self._pending and not parser.in_head and self.shortcuts):
            head = events[0]
            if type(head) is RequestHead and not head.has_body:
                # The usual case, one whole request without a body on an idle
                # connection: what _route and _next_request would do, without the queue
                # (a shortcut, states.py rule 3: the same move, REQUEST_STARTED).
                self._start_exchange(head)
                return
        if (state is FRESH or state is IDLE) and parser.in_head:
            self._enter_head_phase()
        for event in events:
            self._route(event)
        if self.current is None:
            self._next_request()
        else:
            self.refresh_timer()

    def _read_proxy_header(self, parser: ProxyHeaderParser, data: bytes) -> bytes:
        """Feed the PROXY header (under header_timeout); return the HTTP bytes after it."""
        try:
            header = parser.feed(data)
        except ProxyProtocolError:
            self.close()  # we cannot answer in HTTP before the header: just close
            return b""
        if header is None:
            return b""
        self._proxy_header = None
        if header.source is not None:  # PROXY UNKNOWN and v2 LOCAL keep the real peer
            self.peername = header.source
        # X-Forwarded-* are believed from the announced client, not from the proxy:
        # behind a TCP-mode proxy the HTTP headers are the client's own.
        self.trusts_forwarded = self.server.trusted_proxies.trusts(self.peername)
        return parser.rest

    def eof_received(self) -> bool | None:
        self._eof = True
        if self.upgraded is not None:
            self.upgraded.eof_received()
            return None
        current = self.current
        cut = current is not None and current.request is not REQUEST_COMPLETE
        if cut and current is not None and current.listener is not None:
            current.listener.body_failed(ConnectionResetError("client closed mid-body"))
        # Mid-body, the request can never be whole: nothing to answer, nothing to wait
        # for (a body read ahead for an app not yet called would otherwise hold the
        # connection, and a drain, until the body timer).
        if current is None or cut or self.closing or self.server.eof_is_disconnect:
            if self.transport is not None:
                self.transport.close()
            return None
        # Half-closed after a complete request: answer it, then close.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._move(TRANSPORT_LOST)
        self._cancel_timer()
        current, self.current = self.current, None
        if current is not None and current.response is not RESPONSE_ENDED:
            current.lost()
            self.server.exchange_ended(current, served=False)
            if current.listener is not None:
                current.listener.connection_lost()
        if self.upgraded is not None:
            self.upgraded.connection_lost()
        self.server.connection_closed(self)
        self.transport = None

    def pause_writing(self) -> None:
        if self.upgraded is not None:
            self.upgraded.writing_paused()
        elif self.current is not None and self.current.listener is not None:
            self.current.listener.writing_paused()

    def resume_writing(self) -> None:
        if self.upgraded is not None:
            self.upgraded.writing_resumed()
        elif self.current is not None and self.current.listener is not None:
            self.current.listener.writing_resumed()

    def upgrade(self, stream: UpgradedStream) -> None:
        """From now on the bytes belong to `stream` (see rule 5)."""
        self.current = None
        self.upgraded = stream
        self._move(SWITCHED_PROTOCOLS)
        self._cancel_timer()
        self._pending.clear()
        self._pending_bytes = 0

    def end_at_deadline(self) -> bool:
        """The drain deadline passed. Returns True if a closing handshake began."""
        if self.upgraded is not None and self.state is UPGRADED:
            self.upgraded.deadline_reached()
            return True
        self.abort()
        return False

    # ---------------------------------------------------------- keep-alive

    def may_keep_alive(self, exchange: Exchange, plan: ResponsePlan) -> bool:
        if plan.must_close or not exchange.head.keep_alive or self.server.no_keep_alive:
            return False
        if exchange.request is BODY_WAITING:
            # A body the app never asked for (nor was it read ahead) is still coming:
            # say close rather than wait for bytes nobody wants (granian closes here
            # too). With `Expect: 100-continue` the client may or may not send it now.
            return False
        if self.server.draining or self.server.parked:
            return any(isinstance(event, RequestHead) for event in self._pending)
        return True

    def exchange_ended(self, exchange: Exchange) -> None:
        self.server.exchange_ended(exchange, served=True)
        if exchange.request is REQUEST_COMPLETE:
            # The listener refers to the exchange: drop the cycle now, so both are
            # freed by reference counting rather than left to the garbage collector.
            exchange.listener = None
        if not exchange.keep_alive:
            self.close()
            return
        if exchange.request is REQUEST_COMPLETE:
            self.current = None
            self._next_request()
        else:
            self.resume_reading("body")  # discard the rest of the body, then continue
            self.refresh_timer()

    # -------------------------------------------------------------- I/O helpers

    def write(self, data: bytes) -> None:
        # Not `closing`, a call: CLOSED needs no look, the transport is None by then.
        if self.transport is not None and self.state is not CLOSING:
            self.transport.write(data)

    def close(self) -> None:
        """Close after flushing; keep swallowing input briefly so the client sees our answer."""
        transport = self.transport
        if transport is None or self.state is CLOSING:
            return
        self._move(CLOSE_BEGAN)
        self._cancel_timer()
        self._read_pauses.clear()
        unread = self.current is not None and self.current.request is not REQUEST_COMPLETE
        if (unread or self.parser.in_head) and transport.can_write_eof():
            transport.write_eof()
            transport.resume_reading()
            self._timer = self._clock.call_later(LINGER_TIMEOUT, self.abort)
        else:
            transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def movable_fd(self) -> int | None:
        """The socket's descriptor if another process could carry on from here: between
        requests, nothing of the next one read (if sent, it is in the kernel), nothing
        left to write."""
        transport = self.transport
        if (transport is None or self.current is not None or self._pending or self._eof
                or self.state not in (FRESH, IDLE)
                or self.parser.in_head
                or transport.get_write_buffer_size()):
            return None
        sock = transport.get_extra_info("socket")
        return None if sock is None else int(sock.fileno())

    def pause_reading(self, reason: str) -> None:
        if not self._read_pauses and self.transport is not None and not self.closing:
            self.transport.pause_reading()
            self._cancel_timer()
        self._read_pauses.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason not in self._read_pauses:
            return
        self._read_pauses.discard(reason)
        if not self._read_pauses and self.transport is not None and not self.closing:
            self.transport.resume_reading()
            self.refresh_timer()

