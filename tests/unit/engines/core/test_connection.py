"""`HTTPConnection` on a fake transport and a fake clock: the timer table of
engines/core/connection.py, each rule at its exact instant, with no socket and no wait.

    fresh connection, nothing received ........ header_timeout → close
    idle between requests ...................... keep_alive_timeout → close
    part of a head received .................... header_timeout from its first byte → 408, close
    body expected, not paused, app is reading .. the body clock (`body_deadline`) → 408, close
    response ended, the rest of the body ....... discard_timeout from the response's end → close
      still coming (read only to be dropped)
"""

from __future__ import annotations

import random

from fakes import SETTINGS, Echo, EchoHandler, wire

from unbroken.engines.core.connection import LINGER_TIMEOUT
from unbroken.engines.core.exchange import Exchange
from unbroken.engines.core.routing import READ_HIGH_WATER
from unbroken.engines.core.states import ConnectionState
from unbroken.http.response import plan_response

HEADER, KEEP_ALIVE, BODY, RATE, DISCARD = (
    SETTINGS.header_timeout, SETTINGS.keep_alive_timeout, SETTINGS.body_timeout,
    SETTINGS.body_min_rate, SETTINGS.discard_timeout)
TICK = 1e-6
GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
DATE = b"date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
POST_HEAD = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n"


def status_line(data: bytes) -> bytes:
    return data.split(b"\r\n", 1)[0]


def test_a_fresh_connection_that_sends_nothing_is_closed_at_header_timeout() -> None:
    with wire() as w:
        w.advance(HEADER - TICK)
        assert not w.transport.closed
        w.advance(TICK)
        assert w.transport.closed and w.transport.take() == b""
        assert w.connection.state is ConnectionState.CLOSED


def test_an_idle_connection_is_closed_keep_alive_timeout_after_its_response() -> None:
    with wire() as w:
        w.advance(1.0)
        w.send(GET)
        assert status_line(w.transport.take()) == b"HTTP/1.1 200 OK"
        assert w.connection.state is ConnectionState.IDLE
        w.advance(KEEP_ALIVE - TICK)
        assert not w.transport.closed
        w.advance(TICK)
        assert w.transport.closed and w.transport.take() == b""


def test_the_idle_timer_outlives_requests_and_measures_the_last_idle_period() -> None:
    """The shortcut of the timer table: one timer per period, re-armed for the rest."""
    with wire() as w:
        w.send(GET)  # idle from t=0, the idle timer fires at KEEP_ALIVE
        for _ in range(3):
            w.advance(1.0)
            w.send(GET)  # no call_later, no cancel: the same timer stays armed
            assert len(w.clock.armed()) == 1
        # Idle since t=3: the timer fires at KEEP_ALIVE, re-arms for the 3 s left.
        w.advance(KEEP_ALIVE - 3.0)
        assert not w.transport.closed and w.clock.armed() == [3.0]
        w.advance(3.0 - TICK)
        assert not w.transport.closed
        w.advance(TICK)
        assert w.transport.closed


def test_part_of_a_head_gets_header_timeout_from_its_first_byte_then_408() -> None:
    with wire() as w:
        w.advance(2.0)  # the fresh timer counted from the accept: replaced now
        w.send(b"GET / HTT")
        assert w.connection.state is ConnectionState.IN_HEAD
        w.advance(HEADER - TICK)
        w.send(b"P/1.1\r\nHost")  # more bytes do not restart it
        w.advance(TICK)
        assert status_line(w.transport.take()) == b"HTTP/1.1 408 Request Timeout"
        assert w.connection.state in (ConnectionState.CLOSING, ConnectionState.CLOSED)


def test_a_head_begun_while_idle_is_timed_from_its_first_byte() -> None:
    with wire() as w:
        w.send(GET)
        w.transport.take()
        w.advance(KEEP_ALIVE - 1.0)
        w.send(b"GET")
        w.advance(HEADER - TICK)
        assert not w.transport.closed
        w.advance(TICK)
        assert status_line(w.transport.take()) == b"HTTP/1.1 408 Request Timeout"


def test_a_body_the_app_reads_may_not_stall_longer_than_body_timeout() -> None:
    with wire(body_min_rate=0) as w:  # the gap alone
        w.send(POST_HEAD + b"ab")
        assert w.clock.armed() == [BODY]
        w.advance(BODY - 1.0)
        w.send(b"cd")  # no timer is moved: the one armed looks again when it fires
        assert w.clock.armed() == [1.0]
        w.advance(1.0)
        assert w.clock.armed() == [BODY - 1.0] and w.transport.take() == b""
        w.advance(BODY - 1.0 - TICK)
        assert w.transport.take() == b""
        w.advance(TICK)
        assert status_line(w.transport.take()) == b"HTTP/1.1 408 Request Timeout"
        # The unread rest of the body is swallowed for a while (lingering close).
        assert w.transport.eof_written and not w.transport.closed
        w.advance(LINGER_TIMEOUT)
        assert w.transport.aborted


