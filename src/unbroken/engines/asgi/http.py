"""One ASGI `http` request/response cycle on the connection core.

Rules:
1. Everything runs on the loop thread: the core calls the listener methods, the
   application's task calls `receive` and `send`. No locks, no thread hops.
2. The head waits for the first body message, so the usual one-body response is
   one `transport.write` of head and body, with a Content-Length we computed.
3. `receive` after the response ended, or after the client left, answers
   `http.disconnect` at once (as uvicorn does); a waiting `receive` is woken then.
4. `send` waits while the transport is paused for writing, so a streaming app
   cannot buffer without bound. After a disconnect it raises `ClientDisconnected`
   (an OSError, as spec 2.4 asks), which is how a 2.4-aware framework such as
   Starlette stops an endless stream; the engine does not log it as an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

from unbroken.engines import RequestHooks
from unbroken.engines.core.exchange import Exchange
from unbroken.errors import UnbrokenError
from unbroken.http.response import HeadCache, head_fields, plan_head, plan_response

error_log = logging.getLogger("unbroken.error")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

INTERNAL_ERROR_HEADERS = [(b"content-type", b"text/plain; charset=utf-8")]
INTERNAL_ERROR_BODY = b"Internal Server Error\n"
DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}
REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}
# The checked heads of recent responses, by status and header pairs as the app sent them.
_HEADS = HeadCache()


class ClientDisconnected(UnbrokenError, OSError):
    """`send` after the client left (ASGI spec 2.4 asks for an OSError subclass)."""


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


class HTTPCycle(WriteBackPressure):
    """The application's `receive`/`send` for one request; the core's listener for it."""

    __slots__ = (
        "_asked_for_body",
        "_body_given",
        "_body_waiter",
        "_buffered",
        "_chunks",
        "_complete",
        "_disconnected",
        "_exchange",
        "_head_sent",
        "_headers",
        "_loop",
        "_more_body",
        "_status",
        "_writable",
    )

    def __init__(self, exchange: Exchange, loop: asyncio.AbstractEventLoop) -> None:
        self._exchange = exchange
        self._loop = loop
        self._chunks: list[bytes] = []
        # Their total, kept as they come: summing the list at every arrival was
        # quadratic (20,000 one-byte chunks cost 6.6 s of CPU: issue 14 item 4).
        self._buffered = 0
        self._more_body = exchange.head.has_body
        self._body_waiter: asyncio.Future[None] | None = None
        self._asked_for_body = False
        self._body_given = False
        self._disconnected = False
        self._status: int | None = None
        self._headers: Any = None
        self._head_sent = False
        self._complete = False
        self._writable: asyncio.Future[None] | None = None

    # ------------------------------------------------------ ExchangeListener

    def body_received(self, data: bytes) -> int:
        self._chunks.append(data)
        self._buffered += len(data)
        self._wake_reader()
        return self._buffered

    def body_complete(self) -> None:
        self._more_body = False
        self._wake_reader()

    def body_failed(self, error: Exception) -> None:
        self.connection_lost()

    def connection_lost(self) -> None:
        self._disconnected = True
        self._wake_reader()
        self.writing_resumed()

    def _wake_reader(self) -> None:
        waiter, self._body_waiter = self._body_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------- receive

    async def receive(self) -> Message:
        if self._complete or self._disconnected:
            return DISCONNECT
        if self._body_given:
            return await self._wait_for_disconnect()
        if self._more_body and not self._asked_for_body:
            self._asked_for_body = True
            self._exchange.read_body()
        while not self._chunks and self._more_body:
            self._body_waiter = waiter = self._loop.create_future()
            await waiter
            if self._disconnected:
                return DISCONNECT
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._more_body:
            self._exchange.resume_body()
        else:
            self._body_given = True
        return {"type": "http.request", "body": body, "more_body": self._more_body}

    async def _wait_for_disconnect(self) -> Message:
        """The whole body was received already: the next event is the end of the cycle."""
        while not (self._disconnected or self._complete):
            self._body_waiter = waiter = self._loop.create_future()
            await waiter
        return DISCONNECT

    # ---------------------------------------------------------------- send

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self._status is None:
            if kind != "http.response.start":
                raise RuntimeError(f"expected 'http.response.start', got {kind!r}")
            self._status = int(message["status"])
            self._headers = message.get("headers", ())
            return
        if kind != "http.response.body" or self._complete:
            raise RuntimeError(f"unexpected ASGI message {kind!r} after the response started"
                               if not self._complete else f"{kind!r} after the response ended")
        if self._disconnected:
            raise ClientDisconnected("the client disconnected")
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        plan = None
        if not self._head_sent:
            plan = self._plan(None if more else len(body))
            self._head_sent = True
        if not more:
            self._complete = True
            self._wake_reader()
        self._exchange.send(plan, body, not more)
        if more and self._writable is not None:
            await self._writable

    def _plan(self, length_hint: int | None) -> Any:
        exchange = self._exchange
        status, headers = self._status, self._headers
        assert status is not None
        # A list of pairs can be a key (a one-shot iterable cannot be read twice).
        key: object = None
        fields = None
        if type(headers) is list:
            try:
                key = (status, *headers)
                fields = _HEADS.get(key)
            except TypeError:  # lists for pairs: not cached
                key = None
        if fields is None:
            fields = head_fields(status, REASONS.get(status, b""), headers)
            if key is not None:
                _HEADS.put(key, fields)
        return plan_head(fields, request_method=exchange.head.method,
                         request_version=exchange.head.version,
                         date_field=exchange.connection.server.date_field(),
                         length_hint=length_hint)  # fmt: skip

    # -------------------------------------------------------------- running

    async def run(self, app: ASGIApp, scope: dict[str, Any], running: dict[object, Any],
                  hooks: RequestHooks | None = None) -> None:
        """Run the app for this request; remove self from `running` when it returns."""
        try:
            if hooks is not None:
                hooks.before(self._exchange.head, scope)
            await app(scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException as error:
            if isinstance(error, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                self._exchange.abort()
                raise
            if not self._disconnected:  # else the app turned our ClientDisconnected into
                head = self._exchange.head  # its own (Starlette): nothing to report
                error_log.exception("error handling %s %r", head.method.decode(), head.target)
                self._fail()
        else:
            if not self._complete and not self._disconnected:
                error_log.error("ASGI app returned without completing the response")
                self._fail()
            self._complete = True
        finally:
            running.pop(self, None)
            if hooks is not None:
                self._after(hooks, scope)

    def _after(self, hooks: RequestHooks, scope: dict[str, Any]) -> None:
        try:
            hooks.after(self._exchange.head, scope, self._status or 500, list(self._headers or ()))
        except Exception:
            error_log.exception("post_request hook failed")

    def _fail(self) -> None:
        """Answer 500 if nothing was sent yet; otherwise the response is broken: close."""
        self._complete = True
        exchange = self._exchange
        if self._head_sent or self._disconnected:
            exchange.abort()
            return
        self._head_sent = True
        plan = plan_response(
            500, b"Internal Server Error", INTERNAL_ERROR_HEADERS,
            request_method=exchange.head.method, request_version=exchange.head.version,
            date_field=exchange.server.date_field(), length_hint=len(INTERNAL_ERROR_BODY),
        )
        exchange.send(plan, INTERNAL_ERROR_BODY, True)
