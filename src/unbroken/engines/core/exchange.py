"""One request and its response on a connection: the request/response cycle.

The connection (engines/core/connection.py) owns the bytes and the timers; the
exchange is what an engine holds for one request, and the only way it answers.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol

from unbroken.engines.core.states import (
    ABORTED,
    BODY_ENDED,
    BODY_WAITING,
    CLIENT_LEFT,
    CLOSING,
    END_SENT,
    HEAD_SENT,
    NOT_STARTED,
    READ_ASKED,
    REQUEST,
    REQUEST_COMPLETE,
    RESPONSE,
    RESPONSE_ENDED,
    UPGRADE_SENT,
    WHOLE_SENT,
    RequestState,
    ResponseEvent,
    ResponseState,
)
from unbroken.http.events import RequestHead
from unbroken.http.forwarded import NOT_FORWARDED, Forwarded, read_forwarded
from unbroken.http.response import (
    CHUNKED,
    LAST_CHUNK,
    LENGTH,
    NONE,
    Framing,
    ResponsePlan,
    encode_chunk,
    plan_response,
)

if TYPE_CHECKING:
    from unbroken.engines.core.connection import HTTPConnection, UpgradedStream
    from unbroken.engines.core.server import ConnectionServer

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



class RequestHandler(Protocol):
    def handle(self, exchange: Exchange) -> ExchangeListener: ...


class Exchange:
    """One request and its response on a connection (loop-thread object).

    Its two sides move through `states.REQUEST` and `states.RESPONSE`; `plan`,
    `keep_alive` and `body_sent` are what the response turned out to be.
    """

    __slots__ = ("body_sent", "connection", "forwarded", "head", "keep_alive", "listener",
                 "plan", "request", "response", "started")

    def __init__(self, connection: HTTPConnection, head: RequestHead) -> None:
        self.connection = connection
        self.head = head
        self.listener: ExchangeListener | None = None
        self.request: RequestState = BODY_WAITING if head.has_body else REQUEST_COMPLETE
        self.response: ResponseState = NOT_STARTED
        self.plan: ResponsePlan | None = None
        # Rule 4 of connection.py: decided with the head, withdrawn if the body falls short.
        self.keep_alive = False
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

    @property
    def request_complete(self) -> bool:
        return self.request is REQUEST_COMPLETE

    @property
    def finished(self) -> bool:
        """Nothing more of the response goes out (ended, aborted, switched or lost)."""
        return self.response is RESPONSE_ENDED

    # ------------------------------------------------------------ request side

    def read_body(self) -> None:
        """The app wants the body: say 100 Continue if the client waits for it."""
        if self.request is not BODY_WAITING or self.response is RESPONSE_ENDED:
            return
        connection = self.connection
        if self.head.expect_continue:
            if self.response is not NOT_STARTED:
                return  # too late for a 100: the client keeps waiting, unread
            connection.write(CONTINUE)
        self.request = REQUEST[self.request, READ_ASKED]
        connection.refresh_timer()

    def body_ended(self) -> None:
        self.request = REQUEST[self.request, BODY_ENDED]

    def resume_body(self) -> None:
        """The app consumed enough buffered body: read from the socket again."""
        self.connection.resume_reading("body")

    # ----------------------------------------------------------- response side

    def send(self, plan: ResponsePlan | None, data: bytes, end: bool) -> None:
        """Write the head (when `plan` is given), body bytes, and maybe the end."""
        connection = self.connection
        # CLOSED needs no look: connection_lost ended every exchange still open.
        if self.response is RESPONSE_ENDED or connection.state is CLOSING:
            return
        if (end and plan is not None and plan.framing is LENGTH
                and len(data) == plan.content_length and connection.shortcuts):
            self._send_whole(plan, data)
            return
        parts: list[bytes] = []
        if plan is not None:
            parts.append(self._head(plan))
            self.response = RESPONSE[self.response, HEAD_SENT]
        framing = self.plan.framing if self.plan is not None else NONE
        if data:
            self._append_body(framing, data, parts)
        if end and framing is CHUNKED:
            parts.append(LAST_CHUNK)
        if parts:
            connection.write(parts[0] if len(parts) == 1 else b"".join(parts))
        if end:
            self._finish(END_SENT)

    def _send_whole(self, plan: ResponsePlan, data: bytes) -> None:
        """The usual response, whole and exactly as long as announced: one write, and one
        move (WHOLE_SENT, the shortcut of HEAD_SENT then END_SENT)."""
        self.connection.write(self._head(plan) + data)
        self.body_sent = len(data)
        self._finish(WHOLE_SENT)

    def _head(self, plan: ResponsePlan) -> bytes:
        """Decide keep-alive now (rule 4); return the head with its Connection ending."""
        self.plan = plan
        self.keep_alive = self.connection.may_keep_alive(self, plan)
        if not self.keep_alive:
            return plan.head + END_CLOSE
        if self.head.version == "1.0":
            return plan.head + END_KEEP_ALIVE_10
        return plan.head + END_HEAD

    def _append_body(self, framing: Framing, data: bytes, parts: list[bytes]) -> None:
        if framing is NONE:
            return
        if framing is CHUNKED:
            parts.append(encode_chunk(data))
        elif framing is LENGTH and self.plan is not None:
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
        if self.response is RESPONSE_ENDED or transport is None or self.connection.closing:
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
        if self.response is not NOT_STARTED or connection.closing:
            return False
        self.plan = ResponsePlan(status, b"", NONE, None, must_close=True)
        connection.write(response)
        self.response = RESPONSE[self.response, UPGRADE_SENT]
        connection.upgrade(stream)
        self.server.exchange_ended(self, served=True)
        return True

    def abort(self) -> None:
        """The app failed after its head was sent: the response cannot be completed."""
        if self.response is not RESPONSE_ENDED:
            self.keep_alive = False
            self.response = RESPONSE[self.response, ABORTED]
            self.connection.exchange_ended(self)
            self.connection.close()

    def time_out(self, limit: float) -> None:
        """(loop) It ran past --request-timeout: answer 503 and close if nothing was sent
        yet, else close (the response cannot be completed). What the app sends later is
        dropped: the response has ended."""
        if self.response is NOT_STARTED:
            plan, body = timed_out_response(self, limit)
            self.send(plan, body, end=True)
            self.connection.close()
        elif self.response is not RESPONSE_ENDED:
            self.abort()

    def lost(self) -> None:
        """The client left before the response ended."""
        self.response = RESPONSE[self.response, CLIENT_LEFT]

    def _finish(self, event: ResponseEvent) -> None:
        self.response = RESPONSE[self.response, event]
        plan = self.plan
        lied = plan is not None and plan.framing is LENGTH
        if lied and plan is not None and self.body_sent != plan.content_length:
            self.keep_alive = False  # the app sent less than it announced
        self.connection.exchange_ended(self)



def timed_out_response(exchange: Exchange, limit: float) -> tuple[ResponsePlan, bytes]:
    """The 503 for a request past --request-timeout; it closes the connection."""
    body = f"503 Service Unavailable: the request ran past {limit:g}s\n".encode()
    plan = plan_response(
        503, b"Service Unavailable",
        [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")],
        request_method=exchange.head.method, request_version=exchange.head.version,
        date_field=exchange.server.date_field(), length_hint=len(body))
    return plan, body