def test_a_trickling_body_is_cut_with_408_when_it_falls_under_the_minimum_rate() -> None:
    """One byte every 2 s (issue 14's slow POST): BODY seconds, plus a second per RATE
    bytes received, and no more; each byte's arrival keeps the gap rule happy."""
    head = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n"
    with wire() as w:
        w.send(head)
        sent = 0
        while w.clock.now - 1000.0 + 2.0 < BODY:
            w.advance(2.0)
            w.send(b"x")
            sent += 1
        due = 1000.0 + BODY + sent / RATE
        w.advance(due - w.clock.now - TICK)
        assert w.transport.take() == b"" and not w.transport.eof_written
        w.advance(TICK)
        assert status_line(w.transport.take()) == b"HTTP/1.1 408 Request Timeout"
        assert w.handler.failures, "the app's body read fails too"


def test_a_body_at_the_minimum_rate_or_faster_is_never_cut() -> None:
    size = int(RATE * BODY * 4)
    head = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size
    with wire() as w:
        w.send(head)
        for _ in range(int(BODY * 4)):  # RATE bytes a second, for 4 x BODY seconds
            w.advance(1.0)
            w.send(b"x" * int(RATE))
        assert status_line(w.transport.take()) == b"HTTP/1.1 200 OK"


def test_a_body_the_app_does_not_read_runs_no_timer() -> None:
    with wire(EchoHandler(read_body=False)) as w:
        w.send(POST_HEAD + b"ab")
        assert w.clock.armed() == []
        w.advance(100 * BODY)
        assert not w.transport.closed and w.transport.take() == b""


def test_expect_continue_waits_for_the_app_then_says_100_and_times_the_body() -> None:
    head = b"PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    with wire(EchoHandler(read_body=False)) as w:
        w.send(head)
        w.advance(100 * BODY)
        assert w.transport.take() == b"" and w.clock.armed() == []
        w.handler.exchanges[0].read_body()
        assert w.transport.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert w.clock.armed() == [BODY]
        w.send(b"ok")
        assert w.transport.take().endswith(b"PUT /u 2 ok")


def test_a_paused_read_runs_no_body_timer_until_the_app_resumes_it() -> None:
    with wire() as w:
        w.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
               % (READ_HIGH_WATER + 2) + b"x" * (READ_HIGH_WATER + 1))
        assert not w.transport.reading and w.clock.armed() == []
        w.advance(100 * BODY)
        w.handler.exchanges[0].resume_body()
        assert w.transport.reading and w.clock.armed() == [BODY]
        w.send(b"y")
        assert status_line(w.transport.take()) == b"HTTP/1.1 200 OK"


def test_the_rest_of_a_body_after_the_response_is_discarded_until_discard_timeout() -> None:
    with wire(EchoHandler(answer_first=True)) as w:  # it read some, then answered
        w.send(POST_HEAD + b"ab")
        answer = w.transport.take()
        assert status_line(answer) == b"HTTP/1.1 200 OK" and b"connection: close" not in answer
        assert w.clock.armed() == [DISCARD]
        for _ in range(3):  # reads do not move the deadline: it is a total
            w.advance(DISCARD / 4)
            w.send(b"c")
        w.advance(DISCARD / 4 - TICK)
        assert not w.transport.eof_written
        w.advance(TICK)  # closed, lingering: the client already has its answer
        assert w.transport.eof_written and w.transport.take() == b""


def test_a_body_the_app_never_asked_for_is_not_waited_for() -> None:
    """Answered on the head alone, the body still coming: the response says close."""
    with wire(EchoHandler(answer_first=True, read_body=False)) as w:
        w.send(POST_HEAD + b"ab")
        answer = w.transport.take()
        assert status_line(answer) == b"HTTP/1.1 200 OK" and b"connection: close" in answer
        assert w.transport.eof_written
        w.advance(LINGER_TIMEOUT)
        assert w.transport.aborted


def test_a_body_that_breaks_after_the_response_closes_the_connection() -> None:
    head = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    with wire(EchoHandler(answer_first=True)) as w:
        w.send(head + b"2\r\nab\r\n")
        assert status_line(w.transport.take()) == b"HTTP/1.1 200 OK"
        w.send(b"zz\r\n")  # not a chunk size
        assert w.transport.eof_written and w.transport.take() == b""


