"""The connection core shared by every engine: one HTTP/1.1 connection, one server.

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

Timers, one at a time per connection (the `_timer` field):
    fresh connection, nothing received ........ header_timeout → close
    idle between requests ...................... keep_alive_timeout → close
    part of a head received .................... header_timeout from its first byte → 408, close
    body expected, not paused, app is reading .. body_timeout between arrivals → 408/close

The idle timer is not cancelled when a request starts: it stays armed, and when it
fires it closes only a connection that has been idle for the whole keep_alive_timeout
since `_idle_since`, else re-arms for the rest. A keep-alive connection so pays one
timer per timeout period instead of a call_later and a cancel per request. Any other
timer (`_arm`) replaces it.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast

from unbroken.engines import EngineSettings
from unbroken.engines.acceptor import Acceptor
from unbroken.engines.access_log import AccessLog
from unbroken.engines.tls import server_context
from unbroken.http.errors import HTTPError, RequestTimeout
from unbroken.http.events import (
    MESSAGE_COMPLETE,
    BodyData,
    Event,
    MessageComplete,
    RequestHead,
    RequestRejected,
)
from unbroken.http.forwarded import (
    NOT_FORWARDED,
    Forwarded,
    parse_trusted_proxies,
    read_forwarded,
)
from unbroken.http.parser import ParserLimits, RequestParser
from unbroken.http.proxy_protocol import ProxyHeaderParser, ProxyProtocolError
from unbroken.http.response import (
    LAST_CHUNK,
    DateCache,
    Framing,
    ResponsePlan,
    encode_chunk,
    error_response,
)
from unbroken.observability.cuts import CutRequest
from unbroken.observability.latency import ResponseStats

# Unread request body (or queued pipelined bytes) above which we stop reading.
READ_HIGH_WATER = 256 * 1024
# How long a closing connection keeps swallowing unread request bytes, so that the
# client reads our response before a RST (RFC 9112 §9.6 "lingering close").
LINGER_TIMEOUT = 2.0
# After the drain deadline, how long an upgraded stream may take to finish its
# closing handshake (WebSocket close 1012) before the socket is aborted. It is
# spent past the deadline, inside the master's kill margin (rollout/planner.py).
CLOSE_HANDSHAKE_TIMEOUT = 0.5

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
END_CLOSE = b"connection: close\r\n\r\n"
END_KEEP_ALIVE_10 = b"connection: keep-alive\r\n\r\n"
END_HEAD = b"\r\n"


class ExchangeListener(Protocol):
    """What an engine does with one request, as seen from the core."""

    def body_received(self, data: bytes) -> int:
        """Take body bytes; return how many bytes are now buffered unread."""
        ...

    def body_complete(self) -> None: ...

    def body_failed(self, error: Exception) -> None: ...

    def writing_paused(self) -> None: ...

    def writing_resumed(self) -> None: ...

    def connection_lost(self) -> None: ...


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


# Given the descriptors of connections between requests, passes them to a sibling
# worker; True if it did (then ours are closed without a word to the client).
HandOver = Callable[[list[int]], bool]


class RequestHandler(Protocol):
    def handle(self, exchange: Exchange) -> ExchangeListener: ...


class Exchange:
    """One request and its response on a connection (loop-thread object)."""

    __slots__ = ("body_sent", "connection", "continue_sent", "finished", "forwarded", "head",
                 "keep_alive", "listener", "plan", "reading_body", "request_complete",
                 "started")

    def __init__(self, connection: HTTPConnection, head: RequestHead) -> None:
        self.connection = connection
        self.head = head
        self.listener: ExchangeListener | None = None
        self.request_complete = not head.has_body
        self.continue_sent = False
        self.reading_body = False
        self.plan: ResponsePlan | None = None
        self.keep_alive = False
        self.finished = False
        self.body_sent = 0
        self.started = time.time()
        # What a trusted proxy says about the client (X-Forwarded-*); engines apply it.
        # The parser noted whether any such field came, so most requests skip the scan.
        self.forwarded: Forwarded = (read_forwarded(head.headers)
                                     if head.forwarded and connection.trusts_forwarded
                                     else NOT_FORWARDED)

    @property
    def server(self) -> ConnectionServer:
        return self.connection.server

    # ------------------------------------------------------------ request side

    def read_body(self) -> None:
        """The app wants the body: say 100 Continue if the client waits for it."""
        if self.reading_body or self.finished:
            return
        self.reading_body = True
        connection = self.connection
        if self.head.expect_continue and not self.request_complete and self.plan is None:
            connection.write(CONTINUE)
            self.continue_sent = True
        connection.refresh_timer()

    def resume_body(self) -> None:
        """The app consumed enough buffered body: read from the socket again."""
        self.connection.resume_reading("body")

    # ----------------------------------------------------------- response side

    def send(self, plan: ResponsePlan | None, data: bytes, end: bool) -> None:
        """Write the head (when `plan` is given), body bytes, and maybe the end."""
        if self.finished or self.connection.phase is Phase.CLOSING:
            return
        if (end and plan is not None and plan.framing is Framing.LENGTH
                and len(data) == plan.content_length):
            self._send_whole(plan, data)
            return
        parts: list[bytes] = []
        if plan is not None:
            parts.append(self._start_response(plan))
        framing = self.plan.framing if self.plan is not None else Framing.NONE
        if data:
            self._append_body(framing, data, parts)
        if end and framing is Framing.CHUNKED:
            parts.append(LAST_CHUNK)
        if parts:
            self.connection.write(parts[0] if len(parts) == 1 else b"".join(parts))
        if end:
            self._finish()

    def _send_whole(self, plan: ResponsePlan, data: bytes) -> None:
        """The usual response, whole and exactly as long as announced: one write."""
        self.connection.write(self._start_response(plan) + data)
        self.body_sent = len(data)
        self._finish()

    def _start_response(self, plan: ResponsePlan) -> bytes:
        """Decide keep-alive now (rule 4); return the head with its Connection ending."""
        self.plan = plan
        self.keep_alive = self.connection.may_keep_alive(self, plan)
        if not self.keep_alive:
            return plan.head + END_CLOSE
        if self.head.version == "1.0":
            return plan.head + END_KEEP_ALIVE_10
        return plan.head + END_HEAD

    def _append_body(self, framing: Framing, data: bytes, parts: list[bytes]) -> None:
        if framing is Framing.NONE:
            return
        if framing is Framing.CHUNKED:
            parts.append(encode_chunk(data))
        elif framing is Framing.LENGTH and self.plan is not None:
            room = (self.plan.content_length or 0) - self.body_sent
            if len(data) > room:
                data = data[:room]  # never send more than announced (PEP 3333)
            parts.append(data)
        else:
            parts.append(data)
        self.body_sent += len(data)

    async def sendfile(self, file: Any, offset: int, count: int) -> bool:
        """Send body bytes from a file with the kernel's sendfile(2).

        Returns False when this loop cannot (uvloop has no `loop.sendfile`); the
        caller then streams the file itself. The head must already be sent.
        """
        transport = self.connection.transport
        if self.finished or transport is None or self.connection.closing:
            return True
        try:
            sent = await self.server.loop.sendfile(transport, file, offset, count, fallback=False)
        except (NotImplementedError, asyncio.SendfileNotAvailableError):
            return False
        self.body_sent += sent
        return True

    def switch_protocols(self, response: bytes, status: int, stream: UpgradedStream) -> bool:
        """Write `response` (a complete 101 head) and hand the connection to `stream`.

        Returns False when the connection is already gone or the response started.
        The exchange counts as served; the connection stays open until `stream`
        closes it (through `connection.close`) or the drain deadline.
        """
        connection = self.connection
        if self.finished or connection.closing or self.plan is not None:
            return False
        self.plan = ResponsePlan(status, b"", Framing.NONE, None, must_close=True)
        connection.write(response)
        self.finished = True
        connection.upgrade(stream)
        self.server.exchange_ended(self, served=True)
        return True

    def abort(self) -> None:
        """The app failed after its head was sent: the response cannot be completed."""
        if not self.finished:
            self.keep_alive = False
            self.finished = True
            self.connection.exchange_ended(self)
            self.connection.close()

    def _finish(self) -> None:
        self.finished = True
        plan = self.plan
        lied = plan is not None and plan.framing is Framing.LENGTH
        if lied and plan is not None and self.body_sent != plan.content_length:
            self.keep_alive = False  # the app sent less than it announced
        self.connection.exchange_ended(self)


class Phase(enum.Enum):
    FRESH = "fresh"
    IDLE = "idle"
    HEAD = "head"
    ACTIVE = "active"
    UPGRADED = "upgraded"
    CLOSING = "closing"


class HTTPConnection(asyncio.Protocol):
    """One client connection: parse, dispatch in order, write, time out."""

    def __init__(self, server: ConnectionServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = RequestParser(server.parser_limits)
        self.phase = Phase.FRESH
        self.current: Exchange | None = None
        self._pending: deque[Event] = deque()
        self._pending_bytes = 0
        self._read_pauses: set[str] = set()
        self._writing_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_is_idle = False  # `_timer` is the idle timer (see the module's docstring)
        self._idle_since = 0.0
        self._eof = False
        self.upgraded: UpgradedStream | None = None
        # The client: the socket's peer, or the source a PROXY header announced.
        self.peername: Any = None
        self.sockname: Any = None
        self.trusts_forwarded = False
        self._proxy_header = ProxyHeaderParser() if server.settings.proxy_protocol else None

    @property
    def closing(self) -> bool:
        return self.phase is Phase.CLOSING

    # --------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only duck-alike.
        self.transport = transport = cast(asyncio.Transport, transport)
        self.peername = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")
        self.server.connection_opened(self)
        self._arm(self.server.settings.header_timeout, self.close)
        self.trusts_forwarded = self.server.trusted_proxies.trusts(self.peername)
        if self._proxy_header is not None and not self.trusts_forwarded:
            self.close()  # only a trusted proxy may announce another client address

    def data_received(self, data: bytes) -> None:
        if self.phase is Phase.UPGRADED and self.upgraded is not None:
            self.upgraded.data_received(data)
            return
        if self.phase is Phase.CLOSING:
            return  # lingering: swallow
        if self._proxy_header is not None:
            data = self._read_proxy_header(self._proxy_header, data)
            if not data:
                return
        parser = self.parser
        events = parser.feed(data)
        if (len(events) == 2 and events[1] is MESSAGE_COMPLETE and self.current is None
                and not self._pending and not parser.in_head):
            head = events[0]
            if type(head) is RequestHead and not head.has_body:
                # The usual case, one whole request without a body on an idle
                # connection: what _route and _next_request would do, without the queue.
                self._start_exchange(head)
                return
        if self.phase in (Phase.FRESH, Phase.IDLE) and parser.in_head:
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
        if current is not None and not current.request_complete and current.listener is not None:
            current.listener.body_failed(ConnectionResetError("client closed mid-body"))
        if current is None or self.closing or self.server.eof_is_disconnect:
            if self.transport is not None:
                self.transport.close()
            return None
        # Half-closed after a complete request: answer it, then close.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = Phase.CLOSING
        self._cancel_timer()
        current, self.current = self.current, None
        if current is not None and not current.finished:
            current.finished = True
            self.server.exchange_ended(current, served=False)
            if current.listener is not None:
                current.listener.connection_lost()
        if self.upgraded is not None:
            self.upgraded.connection_lost()
        self.server.connection_closed(self)
        self.transport = None

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.upgraded is not None:
            self.upgraded.writing_paused()
        elif self.current is not None and self.current.listener is not None:
            self.current.listener.writing_paused()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.upgraded is not None:
            self.upgraded.writing_resumed()
        elif self.current is not None and self.current.listener is not None:
            self.current.listener.writing_resumed()

    # ------------------------------------------------------------- routing

    def _route(self, event: Event) -> None:
        """Body events of the current request go to it; all else waits in order."""
        current = self.current
        if current is not None and not self._pending and self._route_to_current(current, event):
            return
        self._pending.append(event)
        if isinstance(event, BodyData):
            self._pending_bytes += len(event.data)
            if self._pending_bytes > READ_HIGH_WATER:
                self.pause_reading("pipeline")

    def _route_to_current(self, current: Exchange, event: Event) -> bool:
        if current.request_complete:
            return False
        if isinstance(event, BodyData):
            self._deliver_body(current, event.data)
        elif isinstance(event, MessageComplete):
            self._complete_request(current)
        elif isinstance(event, RequestRejected):
            self._reject_current(current, event.error)
        else:
            return False
        return True

    def _deliver_body(self, current: Exchange, data: bytes) -> None:
        if current.finished:
            return  # the response is done; the rest of the body is discarded
        if current.listener is not None and current.listener.body_received(data) > READ_HIGH_WATER:
            self.pause_reading("body")

    def _complete_request(self, current: Exchange) -> None:
        current.request_complete = True
        self._cancel_timer()
        if current.finished:
            self.current = None  # was discarding the unread body; move on
            self._next_request()
        elif current.listener is not None:
            current.listener.body_complete()

    def _reject_current(self, current: Exchange, error: HTTPError) -> None:
        """The body broke framing or a limit: answer the error if we still can."""
        if current.listener is not None:
            current.listener.body_failed(error)
        if current.plan is None and not current.finished:
            self.write(error_response(error.status, error.phrase, self.server.date_field()))
        current.abort()

    def _next_request(self) -> None:
        """Start the next buffered request, or wait for one."""
        while self.current is None and self._pending and not self.closing:
            event = self._pending.popleft()
            if isinstance(event, BodyData):
                self._pending_bytes -= len(event.data)
            if isinstance(event, RequestHead):
                self._start_exchange(event)
            elif isinstance(event, RequestRejected):
                self._answer_error(event.error)
        if self._read_pauses and self._pending_bytes <= READ_HIGH_WATER:
            self.resume_reading("pipeline")
        if self.current is None and not self.closing:
            self._wait_for_request()

    def _start_exchange(self, head: RequestHead) -> None:
        exchange = Exchange(self, head)
        self.current = exchange
        self.phase = Phase.ACTIVE
        if not self._timer_is_idle:
            self._cancel_timer()
        self.server.in_flight += 1
        exchange.listener = self.server.handler.handle(exchange)
        # Body events already parsed for this request go to it now, in order.
        while self._pending and not isinstance(self._pending[0], RequestHead):
            event = self._pending.popleft()
            if isinstance(event, BodyData):
                self._pending_bytes -= len(event.data)
            self._route_to_current(exchange, event)
            if isinstance(event, MessageComplete | RequestRejected):
                break

    def _wait_for_request(self) -> None:
        if self._eof:
            self.close()
        elif self.parser.in_head:
            self._enter_head_phase()
        else:
            self.phase = Phase.IDLE
            self._idle_since = self.server.loop.time()
            if not self._timer_is_idle:
                self._arm(self.server.settings.keep_alive_timeout, self._idle_timed_out)
                self._timer_is_idle = True

    def _idle_timed_out(self) -> None:
        self._timer, self._timer_is_idle = None, False
        if self.phase is not Phase.IDLE:
            return  # busy since it was armed; the next idle period arms it again
        remaining = self._idle_since + self.server.settings.keep_alive_timeout
        remaining -= self.server.loop.time()
        if remaining > 0.001:
            self._timer = self.server.loop.call_later(remaining, self._idle_timed_out)
            self._timer_is_idle = True
        else:
            self.close()

    def _enter_head_phase(self) -> None:
        if self.phase is not Phase.HEAD:
            self.phase = Phase.HEAD
            self._arm(self.server.settings.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._answer_error(RequestTimeout("request head not received in time"))

    def _answer_error(self, error: HTTPError) -> None:
        self.write(error_response(error.status, error.phrase, self.server.date_field()))
        self.server.log_rejection(self, error)
        self.close()

    def upgrade(self, stream: UpgradedStream) -> None:
        """From now on the bytes belong to `stream` (see rule 5)."""
        self.current = None
        self.upgraded = stream
        self.phase = Phase.UPGRADED
        self._cancel_timer()
        self._pending.clear()
        self._pending_bytes = 0

    def end_at_deadline(self) -> bool:
        """The drain deadline passed. Returns True if a closing handshake began."""
        if self.upgraded is not None and self.phase is Phase.UPGRADED:
            self.upgraded.deadline_reached()
            return True
        self.abort()
        return False

    # ---------------------------------------------------------- keep-alive

    def may_keep_alive(self, exchange: Exchange, plan: ResponsePlan) -> bool:
        if plan.must_close or not exchange.head.keep_alive or self.server.no_keep_alive:
            return False
        head = exchange.head
        if head.expect_continue and not exchange.continue_sent and not exchange.request_complete:
            return False  # the client may or may not send the body now: ambiguous
        if self.server.draining or self.server.parked:
            return any(isinstance(event, RequestHead) for event in self._pending)
        return True

    def exchange_ended(self, exchange: Exchange) -> None:
        self.server.exchange_ended(exchange, served=True)
        if exchange.request_complete:
            # The listener refers to the exchange: drop the cycle now, so both are
            # freed by reference counting rather than left to the garbage collector.
            exchange.listener = None
        if not exchange.keep_alive:
            self.close()
            return
        if exchange.request_complete:
            self.current = None
            self._next_request()
        else:
            self.resume_reading("body")  # discard the rest of the body, then continue
            self.refresh_timer()

    # -------------------------------------------------------------- I/O helpers

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    def close(self) -> None:
        """Close after flushing; keep swallowing input briefly so the client sees our answer."""
        transport = self.transport
        if transport is None or self.phase is Phase.CLOSING:
            return
        self.phase = Phase.CLOSING
        self._cancel_timer()
        self._read_pauses.clear()
        unread = self.current is not None and not self.current.request_complete
        if (unread or self.parser.in_head) and transport.can_write_eof():
            transport.write_eof()
            transport.resume_reading()
            self._timer = self.server.loop.call_later(LINGER_TIMEOUT, self.abort)
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
                or self.phase not in (Phase.FRESH, Phase.IDLE) or self.parser.in_head
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

    def refresh_timer(self) -> None:
        """(Re)arm the body timer while the app waits for body bytes we are reading."""
        current = self.current
        if current is None or self.closing or current.request_complete or self._read_pauses:
            return
        if current.head.expect_continue and not current.continue_sent:
            return  # the client is waiting for us, not the other way round
        if current.reading_body or current.finished:
            self._arm(self.server.settings.body_timeout, self._body_timed_out)

    def _body_timed_out(self) -> None:
        if self.current is not None:
            self._reject_current(self.current, RequestTimeout("request body stalled"))
        else:
            self.close()

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self.server.loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        self._timer_is_idle = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


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
    ) -> None:
        self.loop = loop
        # A client's FIN ends its exchange at once (ASGI: the app hears http.disconnect,
        # as under uvicorn) instead of being read as a half-close awaiting the answer.
        self.eof_is_disconnect = eof_is_disconnect
        self.settings = settings
        self.handler = handler
        self.access_log = access_log
        # Built here, at worker boot, from the files as they are now (engines/tls.py);
        # raises TLSError, which fails the boot.
        self.tls = server_context(settings)
        self.parser_limits = ParserLimits(
            request_line=settings.limit_request_line,
            field_size=settings.limit_request_field_size,
            fields=settings.limit_request_fields,
            header_block=settings.limit_request_headers,
            max_body_size=settings.max_body_size,
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
                                self._busy)
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

    def _accepted_socket(self, sock: socket.socket) -> None:
        self._accepted += 1
        self._adopting.add(sock)
        task = self.loop.create_task(self._adopt(sock))
        task.add_done_callback(_consume_result)

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

    async def _adopt(self, sock: socket.socket) -> None:
        # With TLS the handshake runs first, under header_timeout (a slowloris may
        # stall it as well as a head). A failed or timed-out handshake is a
        # client's problem: asyncio and uvloop raise an OSError (ssl.SSLError,
        # ConnectionResetError, TimeoutError) and the socket is simply released.
        try:
            if self.tls is None:
                await self.loop.connect_accepted_socket(lambda: HTTPConnection(self), sock)
            else:
                await self.loop.connect_accepted_socket(
                    lambda: HTTPConnection(self), sock, ssl=self.tls,
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
               if connection.current is not None and not connection.current.finished
               and connection.phase is Phase.ACTIVE]
    return [CutRequest(exchange.head.method.decode("latin-1"),
                       exchange.head.target.decode("latin-1").partition("?")[0],
                       max(now - exchange.started, 0.0))
            for exchange in sorted(running, key=lambda exchange: exchange.started)]


def _consume_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


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


class WriteBackPressure:
    """For ASGI senders: `send` awaits `_writable` while the transport is paused.

    The core calls `writing_paused`/`writing_resumed`; one copy for HTTP and WebSocket.
    """

    _loop: asyncio.AbstractEventLoop
    _writable: asyncio.Future[None] | None

    def writing_paused(self) -> None:
        if self._writable is None:
            self._writable = self._loop.create_future()

    def writing_resumed(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)
