"""The WSGI engine and connection core over real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_until
from wsgi_harness import is_closed, read_response, serve

from unbroken.engines.core import acceptor

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True, params=[1, 4], ids=["inline", "pool"])
def threads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Every test runs twice: with one thread (requests served on the loop thread when
    they can, engines/wsgi/engine.py rule 2) and with a pool of four. A test that passes
    `threads=` itself keeps its own."""
    import wsgi_harness

    monkeypatch.setattr(wsgi_harness, "FAST", replace(wsgi_harness.FAST, threads=request.param))
    return int(request.param)

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


def echo_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["REQUEST_METHOD"].encode(), b" ", environ["PATH_INFO"].encode(), b" ", body]


def get(path: str = "/", extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: test\r\n" + extra + b"\r\n"


def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    with serve(echo_app) as server, server.connect() as client:
        for number in range(3):
            client.sendall(get(f"/{number}"))
            status, headers, body = read_response(client)
            assert (status, body) == (200, f"GET /{number} ".encode())
            assert "connection" not in headers and "date" in headers
        wait_until(lambda: server.engine.requests_served == 3, timeout=2,
                   message="the three requests counted")
        assert server.engine.connections == 1


def test_pipelined_requests_are_answered_in_order() -> None:
    with serve(echo_app) as server, server.connect() as client:
        post = b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
        client.sendall(get("/a") + post + get("/c"))
        bodies = [read_response(client)[2] for _ in range(3)]
        assert bodies == [b"GET /a ", b"POST /b hi", b"GET /c "]


def test_valid_request_then_garbage_gives_200_then_400_and_close() -> None:
    with serve(echo_app) as server, server.connect() as client:
        client.sendall(get("/ok") + b"GARBAGE\r\n\r\n")
        assert read_response(client)[0] == 200
        status, headers, _ = read_response(client)
        assert status == 400 and headers["connection"] == "close"
        assert is_closed(client)


def test_chunked_request_body() -> None:
    with serve(echo_app) as server, server.connect() as client:
        client.sendall(
            b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
        )
        assert read_response(client)[2] == b"POST /up abcdefg"


def streaming_app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"one,"
    yield b""
    yield b"two"


def test_generator_response_is_chunked_on_http11_and_close_delimited_on_http10() -> None:
    with serve(streaming_app) as server:
        with server.connect() as client:
            client.sendall(get())
            _, headers, body = read_response(client)
            assert headers["transfer-encoding"] == "chunked" and body == b"one,two"
        with server.connect() as client:
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            _status, headers, body = read_response(client)
            assert "transfer-encoding" not in headers and body == b"one,two"
            assert headers["connection"] == "close"


def test_head_sends_no_body_but_keeps_the_length() -> None:
    with serve(echo_app) as server, server.connect() as client:
        client.sendall(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n" + get("/after"))
        status, headers, _ = read_response(client, head_only=True)
        assert status == 200 and headers["content-length"] == "8"
        assert read_response(client)[2] == b"GET /after "


EXPECTING_PUT = b"PUT /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"


def test_expect_100_continue_is_sent_only_when_the_app_reads() -> None:
    with serve(echo_app) as server, server.connect() as client:
        client.sendall(EXPECTING_PUT)
        assert read_response(client)[0] == 100
        client.sendall(b"data")
        assert read_response(client)[2] == b"PUT /e data"


def test_no_100_continue_when_the_app_does_not_read() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("403 Forbidden", [])
        return [b"no"]

    with serve(app) as server, server.connect() as client:
        client.sendall(EXPECTING_PUT)
        status, headers, body = read_response(client)
        assert (status, body) == (403, b"no") and headers["connection"] == "close"


def test_write_callable_streams_before_the_iterable() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [])
        write(b"written,")
        return [b"returned"]

    with serve(app) as server, server.connect() as client:
        client.sendall(get())
        assert read_response(client)[2] == b"written,returned"


def test_exc_info_replaces_the_status_before_the_head_is_sent() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("X-First", "1")])
        try:
            raise ValueError("boom")
        except ValueError:
            import sys

            start_response("503 Service Unavailable", [("X-Second", "2")], sys.exc_info())
        return [b"sorry"]

    with serve(app) as server, server.connect() as client:
        client.sendall(get())
        status, headers, body = read_response(client)
        assert (status, body) == (503, b"sorry")
        assert "x-first" not in headers and headers["x-second"] == "2"


