"""No request lost behind another (issue 12, item 3): at a draining worker's deadline its
connections between requests go to a serving worker, which reads what their clients
sent (still in the kernel) and answers, instead of the worker's exit resetting them.

Before: with --threads 1 a slow request runs on the worker's loop, the requests its
other kept-alive connections have sent wait unread, and the master's SIGKILL at
--graceful-timeout reset them; with more threads, idle kept-alive connections were
aborted at the deadline, so a client sending just then was reset too."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

from haproxy import free_port
from loadcheck import metric, reload_in_background
from release import point_current, write_release

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"




def _response(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """One whole response (Content-Length framed), or what came before the close."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _kept_alive(service: Any, count: int) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        sock = socket.create_connection(service.address, timeout=10)
        sock.sendall(REQUEST)
        assert _response(sock).startswith(b"HTTP/1.1 200"), "v1 answers"
        clients.append(sock)
    return clients






def test_requests_waiting_behind_a_slow_inline_request_are_answered_by_the_new_worker(
        service_factory: Any, releases: Path) -> None:
    metrics = free_port()
    service = service_factory("--graceful-timeout", "1", "--reload-stable-for", "0",
                              "--metrics-bind", f"127.0.0.1:{metrics}", workers=1)
    service.wait_serving()
    clients = _kept_alive(service, 4)
    slow = socket.create_connection(service.address, timeout=10)
    slow.sendall(b"GET /slow?s=6 HTTP/1.1\r\nHost: t\r\n\r\n")  # holds the only loop
    time.sleep(0.3)
    for client in clients:
        client.sendall(REQUEST)  # sent, and waiting unread in the kernel
    write_release(releases, "v2")
    point_current(releases, "v2")
    thread, replies = reload_in_background(service)
    answers = [_response(client) for client in clients]
    thread.join(30)
    assert replies and replies[0].ok, replies
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 200") and b"\r\n\r\nv2 " in answer, answers
    assert _response(slow, timeout=5) == b""  # the slow one was cut, and said so:
    log = service.output()
    assert "cut 1 request(s) at --graceful-timeout: GET /slow" in log, log[-3000:]
    assert "handed 4 idle connection(s)" in log, log[-3000:]
    assert metric(metrics, "unbroken_connections_handed_over_total") == 4
    for sock in (*clients, slow):
        sock.close()


def test_idle_kept_alive_connections_outlive_a_drain_deadline_shorter_than_keep_alive(
        service_factory: Any, releases: Path) -> None:
    service = service_factory("--graceful-timeout", "1", "--reload-stable-for", "0",
                              "--threads", "4", workers=1)
    old = service.wait_serving()["workers"][0]["pid"]
    clients = _kept_alive(service, 3)
    slow = socket.create_connection(service.address, timeout=10)
    slow.sendall(b"GET /slow?s=4 HTTP/1.1\r\nHost: t\r\n\r\n")  # keeps it draining
    time.sleep(0.3)
    write_release(releases, "v2")
    point_current(releases, "v2")
    thread, replies = reload_in_background(service)
    thread.join(30)
    assert replies and replies[0].ok, replies
    deadline = time.monotonic() + 10
    while old in service.worker_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert old not in service.worker_pids()
    for client in clients:  # the old worker is gone; its connections are not
        client.sendall(REQUEST)
        answer = _response(client)
        assert answer.startswith(b"HTTP/1.1 200") and b"\r\n\r\nv2 " in answer, answer
    for sock in (*clients, slow):
        sock.close()
