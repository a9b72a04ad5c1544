"""The seams that let a test drive `HTTPConnection` alone, instantly, and exactly.

`FakeClock` stands for the loop's `time`/`call_later` (the core's `Clock`):
time moves only when the test says `advance`, so a timer rule is checked at its
exact instant. `FakeTransport` records what the connection writes and how it
closes, as uvicorn's `MockTransport` does; `connection_lost` arrives as asyncio
delivers it, soon (on the fake clock) rather than inside `close()`. `EchoHandler`
is a tiny application on the core's own engine seam (`RequestHandler`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from unbroken.engines import EngineSettings
from unbroken.engines.core.connection import HTTPConnection
from unbroken.engines.core.exchange import Exchange
from unbroken.engines.core.server import ConnectionServer
from unbroken.http.response import plan_response

SETTINGS = EngineSettings(header_timeout=3.0, keep_alive_timeout=5.0, body_timeout=7.0)


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], object]) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Run, in order, every timer due by now + seconds (and those they arm)."""
        until = self.now + seconds
        while self._timers and self._timers[0][0] <= until:
            when, _, timer = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not timer.cancelled:
                timer.callback()
        self.now = until

    def armed(self) -> list[float]:
        """When the timers still armed will fire, relative to now."""
        return sorted(when - self.now for when, _, timer in self._timers if not timer.cancelled)


class FakeTransport(asyncio.Transport):
    def __init__(self, protocol: asyncio.Protocol, clock: FakeClock) -> None:
        super().__init__()
        self.protocol = protocol
        self.clock = clock
        self.written = bytearray()
        self.closed = False  # close(): after flushing
        self.aborted = False
        self.eof_written = False
        self.reading = True
        self.lost = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.1", 40000), "sockname": ("192.0.2.2", 80)}.get(name,
                                                                                  default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed and not self.aborted, "written after close"
        self.written += data

    def take(self) -> bytes:
        data, self.written = bytes(self.written), bytearray()
        return data

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._lose()

    def abort(self) -> None:
        if not self.aborted:
            self.aborted = True
            self._lose()

    def _lose(self) -> None:
        def lose() -> None:
            if not self.lost:
                self.lost = True
                self.protocol.connection_lost(None)

        self.clock.call_later(0, lose)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed or self.aborted


@dataclass
class Echo:
    """The listener of one exchange: echoes the request back once its body is all here."""

    exchange: Exchange
    handler: EchoHandler
    body: bytearray = field(default_factory=bytearray)

    def answer(self) -> None:
        head = self.exchange.head
        text = b"%s %s %d %s" % (head.method, head.target, len(self.body), bytes(self.body))
        plan = plan_response(200, b"OK", [(b"content-type", b"text/plain")],
                             request_method=head.method, request_version=head.version,
                             date_field=b"date: Thu, 01 Jan 1970 00:00:00 GMT\r\n",
                             length_hint=len(text))
        if self.handler.chunked:  # a head, then the body in two pieces, then the end
            plan = plan_response(200, b"OK", [], request_method=head.method,
                                 request_version=head.version,
                                 date_field=b"date: Thu, 01 Jan 1970 00:00:00 GMT\r\n")
            self.exchange.send(plan, b"", False)
            self.exchange.send(None, text[:3], False)
            self.exchange.send(None, text[3:], True)
        else:
            self.exchange.send(plan, text, True)

    def body_received(self, data: bytes) -> int:
        self.body += data
        return len(self.body)  # all of it unread, as far as the core knows

    def body_complete(self) -> None:
        if not self.handler.answer_first:
            self.answer()

    def body_failed(self, error: Exception) -> None:
        self.handler.failures.append(error)

    def writing_paused(self) -> None: ...

    def writing_resumed(self) -> None: ...

    def connection_lost(self) -> None: ...


@dataclass
class EchoHandler:
    """Answers each request with its method, target and body; reads bodies at once
    unless `read_body` is False (then the app waits, as a WSGI app that never reads)."""

    read_body: bool = True
    # Answer on the head alone, before the body's end (having asked for it if read_body).
    answer_first: bool = False
    chunked: bool = False
    exchanges: list[Exchange] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)

    def handle(self, exchange: Exchange) -> Echo:
        self.exchanges.append(exchange)
        echo = Echo(exchange, self)
        if self.answer_first and self.read_body and not exchange.request_complete:
            exchange.read_body()  # it began to read, then answered before the end
        if self.answer_first or exchange.request_complete:
            echo.answer()
        elif self.read_body:
            exchange.read_body()
        return echo


@dataclass
class Wire:
    """One connection under test: the protocol, its transport and the clock."""

    connection: HTTPConnection
    transport: FakeTransport
    clock: FakeClock
    handler: EchoHandler

    def send(self, data: bytes) -> None:
        self.connection.data_received(data)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


@contextmanager
def wire(handler: EchoHandler | None = None, *, shortcuts: bool = True,
         **settings: Any) -> Iterator[Wire]:
    """A connection just accepted, on a server whose loop never runs."""
    loop = asyncio.new_event_loop()
    clock = FakeClock()
    handler = handler if handler is not None else EchoHandler()
    try:
        server = ConnectionServer(loop, replace(SETTINGS, **settings), handler, clock=clock,
                                  shortcuts=shortcuts)
        connection = HTTPConnection(server)
        transport = FakeTransport(connection, clock)
        connection.connection_made(transport)
        yield Wire(connection, transport, clock, handler)
    finally:
        loop.close()