def test_exc_info_after_the_head_was_sent_reraises_and_closes() -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"partial"
        try:
            raise ValueError("late")
        except ValueError:
            import sys

            start_response("500 Oops", [], sys.exc_info())

    with serve(app) as server, server.connect() as client:
        client.sendall(get())
        status, _, _ = read_response(client, head_only=True)
        assert status == 200
        assert is_closed(client) or b"0\r\n\r\n" not in client.recv(100)


class ClosingBody:
    def __init__(self, parts: Iterable[bytes], fail: bool = False) -> None:
        self.parts = parts
        self.fail = fail
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        yield from self.parts
        if self.fail:
            raise RuntimeError("iteration failed")

    def close(self) -> None:
        self.closed.set()


def test_close_is_called_on_success_and_on_error() -> None:
    bodies = [ClosingBody([b"fine"]), ClosingBody([], fail=True)]
    queue = list(bodies)

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        return queue.pop(0)

    with serve(app) as server, server.connect() as client:
        client.sendall(get())
        assert read_response(client)[2] == b"fine"
        client.sendall(get())
        assert read_response(client)[0] == 500
        assert all(body.closed.wait(2) for body in bodies)


def test_file_wrapper_sends_the_file(tmp_path: Path) -> None:
    path = tmp_path / "payload.bin"
    path.write_bytes(b"0123456789" * 10000)

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        handle = path.open("rb")
        handle.seek(5)
        return environ["wsgi.file_wrapper"](handle)

    with serve(app) as server, server.connect() as client:
        client.sendall(get() + get())
        for _ in range(2):
            _status, headers, body = read_response(client)
            assert headers["content-length"] == str(100000 - 5)
            assert body == path.read_bytes()[5:]


def test_app_exception_gives_500_and_the_connection_keeps_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise KeyError("boom")
        return echo_app(environ, start_response)

    with serve(app) as server, server.connect() as client:
        client.sendall(get("/boom"))
        assert read_response(client)[0] == 500
        client.sendall(get("/fine"))
        assert read_response(client)[2] == b"GET /fine "
    assert any("boom" in record.getMessage() or record.exc_info for record in caplog.records)


def test_header_injection_by_the_app_is_a_500() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: x=y")])
        return [b"never"]

    with serve(app) as server, server.connect() as client:
        client.sendall(get())
        status, headers, _ = read_response(client)
        assert status == 500 and "set-cookie" not in headers


