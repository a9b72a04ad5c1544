"""The load generator against a tiny in-process HTTP server on 127.0.0.1 port 0."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from unbroken.loadgen import Load, Sample, check_loopback, summarize


class _Handler(BaseHTTPRequestHandler):
    """Answers 200 with the path in the body.

    /fail answers 500; /close says Connection: close; /drop closes without saying so.
    """

    protocol_version = "HTTP/1.1"  # keep-alive unless told otherwise
    # Buffer the response so headers and body leave in one segment; written apart,
    # Nagle plus the client's delayed ACK cost 40 ms per keep-alive request.
    wbufsize = 64 * 1024
    server: _CountingServer | _UnixServer

    def do_GET(self) -> None:
        self.server.count_request(self.client_address)
        status = 500 if self.path == "/fail" else 200
        body = b"v1 " + self.path.encode() + b" " + b"x" * 200
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if self.path == "/close":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        if self.path == "/drop":
            self.close_connection = True  # close without having said Connection: close

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean


class _CountingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests = 0
        self.peers: set[tuple[str, int]] = set()

    def count_request(self, peer: object) -> None:
        assert isinstance(peer, tuple)
        with self.lock:
            self.requests += 1
            self.peers.add(peer)


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str) -> None:
        super().__init__(path, _Handler)
        self.requests = 0

    def count_request(self, peer: object) -> None:
        self.requests += 1  # one client in the test: no lock needed


@pytest.fixture
def server() -> Iterator[_CountingServer]:
    httpd = _CountingServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _address(httpd: _CountingServer) -> tuple[str, int]:
    host, port = httpd.server_address[:2]
    return (str(host), int(port))


def test_keep_alive_clients_reuse_one_connection_each(server: _CountingServer) -> None:
    with Load(_address(server), clients=2, max_requests=40, duration=2.0) as load:
        samples = load.wait()
    assert len(samples) == 40
    assert server.requests == 40
    assert len(server.peers) == 2
    assert all(s.status == 200 and s.error is None for s in samples)
    assert samples[0].body.startswith(b"v1 / ")
    assert len(samples[0].body) == 100
    assert [s.start for s in samples] == sorted(s.start for s in samples)


def test_connection_per_request_opens_a_connection_per_request(server: _CountingServer) -> None:
    load = Load(_address(server), clients=2, keep_alive=False, max_requests=20, duration=2.0)
    samples = load.start().wait()
    assert len(samples) == 20
    assert server.requests == 20
    assert len(server.peers) == 20


def test_connection_close_reconnects_without_failure(server: _CountingServer) -> None:
    load = Load(_address(server), clients=1, path="/close", max_requests=5, duration=2.0)
    samples = load.start().wait()
    assert [s.error for s in samples] == [None] * 5
    assert len(server.peers) == 5


def test_unannounced_close_fails_the_next_request(server: _CountingServer) -> None:
    load = Load(_address(server), clients=1, path="/drop", max_requests=4, duration=2.0)
    samples = load.start().wait()
    assert [s.error for s in samples] == [None, "reset", None, "reset"]


def test_duration_bounds_the_run(server: _CountingServer) -> None:
    load = Load(_address(server), clients=1, duration=0.3, pause=0.05)
    samples = load.start().wait()
    assert 1 <= len(samples) <= 10


def test_unix_socket_target(tmp_path: Path) -> None:
    path = str(tmp_path / "http.sock")
    httpd = _UnixServer(path)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        samples = Load(path, clients=1, max_requests=5, duration=2.0).start().wait()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
    assert [s.status for s in samples] == [200] * 5
    assert httpd.requests == 5


def test_server_error_counts_as_5xx(server: _CountingServer) -> None:
    samples = Load(_address(server), clients=1, path="/fail", max_requests=3).start().wait()
    assert [(s.status, s.error) for s in samples] == [(500, "5xx")] * 3
    assert summarize(samples).by_kind == {"5xx": 3}


def test_closed_port_counts_as_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Bound then closed and never listened on: connecting is refused.
    samples = Load(("127.0.0.1", port), clients=1, max_requests=3).start().wait()
    assert [(s.status, s.error) for s in samples] == [(None, "refused")] * 3


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.1", "8.8.8.8", "example.com", "::2"])
def test_non_loopback_target_is_refused(host: str) -> None:
    with pytest.raises(ValueError):
        Load((host, 80))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost"])
def test_loopback_targets_are_accepted(host: str) -> None:
    dialled = check_loopback((host, 80))
    assert dialled == ("127.0.0.1" if host == "localhost" else host, 80)


def _sample(start: float, latency: float, error: str | None = None) -> Sample:
    return Sample(start, latency, None if error else 200, error, b"")


def test_summarize_percentiles_on_hand_made_samples() -> None:
    samples = [_sample(float(i), (i + 1) / 100) for i in range(100)]  # 0.01 .. 1.00
    summary = summarize(samples)
    assert summary.requests == 100
    assert summary.failures == 0
    assert summary.p50 == pytest.approx(0.50)
    assert summary.p99 == pytest.approx(0.99)
    assert summary.max == pytest.approx(1.00)


def test_summarize_counts_kinds_and_filters_by_window() -> None:
    samples = [
        _sample(0.0, 0.1),
        _sample(1.0, 3.0, "timeout"),  # starts before the window, in flight during it
        _sample(5.0, 0.2, "reset"),
        _sample(5.5, 0.4, "reset"),
        _sample(9.0, 0.1, "refused"),  # after the window
    ]
    whole = summarize(samples)
    assert whole.failures == 4
    assert whole.by_kind == {"timeout": 1, "reset": 2, "refused": 1}
    windowed = summarize(samples, window=(3.5, 6.0))
    assert windowed.requests == 3
    assert windowed.by_kind == {"timeout": 1, "reset": 2}
    assert windowed.max == pytest.approx(3.0)
    assert windowed.p50 == pytest.approx(0.4)


def test_summarize_of_nothing_is_zero() -> None:
    assert summarize([]) == summarize([], window=(0.0, 1.0))
    assert summarize([]).p99 == 0.0