def test_the_next_request_after_a_discarded_body_is_served() -> None:
    with wire(EchoHandler(answer_first=True)) as w:
        w.send(POST_HEAD + b"ab")
        w.transport.take()
        w.send(b"c" * 8 + GET)
        assert w.transport.take().endswith(b"GET / 0 ")
        assert w.connection.state is ConnectionState.IDLE


class Stream:
    """An UpgradedStream that keeps what it is given."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.deadline = False

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> None: ...

    def connection_lost(self) -> None: ...

    def writing_paused(self) -> None: ...

    def writing_resumed(self) -> None: ...

    def deadline_reached(self) -> None:
        self.deadline = True


class Upgrading(EchoHandler):
    """Switches every request to `stream` (as a WebSocket accept does)."""

    def __init__(self, stream: Stream) -> None:
        super().__init__()
        self.stream = stream

    def handle(self, exchange: Exchange) -> Echo:
        assert exchange.switch_protocols(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 101,
                                         self.stream)
        return Echo(exchange, self)


def test_after_101_the_bytes_are_the_streams_and_no_http_timer_runs() -> None:
    stream = Stream()
    with wire(Upgrading(stream)) as w:
        w.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
        assert w.transport.take() == b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
        assert w.connection.state is ConnectionState.UPGRADED
        assert w.clock.armed() == []
        w.send(b"GET / HTTP/1.1\r\n\r\n")  # not HTTP any more
        w.advance(100 * max(HEADER, KEEP_ALIVE, BODY))
        assert bytes(stream.data) == b"GET / HTTP/1.1\r\n\r\n" and not w.transport.closed
        assert w.connection.end_at_deadline() and stream.deadline


def test_bytes_that_end_no_request_begin_a_head() -> None:
    """Why the connection table has no (FRESH, ALL_ANSWERED): random bytes, empty
    lines included, begin a head or are refused, on a fresh or an idle connection."""
    rng = random.Random(13)
    pieces = [b"\r\n", b"\n", b"\r", b" ", b"\x00", b"\r\n\r\n"]
    pieces += [rng.randbytes(rng.randint(1, 12)) for _ in range(300)]
    for piece in pieces:
        for idle in (False, True):
            with wire() as w:
                if idle:
                    w.send(GET)
                w.send(piece)
                assert w.connection.state in (ConnectionState.IN_HEAD, ConnectionState.CLOSING,
                                              ConnectionState.SERVING), piece


def test_a_request_past_its_timeout_gets_503_and_what_the_app_sends_later_is_dropped() -> None:
    handler = EchoHandler(read_body=False)  # the app has not answered yet
    with wire(handler) as w:
        w.send(POST_HEAD)
        exchange = handler.exchanges[0]
        exchange.time_out(30)
        answer = w.transport.take()
        assert status_line(answer) == b"HTTP/1.1 503 Service Unavailable"
        assert b"connection: close\r\n" in answer
        assert answer.endswith(b"the request ran past 30s\n")
        Echo(exchange, handler).answer()  # the app comes back, too late
        assert w.transport.take() == b""
        # its body was never read: the core lingers (EOF sent, input swallowed), then aborts
        assert w.connection.state is ConnectionState.CLOSING and w.transport.eof_written
        w.advance(LINGER_TIMEOUT)
        assert w.transport.aborted


def test_a_request_past_its_timeout_mid_response_is_closed() -> None:
    handler = EchoHandler(read_body=False)
    with wire(handler) as w:
        w.send(POST_HEAD)
        exchange = handler.exchanges[0]
        exchange.send(plan_response(200, b"OK", [], request_method=b"POST",
                                    request_version="1.1", date_field=DATE), b"part", False)
        w.transport.take()
        exchange.time_out(30)
        assert w.transport.take() == b"" and w.connection.state is ConnectionState.CLOSING


def test_body_deadline_is_mod_reqtimeouts_rate_and_a_gap_limit() -> None:
    from unbroken.engines.core.timers import body_deadline

    # Nothing yet: the first bytes are due by `timeout`.
    assert body_deadline(0.0, 0.0, 0, 20.0, 500.0) == 20.0
    # A second more for every 500 bytes...
    assert body_deadline(0.0, 19.0, 5_000, 20.0, 500.0) == 30.0
    # ...but never more than `timeout` after the last read.
    assert body_deadline(0.0, 1.0, 1_000_000, 20.0, 500.0) == 21.0
    # No rate: the gap alone.
    assert body_deadline(0.0, 5.0, 0, 20.0, 0.0) == 25.0
