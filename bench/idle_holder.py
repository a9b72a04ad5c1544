"""Hold COUNT idle kept-alive connections to 127.0.0.1:PORT, for bench/cost_curve.py.

Run: python bench/idle_holder.py PORT COUNT SOURCE   (SOURCE: a 127.0.0.0/8 address)

Each connection sends one `GET /` and reads its whole answer, so the server holds it as
a kept-alive connection that has served a request, then stays silent. A process of its
own: its CPU is not the bench's, and its file descriptors are not either (one process
may hold RLIMIT_NOFILE of them; cost_curve starts as many holders as it needs). Each
holder dials from its own loopback source address, so the ephemeral ports of one
source (about 28,000) are not shared by every holder.

Protocol on stdout/stdin: once every connection is open or failed (bounded by
OPEN_TIMEOUT) it prints `opened N failed M`; each `check` line read from stdin is
answered `open K` (connections the server has not closed); at EOF on stdin it closes
them all and exits.
"""

from __future__ import annotations

import ipaddress
import resource
import select
import selectors
import socket
import sys
import time

WINDOW = 256  # connections being opened at once: well inside every listen backlog
OPEN_TIMEOUT = 60.0
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h: pick the port at connect, per destination


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def answered(buffer: bytes) -> bool:
    """A whole response with Content-Length has arrived (the hello app sends one)."""
    head, separator, body = buffer.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def dial(port: int, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    sock.bind((source, 0))
    sock.connect_ex(("127.0.0.1", port))
    return sock


def open_all(port: int, count: int, source: str) -> tuple[list[socket.socket], int]:
    """(connections open and idle, how many failed), within OPEN_TIMEOUT."""
    selector = selectors.DefaultSelector()
    buffers: dict[socket.socket, bytes] = {}
    held: list[socket.socket] = []
    failed = started = 0
    deadline = time.monotonic() + OPEN_TIMEOUT

    def drop(sock: socket.socket) -> None:
        nonlocal failed
        selector.unregister(sock)
        buffers.pop(sock, None)
        sock.close()
        failed += 1

    while (started < count or buffers) and time.monotonic() < deadline:
        while started < count and len(buffers) < WINDOW:
            try:
                sock = dial(port, source)
            except OSError:
                failed += 1
                started += 1
                continue
            started += 1
            buffers[sock] = b""
            selector.register(sock, selectors.EVENT_WRITE)
        for key, events in selector.select(timeout=0.5):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if events & selectors.EVENT_WRITE:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    drop(sock)
                    continue
                try:
                    sock.send(REQUEST)
                except OSError:
                    drop(sock)
                    continue
                selector.modify(sock, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                drop(sock)
                continue
            buffers[sock] += data
            if answered(buffers[sock]):
                selector.unregister(sock)
                del buffers[sock]
                held.append(sock)
    for sock in list(buffers):
        drop(sock)  # not answered in time
    return held, failed + (count - started)


def still_open(held: list[socket.socket]) -> int:
    """Connections the server has not closed: no hang-up, nothing readable (it sent none)."""
    poller = select.poll()
    for sock in held:
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    return len(held) - len(poller.poll(0))


def main() -> int:
    port, count, source = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if not ipaddress.ip_address(source).is_loopback:
        print(f"refusing non-loopback source {source}", file=sys.stderr)
        return 2
    raise_file_limit()
    held, failed = open_all(port, count, source)
    print(f"opened {len(held)} failed {failed}", flush=True)
    for line in sys.stdin:
        if line.strip() == "check":
            print(f"open {still_open(held)}", flush=True)
    for sock in held:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
