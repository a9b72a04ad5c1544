"""The HTTP health probe for --cmd workers, run by the master without blocking its loop.

A Python worker probes its own app in-process. A foreign program cannot, and the
shared listening socket cannot address one worker, so each --cmd worker also gets
a *private* listening socket (a unix socket only the master connects to), passed
after the shared ones with the name `probe` in LISTEN_FDNAMES. A program that
serves on every socket it is given (gunicorn does; a Go server loops over its
fds) answers the probe on it. Once the program said READY=1, or --ready-after has
passed, the master sends `GET --health-path` there; 2xx makes the worker ready,
any other status fails its boot. No answer at all runs into --boot-timeout.
"""

from __future__ import annotations

import errno
import selectors
import socket
from collections.abc import Callable

MAX_RESPONSE_HEAD = 16 * 1024


class HTTPProbe:
    def __init__(self, socket_path: str, health_path: str, selector: selectors.BaseSelector,
                 on_done: Callable[[str | None], None]) -> None:
        """`on_done(None)` on a 2xx answer, else `on_done(reason)`; called once."""
        self.selector = selector
        self.on_done = on_done
        self.outbox = (f"GET {health_path} HTTP/1.1\r\nHost: localhost\r\n"
                       "User-Agent: unbroken-health-probe\r\nConnection: close\r\n\r\n").encode()
        self.inbox = b""
        self.health_path = health_path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.finished = False
        code = self.sock.connect_ex(socket_path)
        if code not in (0, errno.EINPROGRESS, errno.EAGAIN):
            self._finish(f"health probe cannot connect: {errno.errorcode.get(code, code)}")
            return
        self.selector.register(self.sock, selectors.EVENT_WRITE, self._on_event)

    def _on_event(self, events: int) -> None:
        try:
            if self.outbox:
                sent = self.sock.send(self.outbox)
                self.outbox = self.outbox[sent:]
                if not self.outbox:
                    self.selector.modify(self.sock, selectors.EVENT_READ, self._on_event)
                return
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._finish(f"health probe GET {self.health_path} failed: {error.strerror}")
            return
        self.inbox += data
        if b"\r\n" in self.inbox or not data or len(self.inbox) > MAX_RESPONSE_HEAD:
            self._finish(self._verdict())

    def _verdict(self) -> str | None:
        status_line = self.inbox.partition(b"\r\n")[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1][:1] == "2":
            return None
        got = status_line or "no answer"
        return f"health probe GET {self.health_path} answered {got!r}, not 2xx"

    def _finish(self, reason: str | None) -> None:
        if self.finished:
            return
        self.finished = True
        self.close()
        self.on_done(reason)

    def close(self) -> None:
        try:
            self.selector.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()
