"""How the master hears from a worker: two kinds of channel, one interface.

- `JSONLineChannel`: our own Python workers, over a socketpair (see messages.py).
  EOF on it means the worker is going away.
- `NotifyChannel`: any program that speaks systemd's notify protocol (sd_notify):
  a datagram socket whose path the worker gets as NOTIFY_SOCKET. One socket per
  worker, so the sender is known without SCM_CREDENTIALS. `READY=1` becomes
  `Ready`; `STATUS=` is kept for `unbroken status`; other assignments are ignored.
  Protocol: https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from typing import Protocol

from unbroken.messages import Heartbeat, Ready, WorkerMessage, decode

log = logging.getLogger("unbroken.master")

MAX_MESSAGE_BUFFER = 1 << 20
MAX_DATAGRAM = 4096
MAX_FDS = 64  # descriptors per read; a worker sends at most this many per line


class Channel(Protocol):
    sock: socket.socket

    def read(self) -> list[WorkerMessage] | None:
        """Messages received so far; None when the channel closed."""
        ...

    def close(self) -> None: ...


class JSONLineChannel:
    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self.inbox = b""
        # Descriptors received (SCM_RIGHTS) and not yet claimed by a `HandOver` line;
        # they arrive with the line's first byte, so before the line is whole.
        self.fds: deque[int] = deque()

    def read(self) -> list[WorkerMessage] | None:
        try:
            data, fds, _flags, _address = socket.recv_fds(self.sock, 65536, MAX_FDS)
        except BlockingIOError:
            return []
        except OSError:
            data, fds = b"", []
        self.fds.extend(fds)
        if not data:
            return None
        self.inbox += data
        *lines, self.inbox = self.inbox.split(b"\n")
        if len(self.inbox) > MAX_MESSAGE_BUFFER:
            log.error("worker %d sent an over-long message; ignoring it", self.pid)
            self.inbox = b""
        messages = []
        for line in lines:
            try:
                messages.append(decode(line))
            except ValueError as error:
                log.error("worker %d: %s", self.pid, error)
        return messages

    def take_fds(self, count: int) -> list[int]:
        return [self.fds.popleft() for _ in range(min(count, len(self.fds)))]

    def close(self) -> None:
        self.sock.close()
        while self.fds:
            os.close(self.fds.popleft())


class NotifyChannel:
    def __init__(self, path: str, spawned_at: float) -> None:
        self.path = path
        self.spawned_at = spawned_at
        self.status = ""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        old_umask = os.umask(0o077)
        try:
            if os.path.exists(path):
                os.unlink(path)
            self.sock.bind(path)
        except OSError:
            self.sock.close()
            raise
        finally:
            os.umask(old_umask)
        self.sock.setblocking(False)

    def read(self) -> list[WorkerMessage] | None:
        messages: list[WorkerMessage] = []
        while True:
            try:
                datagram = self.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return messages
            except OSError:
                return messages
            messages.extend(self._parse(datagram))

    def _parse(self, datagram: bytes) -> list[WorkerMessage]:
        messages: list[WorkerMessage] = []
        for line in datagram.decode("utf-8", "replace").splitlines():
            key, _, value = line.partition("=")
            if key == "READY" and value == "1":
                messages.append(Ready(time.monotonic() - self.spawned_at))
            elif key == "STATUS":
                self.status = value[:200]
            elif key == "WATCHDOG" and value == "1":
                messages.append(Heartbeat(0, 0, 0, 0))
        return messages

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
