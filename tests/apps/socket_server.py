"""A program that is not an unbroken worker: it speaks only systemd's two protocols.

It takes its listening socket from fd 3 (LISTEN_FDS/LISTEN_PID), says READY=1 on
NOTIFY_SOCKET, and on SIGTERM stops accepting, answers every further request on a
kept-alive connection with `Connection: close`, and exits when its connections are
done. Usage: socket_server.py VERSION [--boot SECONDS] [--no-notify] [--fail]
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = sys.argv[1]
BOOT = float(sys.argv[sys.argv.index("--boot") + 1]) if "--boot" in sys.argv else 0.0
draining = threading.Event()
active = 0
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        global active
        with lock:
            active += 1
        super().setup()

    def finish(self) -> None:
        global active
        super().finish()
        with lock:
            active -= 1

    def do_GET(self) -> None:
        body = f"{VERSION} {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if draining.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def notify(state: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if path and "--no-notify" not in sys.argv:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), path)


def main() -> None:
    assert os.environ["LISTEN_PID"] == str(os.getpid()), "LISTEN_PID must be our own pid"
    assert os.environ["LISTEN_FDS"] == "1"
    time.sleep(BOOT)
    if "--fail" in sys.argv:
        sys.exit("this build exits at start")
    listener = socket.socket(fileno=3)
    listener.setblocking(False)  # a sibling may win the accept race: never block in accept
    server = ThreadingHTTPServer(listener.getsockname(), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.daemon_threads = True
    # The handler only flips a flag: no locks in a signal handler, and no
    # serve_forever()/shutdown() pair, whose shutdown can be lost if it comes first.
    signal.signal(signal.SIGTERM, lambda *_: draining.set())
    server.timeout = 0.05
    notify("READY=1\nSTATUS=serving " + VERSION)
    while not draining.is_set():
        server.handle_request()  # stops accepting as soon as we are told to drain
    deadline = time.monotonic() + 10
    while active and time.monotonic() < deadline:
        time.sleep(0.02)


if __name__ == "__main__":
    main()
