"""One WSGI request: the application's thread, and the core's listener for it.

The rules it keeps (read ahead on the loop, inline or pooled, two hops, `close()` on
the thread that iterated) are engine.py's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from unbroken.engines.core.exchange import Exchange
from unbroken.engines.wsgi.streams import (
    BODY_HIGH_WATER,
    NO_BODY,
    FileWrapper,
    RequestBody,
    WriteGate,
)
from unbroken.errors import UnbrokenError
from unbroken.http.errors import ResponseHeaderError
from unbroken.http.response import (
    HeadCache,
    HeadFields,
    ResponsePlan,
    head_fields,
    plan_head,
    plan_response,
)

if TYPE_CHECKING:
    from unbroken.engines.wsgi.engine import WSGIEngine

error_log = logging.getLogger("unbroken.error")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], None]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

INTERNAL_ERROR_BODY = b"Internal Server Error\n"
# Rule 1: body bytes read on the loop before the app gets the request; at the body
# buffer's high water, so reading ahead never buffers more than streaming would.
BODY_AHEAD = BODY_HIGH_WATER
# The checked heads of recent responses, by the status and headers the app gave
# `start_response` (str pairs): the usual response is then one dict lookup, not a parse,
# an encoding, a check and a join.
_HEADS = HeadCache()


class ClientGone(UnbrokenError):
    """The connection closed under a running application; stop producing output."""


class WSGIRequest:
    """One request's life on its thread; also the core's listener for it (loop side)."""

    __slots__ = ("_buffered", "_engine", "_environ", "_exchange", "_fields", "_gate",
                 "_head_key", "_head_sent", "_headers", "_loop", "_lost", "_on_loop",
                 "_paused", "_reading_ahead", "_status", "body")  # fmt: skip

    def __init__(self, engine: WSGIEngine, exchange: Exchange) -> None:
        self._engine = engine
        self._exchange = exchange
        self._loop = engine.loop
        self._on_loop = False  # running inline: loop work is a plain call, not a hop
        # Made only for a pool thread (see `use_pool`): an inline request never waits.
        self._gate: WriteGate | None = None
        self._paused = False
        self._lost = False
        self.body: RequestBody | Any = RequestBody(self) if exchange.head.has_body else NO_BODY
        self._status: tuple[int, bytes] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        # The checked head from _HEADS, or None (then _plan makes it, under `_head_key`).
        self._fields: HeadFields | None = None
        self._head_key: object = None
        self._head_sent = False
        self._buffered = 0  # body bytes received and not yet read by the app
        self._reading_ahead = False  # rule 1: the app waits for the body, not vice versa
        self._environ: dict[str, Any] | None = None  # kept only for the request hooks

    def use_pool(self) -> None:
        """(loop) Before a pool thread takes over: it waits for room through a gate."""
        if self._gate is None:
            self._gate = gate = WriteGate()
            gate.set_paused(self._paused)
            if self._lost:
                gate.connection_lost()
        self._on_loop = False

    def body_read_asked(self) -> None:
        """(the app's thread, from wsgi.input) The app first reads the body."""
        self._to_loop(self._exchange.read_body)

    def body_drained(self) -> None:
        """(the app's thread, from wsgi.input) The app read the buffer down: read on."""
        self._to_loop(self._exchange.resume_body)

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        """Hand work to the loop thread; a closed loop means the worker is past its drain."""
        if self._on_loop:
            callback(*args)
            return
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            raise ClientGone from None

    # ------------------------------------------------ ExchangeListener (loop)

    def body_received(self, data: bytes) -> int:
        self._buffered = buffered = int(self.body.feed(data))
        if self._reading_ahead and buffered >= BODY_AHEAD:
            self._start()
        return buffered

    def body_complete(self) -> None:
        self.body.feed_eof()
        if self._reading_ahead:
            self._start()

    def dispatch(self) -> None:
        """(loop, soon after `handle`) Give the request to a thread now if its body is
        here, or enough of it; else read ahead until it is (rule 1)."""
        exchange = self._exchange
        if (exchange.request_complete or self._buffered >= BODY_AHEAD or exchange.finished
                or exchange.head.expect_continue):
            self._engine.run_request(self)
            return
        self._reading_ahead = True
        exchange.read_body()

    def _start(self) -> None:
        self._reading_ahead = False
        # Soon, not now: we are inside the core's routing of this body's events.
        self._loop.call_soon(self._engine.run_request, self)

    def body_failed(self, error: Exception) -> None:
        self.body.fail(error)

    def writing_paused(self) -> None:
        self._paused = True
        if self._gate is not None:
            self._gate.set_paused(True)

    def writing_resumed(self) -> None:
        self._paused = False
        if self._gate is not None:
            self._gate.set_paused(False)

    def connection_lost(self) -> None:
        self._lost = True
        self.body.fail(ConnectionResetError("client disconnected"))
        if self._gate is not None:
            self._gate.connection_lost()

    # ------------------------------------------------------------ loop thread

    def run_inline(self) -> None:
        """Serve on the loop thread (rule 2); hand over to the pool where that must wait."""
        engine = self._engine
        if engine.pool_busy or not self._exchange.request_complete:
            engine.submit(self)  # keeps one request at a time, in order; bodies may block
            return
        self._on_loop = True
        engine.inline_exchange = self._exchange
        engine.in_app = True
        result: Iterable[bytes] | None = None
        try:
            result = self._call_app()
            rest = self._respond_inline(result)
            if rest is not None:
                engine.submit_rest(self, result, rest)
                result = None  # the pool thread closes it
        except Exception as error:
            self._failed(error)
        finally:
            self._on_loop = False
            try:
                if result is not None:
                    self._close(result)
                    if self._environ is not None:  # request hooks
                        self._after()
            finally:
                engine.in_app = False
                if engine.held:  # the drain watchdog is taking over (worker/main.py)
                    engine.wait_while_held()

    def _respond_inline(self, result: Iterable[bytes]) -> Iterator[bytes] | FileWrapper | None:
        """Send what the transport takes now; return what a pool thread must finish."""
        if isinstance(result, FileWrapper):
            return result  # sendfile waits on the loop: only a pool thread can
        if not self._head_sent and isinstance(result, (list, tuple)):
            self._respond_at_once(result)
            return None
        return self._stream(result)

    def finish_in_pool(self, result: Iterable[bytes], rest: Iterator[bytes] | FileWrapper) -> None:
        """(pool thread) Go on with a response that began inline, then close it."""
        try:
            if isinstance(rest, FileWrapper):
                self._respond(rest)
            else:
                self._stream(rest)
        except Exception as error:
            self._failed(error)
        finally:
            self._close(result)
        if self._environ is not None:  # request hooks
            self._after()

    # ----------------------------------------------------- application thread

    def run(self) -> None:
        try:
            result = self._call_app()
            try:
                self._respond(result)
            finally:
                self._close(result)
        except Exception as error:
            self._failed(error)
        if self._environ is not None:  # request hooks
            self._after()

    # ------------------------------------------------------------ either thread

    def _call_app(self) -> Iterable[bytes]:
        environ = self._engine.environ_for(self._exchange)
        environ["wsgi.input"] = self.body
        hooks = self._engine.request_hooks
        if hooks is not None:
            self._environ = environ
            hooks.before(self._exchange.head, environ)
        return self._engine.app(environ, self.start_response)

    def _after(self) -> None:
        """(the app's thread, the response over) The post_request hook, if any."""
        hooks = self._engine.request_hooks
        assert hooks is not None and self._environ is not None
        try:
            code = self._status[0] if self._status is not None else 500
            hooks.after(self._exchange.head, self._environ, code, self._headers)
        except Exception:
            error_log.exception("post_request hook failed")

    def _failed(self, error: Exception) -> None:
        """(in an `except` block) The app or its response failed: log, then answer 500 or
        abort. A client that left is not an error."""
        if isinstance(error, ClientGone):
            return
        head = self._exchange.head
        error_log.exception("error handling %s %r", head.method.decode(), head.target)
        try:
            self._fail()
        except ClientGone:
            pass

    @staticmethod
    def _close(result: Iterable[bytes]) -> None:
        close = getattr(result, "close", None)
        if close is not None:
            close()

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self._head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._status is not None:
            raise RuntimeError("start_response() called twice without exc_info")
        try:
            key: object = (status, *headers)
            fields = _HEADS.get(key)
        except TypeError:  # something unhashable in there: not cached, judged in _plan
            key = fields = None
        if fields is None or self._engine.request_hooks is not None:
            self._status = _parse_status(status)
            self._headers = _encode_headers(headers)  # also what post_request is given
        else:
            self._status = (fields.status, b"")
        self._fields, self._head_key = fields, key
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy `write()` callable: push bytes out now (head first if needed)."""
        if not isinstance(data, bytes):
            raise TypeError(f"write() needs bytes, not {type(data).__name__}")
        if data:
            self._send(data, end=False)

    def _respond(self, result: Iterable[bytes]) -> None:
        if not self._head_sent and isinstance(result, (list, tuple)):
            self._respond_at_once(result)
        elif not self._head_sent and isinstance(result, FileWrapper) and _is_regular(result):
            self._respond_with_file(result)
        else:
            self._stream(result)

    def _respond_at_once(self, result: list[bytes] | tuple[bytes, ...]) -> None:
        """The fast path: head and body in one hop and one write."""
        body = result[0] if len(result) == 1 else b"".join(result)
        if not isinstance(body, bytes):
            raise TypeError(f"response body must be bytes, not {type(body).__name__}")
        plan = self._plan(length_hint=len(body))
        self._head_sent = True
        if self._on_loop:
            self._exchange.send(plan, body, True)
        else:
            self._to_loop(self._exchange.send, plan, body, True)

    def _respond_with_file(self, wrapper: FileWrapper) -> None:
        file = wrapper.filelike
        offset = file.tell()
        count = max(os.fstat(file.fileno()).st_size - offset, 0)
        plan = self._plan(length_hint=count)
        if plan.content_length is not None:
            count = min(count, plan.content_length)
        self._head_sent = True
        coroutine = self._sendfile(plan, file, offset, count)
        if not asyncio.run_coroutine_threadsafe(coroutine, self._loop).result():
            file.seek(offset)
            self._stream(wrapper)

    async def _sendfile(self, plan: ResponsePlan, file: Any, offset: int, count: int) -> bool:
        exchange = self._exchange
        exchange.send(plan, b"", end=False)
        if exchange.plan is None or exchange.plan.framing.value != "content-length":
            exchange.send(None, b"", end=True)
            return True
        if not await exchange.sendfile(file, offset, count):
            return False
        exchange.send(None, b"", end=True)
        return True

    def _stream(self, chunks: Iterable[bytes]) -> Iterator[bytes] | None:
        """Send every chunk, then the end. Inline, stop at a reader that cannot keep up and
        return the rest for a pool thread (which waits for room at the gate instead)."""
        iterator = iter(chunks)
        for chunk in iterator:
            if self._lost:
                raise ClientGone
            if not isinstance(chunk, bytes):
                raise TypeError(f"response body must be bytes, not {type(chunk).__name__}")
            if chunk:
                self._send(chunk, end=False)
                if self._on_loop and self._paused:
                    return iterator
        self._send(b"", end=True)
        return None

    def _send(self, data: bytes, end: bool) -> None:
        plan = None
        if not self._head_sent:
            plan = self._plan(length_hint=len(data) if end else None)
            self._head_sent = True
        if self._on_loop:
            self._exchange.send(plan, data, end)  # inline: the transport takes it now
            return
        assert self._gate is not None, "use_pool() runs before a pool thread starts"
        self._gate.reserve(len(data))
        self._to_loop(self._send_on_loop, plan, data, end)

    def _send_on_loop(self, plan: ResponsePlan | None, data: bytes, end: bool) -> None:
        try:
            self._exchange.send(plan, data, end)
        finally:
            if self._gate is not None:
                self._gate.release(len(data))

    def _plan(self, length_hint: int | None) -> ResponsePlan:
        fields = self._fields
        if fields is None:
            if self._status is None:
                raise RuntimeError("the application did not call start_response()")
            code, reason = self._status
            fields = head_fields(code, reason, self._headers)
            if self._head_key is not None:
                _HEADS.put(self._head_key, fields)
        head = self._exchange.head
        return plan_head(fields, request_method=head.method, request_version=head.version,
                         date_field=self._engine.dates.field(time.time()),
                         length_hint=length_hint)  # fmt: skip

    def _fail(self) -> None:
        """Answer 500 if nothing was sent yet; otherwise the response is broken: close."""
        exchange = self._exchange
        if self._head_sent:
            self._to_loop(exchange.abort)
            return
        self._head_sent = True
        plan = plan_response(
            500,
            b"Internal Server Error",
            [(b"content-type", b"text/plain; charset=utf-8")],
            request_method=exchange.head.method,
            request_version=exchange.head.version,
            date_field=self._engine.dates.field(time.time()),
            length_hint=len(INTERNAL_ERROR_BODY),
        )
        self._to_loop(exchange.send, plan, INTERNAL_ERROR_BODY, True)


def _parse_status(status: str) -> tuple[int, bytes]:
    code, _, reason = status.partition(" ")
    if len(code) != 3 or not code.isdigit():
        raise ResponseHeaderError(f"invalid status {status!r}")
    try:
        return int(code), reason.encode("latin-1")
    except UnicodeEncodeError:
        raise ResponseHeaderError(f"status not latin-1: {status!r}") from None


def _encode_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    try:
        return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    except (UnicodeEncodeError, AttributeError, ValueError) as exc:
        raise ResponseHeaderError(f"response headers must be latin-1 str pairs: {exc}") from None


def _is_regular(wrapper: FileWrapper) -> bool:
    """sendfile(2) needs a real file with a position, not a pipe or BytesIO."""
    try:
        fileno = wrapper.filelike.fileno()
        wrapper.filelike.tell()
        return stat.S_ISREG(os.fstat(fileno).st_mode)
    except (AttributeError, OSError, ValueError):
        return False