def test_a_head_served_again_from_the_cache_is_the_same_and_checked_heads_only() -> None:
    """start_response's heads are cached by what the app gave; a head that was refused is
    never cached, and headers that cannot be a key (lists) are still served."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        path = environ["PATH_INFO"]
        if path == "/evil":
            start_response("200 OK", [("X-Evil", "a\r\nb")])
        elif path == "/lists":
            start_response("200 OK", [["Content-Type", "text/plain"]])  # type: ignore[list-item]
        else:
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    with serve(app) as server, server.connect() as client:
        answers = []
        for path in ("/", "/", "/evil", "/evil", "/lists", "/lists"):
            client.sendall(get(path))
            answers.append(read_response(client))
    for _, headers, _ in answers:
        headers.pop("date", None)  # may tick over between two answers
    assert answers[0] == answers[1] and answers[0][0] == 200
    assert answers[2][0] == answers[3][0] == 500
    assert answers[4][0] == answers[5][0] == 200 and answers[4][2] == b"ok"


def test_environ_contents() -> None:
    seen: dict[str, Any] = {}

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        seen.update(environ)
        start_response("204 No Content", [])
        return []

    with serve(app, threads=1) as server, server.connect() as client:
        client_port = client.getsockname()[1]
        client.sendall(
            b"POST /a%20b/c?q=1 HTTP/1.1\r\nHost: test\r\nX-Dup: 1\r\nX-Dup: 2\r\n"
            b"X-Forwarded_For: spoof\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
        )
        assert read_response(client)[0] == 204
    assert seen["PATH_INFO"] == "/a b/c" and seen["QUERY_STRING"] == "q=1"
    assert seen["SCRIPT_NAME"] == "" and seen["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert seen["HTTP_X_DUP"] == "1,2" and "HTTP_X_FORWARDED_FOR" not in seen
    assert seen["CONTENT_TYPE"] == "text/plain" and seen["CONTENT_LENGTH"] == "0"
    assert seen["SERVER_NAME"] == "127.0.0.1" and seen["SERVER_PORT"] == str(server.port)
    assert seen["REMOTE_ADDR"] == "127.0.0.1" and seen["REMOTE_PORT"] == str(client_port)
    assert seen["wsgi.input_terminated"] is True and seen["wsgi.multithread"] is False
    assert seen["wsgi.multiprocess"] is True and seen["wsgi.url_scheme"] == "http"


def test_wsgi_input_readline_and_iteration() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        stream = environ["wsgi.input"]
        first = stream.readline()
        rest = list(stream)
        start_response("200 OK", [])
        return [b"%d|%s|%s" % (len(rest), first, b"".join(rest))]

    with serve(app) as server, server.connect() as client:
        client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\na\nbb\nccc\n")
        assert read_response(client)[2] == b"2|a\n|bb\nccc\n"


def test_slow_head_gets_408_and_close_within_header_timeout() -> None:
    with serve(echo_app, header_timeout=0.3) as server, server.connect() as client:
        started = time.monotonic()
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        status, headers, _ = read_response(client)
        assert status == 408 and headers["connection"] == "close"
        assert is_closed(client)
        assert time.monotonic() - started < 1.0


def test_trickling_head_does_not_reset_the_header_deadline() -> None:
    with serve(echo_app, header_timeout=0.4) as server, server.connect() as client:
        started = time.monotonic()
        client.sendall(b"GET / HTTP/1.1\r\n")
        for _ in range(3):
            time.sleep(0.15)
            try:
                client.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
        assert read_response(client)[0] == 408
        assert time.monotonic() - started < 1.0


def test_stalled_body_is_closed_after_body_timeout() -> None:
    with serve(echo_app, body_timeout=0.3) as server, server.connect() as client:
        client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        started = time.monotonic()
        status, _, _ = read_response(client)
        assert status in (408, 500)
        assert is_closed(client) and time.monotonic() - started < 1.5


def test_bodies_trickling_in_hold_no_thread_from_other_clients(threads: int) -> None:
    """As many connections as there are threads each send Content-Length: 100000 and
    then a byte every 0.15 s (inside the body timer's gap, with no minimum rate): the
    bodies are read ahead on the loop, so fresh GETs are answered at once meanwhile
    (before, every one of them waited; HTTP-hardening issue item 2), and the uploads
    complete in the end."""
    with serve(echo_app, body_min_rate=0) as server:
        uploads = [server.connect() for _ in range(threads)]
        for upload in uploads:
            upload.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\na")
        latencies = []
        for byte in b"bcde":
            time.sleep(0.15)
            for upload in uploads:
                upload.sendall(bytes([byte]))
            started = time.monotonic()
            with server.connect() as client:
                client.sendall(get("/fresh"))
                assert read_response(client)[2] == b"GET /fresh "
            latencies.append(time.monotonic() - started)
        for upload in uploads:
            upload.sendall(b"f")
            assert read_response(upload)[2] == b"POST /up abcdef"
            upload.close()
    assert max(latencies) < 0.1, latencies


def test_a_large_body_streams_to_the_app_once_enough_is_read_ahead() -> None:
    started = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        started.set()
        body = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [str(len(body)).encode()]

    size = 1024 * 1024
    with serve(app) as server, server.connect() as client:
        client.sendall(b"PUT / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        client.sendall(b"x" * 1000)
        time.sleep(0.1)
        assert not started.is_set()  # a few bytes: still read ahead on the loop
        client.sendall(b"x" * (300 * 1024))
        assert started.wait(1)  # past BODY_AHEAD: the app has it, the rest streams
        client.sendall(b"x" * (size - 1000 - 300 * 1024))
        assert read_response(client)[2] == str(size).encode()


def test_keep_alive_0_says_connection_close_instead_of_closing_unannounced() -> None:
    with serve(echo_app, keep_alive_timeout=0) as server, server.connect() as client:
        client.sendall(get())
        status, headers, _ = read_response(client)
        assert status == 200 and headers["connection"] == "close"
        assert is_closed(client)


def test_idle_keep_alive_connection_closes_at_its_timeout() -> None:
    with serve(echo_app, keep_alive_timeout=0.3) as server, server.connect() as client:
        client.sendall(get())
        read_response(client)
        started = time.monotonic()
        assert is_closed(client)
        assert 0.2 < time.monotonic() - started < 1.0


def test_body_over_max_body_size_is_413_before_the_app_runs() -> None:
    calls: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        return echo_app(environ, start_response)

    with serve(app, max_body_size=10) as server, server.connect() as client:
        client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n")
        assert read_response(client)[0] == 413
    assert calls == []


# ------------------------------------------------------------------ drain


def test_drain_lets_the_in_flight_request_finish_with_connection_close() -> None:
    release = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        release.wait(2)
        start_response("200 OK", [])
        return [b"finished"]

    # With a pool the loop is free while the app runs, so the drain begins first; an
    # inline request holds the loop (see the inline test below).
    with serve(app, threads=4) as server, server.connect() as client:
        client.sendall(get())
        wait_until(lambda: server.engine.in_flight == 1, timeout=2, message="the request in flight")
        drained = threading.Thread(target=server.drain, args=(3.0,))
        drained.start()
        wait_until(lambda: server.engine._server.draining, timeout=2, message="the drain begun")
        release.set()
        status, headers, body = read_response(client)
        assert (status, body) == (200, b"finished") and headers["connection"] == "close"
        assert is_closed(client)
        drained.join(3)
        assert not drained.is_alive()
        assert server.engine.cut_requests == []  # it finished: nothing was cut


def test_drain_stops_accepting_but_keeps_idle_connections_until_their_next_response() -> None:
    with serve(echo_app, keep_alive_timeout=1.5) as server, server.connect() as client:
        client.sendall(get())
        read_response(client)
        drained = threading.Thread(target=server.drain, args=(3.0,))
        drained.start()
        wait_until(lambda: server.engine._server.draining, timeout=2, message="the drain begun")
        probe = socket.create_connection(("127.0.0.1", server.port), timeout=0.3)
        with probe, pytest.raises(OSError):
            probe.sendall(get())
            if not probe.recv(10):
                raise ConnectionError("not served")
        client.sendall(get("/late"))
        _status, headers, body = read_response(client)
        assert body == b"GET /late " and headers["connection"] == "close"
        assert is_closed(client)
        drained.join(3)


def test_drain_closes_idle_connections_at_keep_alive_timeout() -> None:
    with serve(echo_app, keep_alive_timeout=0.3) as server, server.connect() as client:
        client.sendall(get())
        read_response(client)
        took = server.drain(3.0)
        assert 0.1 < took < 1.0
        assert is_closed(client)


def test_drain_returns_at_the_deadline_and_closes_what_is_left() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        time.sleep(1.0)
        start_response("200 OK", [])
        return [b"too late"]

    with serve(app, threads=4) as server, server.connect() as client:
        client.sendall(get("/late?token=secret"))
        wait_until(lambda: server.engine.in_flight == 1, timeout=2, message="the request in flight")
        took = server.drain(0.3)
        assert 0.25 < took < 0.8
        assert is_closed(client)
        # What the worker reports as cut: the path without its query, and its age.
        [cut] = server.engine.cut_requests
        assert (cut.method, cut.path) == ("GET", "/late") and 0.3 < cut.age < 1.0


def test_inline_drain_begins_when_the_request_returns_and_loses_nothing() -> None:
    """Inline, the loop waits for the app: a drain asked meanwhile starts after the
    response went out (still whole), and the idle connection then closes at its
    keep-alive timeout, as guarantee 3 allows. The master's --graceful-timeout is what
    bounds an app that never returns."""
    running = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        running.set()
        time.sleep(0.5)
        start_response("200 OK", [])
        return [b"finished"]

    with serve(app, threads=1, keep_alive_timeout=0.3) as server, server.connect() as client:
        client.sendall(get())
        assert running.wait(2)  # the app is running on the loop thread now
        took = server.drain(0.2)  # a deadline the loop cannot see until the app returns
        status, _headers, body = read_response(client)
        assert (status, body) == (200, b"finished")
        assert is_closed(client)
        assert 0.35 < took < 1.5  # after the app's 0.5 s, not at the 0.2 s deadline


CHUNKS = 160  # 10 MiB: more than loopback's socket buffers take (about 4 MiB here)


def test_inline_stream_to_a_slow_reader_continues_in_the_pool() -> None:
    """Chunks go out from the loop thread while the client keeps up; once the transport
    pauses, the rest of the iteration (and close) moves to the pool's thread."""
    chunk = b"x" * 65536
    seen: list[str] = []
    body = ClosingBody([])

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def chunks() -> Iterator[bytes]:
            for _ in range(CHUNKS):
                seen.append(threading.current_thread().name)
                yield chunk

        body.parts = chunks()
        return body

    # keep_alive 5 s: a client slowed by a loaded machine must not lose the connection
    # to the idle timer between the 10 MiB response and its next request.
    with serve(app, threads=1, keep_alive_timeout=5.0) as server, server.connect() as client:
        client.sendall(get("/big"))
        # Not reading yet: the socket buffers fill, the transport pauses, and the
        # iteration moves to the pool's thread, which draws the next chunk there.
        wait_until(lambda: any(name.startswith("unbroken-wsgi") for name in seen), timeout=3,
                   message="a chunk drawn on the pool's thread")
        _status, _headers, received = read_response(client)
        assert received == chunk * CHUNKS
        assert body.closed.wait(2)
        first = list(seen)  # /after runs the same app: its chunks are not this answer's
        client.sendall(get("/after"))
        assert read_response(client)[0] == 200
    assert len(first) == CHUNKS
    assert not first[0].startswith("unbroken-wsgi")  # the first chunk: on the loop
    assert first[-1].startswith("unbroken-wsgi")  # the last ones: on the pool's thread


def test_one_thread_serves_one_request_at_a_time_in_order() -> None:
    """With --threads 1 requests never overlap, so wsgi.multithread=False holds; a body
    still arriving is read ahead on the loop, so the requests behind it are served
    meanwhile, and it runs when it is whole (inline, the pool being idle)."""
    lock = threading.Lock()
    running = [0]
    most = [0]
    where: dict[str, str] = {}

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        assert environ["wsgi.multithread"] is False
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        body = environ["wsgi.input"].read()
        with lock:
            running[0] -= 1
        where[environ["PATH_INFO"]] = threading.current_thread().name
        start_response("200 OK", [])
        return [body]

    with serve(app, threads=1) as server:
        clients = [server.connect() for _ in range(3)]
        try:
            slow, first, second = clients
            slow.sendall(b"POST /post HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab")
            # Its head is parsed, half its body is here: read ahead, the app waits.
            wait_until(lambda: server.engine.in_flight == 1, timeout=2,
                       message="the POST in flight")
            first.sendall(get("/one"))
            second.sendall(get("/two"))
            assert read_response(first)[0] == read_response(second)[0] == 200
            assert "/post" not in where
            slow.sendall(b"cd")
            assert read_response(slow)[2] == b"abcd"
            first.sendall(get("/three"))
            assert read_response(first)[0] == 200
        finally:
            for client in clients:
                client.close()
    assert most[0] == 1
    assert not where["/post"].startswith("unbroken-wsgi")
    assert not where["/three"].startswith("unbroken-wsgi")


def test_a_busy_worker_takes_a_waiting_connection_once_a_thread_frees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With requests waiting for its threads a worker steps back before accepting, so
    an idle sibling takes the connection; with none, it takes it as soon as a request
    ends, not when the (here: a minute's) delay runs out."""
    monkeypatch.setattr(acceptor, "BUSY_ACCEPT_DELAY", 60.0)
    release = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        if environ["PATH_INFO"] == "/slow":
            release.wait(5)
        start_response("200 OK", [])
        return [b"ok"]

    with serve(app, threads=2) as server:
        slow = [server.connect() for _ in range(3)]
        late = None
        try:
            for client in slow:
                client.sendall(get("/slow"))
            wait_until(lambda: server.engine.in_flight == 3, timeout=2,
                       message="three requests for two threads")
            late = server.connect()
            late.sendall(get("/late"))
            acceptors = server.engine._server._acceptors
            wait_until(lambda: acceptors[0]._busy_wait is not None, timeout=2,
                       message="the acceptor stepping back")
            release.set()
            assert read_response(late)[0] == 200
            assert all(read_response(client)[0] == 200 for client in slow)
        finally:
            release.set()
            for client in [*slow, late]:
                if client is not None:
                    client.close()


def test_a_request_restarts_the_idle_timeout() -> None:
    """The idle timer stays armed across requests (engines/core/connection.py): when it fires on a
    connection that was busy meanwhile, it waits out a full idle period again."""
    with serve(echo_app, keep_alive_timeout=0.5) as server, server.connect() as client:
        client.sendall(get("/a"))
        read_response(client)
        time.sleep(0.35)
        client.sendall(get("/b"))
        read_response(client)
        last_answer = time.monotonic()
        assert not is_closed(client, timeout=0.3)  # past the first timer's 0.5 s
        assert is_closed(client)
        assert 0.4 < time.monotonic() - last_answer < 1.2


def test_at_max_connections_the_longest_idle_connection_makes_room() -> None:
    """HTTP-hardening issue: a flood of idle keep-alives must not lock new clients out.
    At the cap the connection idle the longest is closed; one mid-request is not."""
    with serve(echo_app, max_connections=3, keep_alive_timeout=30.0, body_timeout=30.0) as server:
        oldest, newer = server.connect(), server.connect()
        for client in (oldest, newer):
            client.sendall(get("/first"))
            assert read_response(client)[2] == b"GET /first "
            time.sleep(0.05)  # so the two idle periods are ordered
        busy = server.connect()
        busy.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab")
        fresh = server.connect()  # the fourth: it waits in the listen queue for room
        fresh.sendall(get("/fresh"))
        assert read_response(fresh)[2] == b"GET /fresh "
        assert is_closed(oldest, timeout=2.0)
        assert not is_closed(newer, timeout=0.3) and not is_closed(busy, timeout=0.3)
        busy.sendall(b"cd")
        assert read_response(busy)[2] == b"POST /up abcd"
        for client in (oldest, newer, busy, fresh):
            client.close()
        assert server.engine._server.evicted >= 1


def test_chunk_extensions_over_their_limit_are_400() -> None:
    """Counted from the `;` (";a=" and the b's): 16 bytes fit a limit of 16."""
    chunked = b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    with serve(echo_app, limit_chunk_extensions=16) as server:
        with server.connect() as client:
            client.sendall(chunked + b"2;a=" + b"b" * 13 + b"\r\nxy\r\n0\r\n\r\n")  # 16: fits
            assert read_response(client)[2] == b"POST /c xy"
        with server.connect() as client:
            client.sendall(chunked + b"2;a=" + b"b" * 14 + b"\r\nxy\r\n0\r\n\r\n")  # 17
            assert read_response(client)[0] == 400


def test_at_max_connections_with_none_idle_the_longest_stalled_one_makes_room() -> None:
    """Silent since accepted, a head begun, a body nobody answers yet: the one stalled
    longest (for at least STALL_GRACE) goes first, with 408 if it sent anything; a
    client waiting in the listen queue is then served."""
    with serve(echo_app, max_connections=3, header_timeout=30.0, body_timeout=30.0) as server:
        silent = server.connect()
        time.sleep(0.05)
        partial = server.connect()
        partial.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        time.sleep(0.05)
        body = server.connect()
        body.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab")
        fresh = [server.connect() for _ in range(3)]  # all three wait in the listen queue
        for client in fresh:
            client.sendall(get("/fresh"))
        assert [read_response(client)[2] for client in fresh] == [b"GET /fresh "] * 3
        assert is_closed(silent, timeout=0.5)
        assert partial.recv(4096).startswith(b"HTTP/1.1 408")
        assert body.recv(4096).startswith(b"HTTP/1.1 408")
        for client in (silent, partial, body, *fresh):
            client.close()
        assert server.engine._server.evicted == 3
