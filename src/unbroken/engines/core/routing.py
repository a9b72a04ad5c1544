"""In-order dispatch on one connection: the parsed events, each to its request.

Rule 2 of connection.py, one request at a time: the events of the request being
served go to its exchange; every later event waits in `_pending`, in order, and the
next request starts when the response before it has ended. So responses are in order
by construction, and pipelined bytes are bounded (`READ_HIGH_WATER`: past it the
connection stops reading until the queue drains).

A part of `HTTPConnection` (a mixin: the state machine stays one object, as h11's
rule 1 asks; its code is split by what it does). What it uses of the connection is
declared below for the type checker only.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from unbroken.engines.core.exchange import Exchange
from unbroken.engines.core.states import (
    ALL_ANSWERED,
    CLOSED,
    CLOSING,
    CONNECTION,
    NOT_STARTED,
    REQUEST_COMPLETE,
    REQUEST_STARTED,
    RESPONSE_ENDED,
    ConnectionState,
)
from unbroken.engines.core.timers import IDLE_TIMER
from unbroken.http.errors import HTTPError
from unbroken.http.events import BodyData, Event, MessageComplete, RequestHead, RequestRejected
from unbroken.http.response import error_response

if TYPE_CHECKING:
    from unbroken.engines.core.connection import Clock
    from unbroken.engines.core.server import ConnectionServer
    from unbroken.http.parser import RequestParser

# Unread request body (or queued pipelined bytes) above which we stop reading.
READ_HIGH_WATER = 256 * 1024


class Pipeline:
    if TYPE_CHECKING:
        server: ConnectionServer
        parser: RequestParser
        state: ConnectionState
        current: Exchange | None
        _pending: deque[Event]
        _pending_bytes: int
        _read_pauses: set[str]
        _timer_kind: str
        _body_bytes: int
        _body_last: float
        _idle_since: float
        _eof: bool
        _clock: Clock

        @property
        def closing(self) -> bool: ...

        def write(self, data: bytes) -> None: ...

        def close(self) -> None: ...

        def pause_reading(self, reason: str) -> None: ...

        def resume_reading(self, reason: str) -> None: ...

        def _cancel_timer(self) -> None: ...

        def _arm(self, delay: float, callback: Any, kind: str = ...) -> None: ...

        def _enter_head_phase(self) -> None: ...

        def _idle_timed_out(self) -> None: ...

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
        if current.request is REQUEST_COMPLETE:
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
        if current.response is RESPONSE_ENDED:
            return  # the response is done; the rest of the body is discarded
        # The body clock (timers.py): what came, and when it last did.
        self._body_bytes += len(data)
        self._body_last = self._clock.time()
        if current.listener is not None and current.listener.body_received(data) > READ_HIGH_WATER:
            self.pause_reading("body")

    def _complete_request(self, current: Exchange) -> None:
        current.body_ended()
        self._cancel_timer()
        if current.response is RESPONSE_ENDED:
            self.current = None  # was discarding the unread body; move on
            self._next_request()
        elif current.listener is not None:
            current.listener.body_complete()

    def _reject_current(self, current: Exchange, error: HTTPError) -> None:
        """The body broke framing or a limit: answer the error if we still can."""
        if current.listener is not None:
            current.listener.body_failed(error)
        if current.response is NOT_STARTED:
            self.write(error_response(error.status, error.phrase, self.server.date_field()))
        if current.response is RESPONSE_ENDED:
            # Answered already, and the rest of the body (read only to be discarded)
            # stalled or broke: nothing to abort, but the connection cannot go on.
            self.close()
        else:
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
        if self.current is None and self.state is not CLOSING and self.state is not CLOSED:
            self._wait_for_request()

    def _start_exchange(self, head: RequestHead) -> None:
        exchange = Exchange(self, head)  # type: ignore[arg-type]  # an HTTPConnection
        self.current = exchange
        self.state = CONNECTION[self.state, REQUEST_STARTED]
        if self._timer_kind is not IDLE_TIMER:
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
            self.state = CONNECTION[self.state, ALL_ANSWERED]
            self._idle_since = self._clock.time()
            if self._timer_kind is not IDLE_TIMER:
                self._arm(self.server.settings.keep_alive_timeout, self._idle_timed_out,
                          IDLE_TIMER)

    def _answer_error(self, error: HTTPError) -> None:
        self.write(error_response(error.status, error.phrase, self.server.date_field()))
        self.server.log_rejection(self, error)  # type: ignore[arg-type]  # an HTTPConnection
        self.close()
