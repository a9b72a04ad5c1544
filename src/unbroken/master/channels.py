"""How the master hears from a worker: two kinds of channel, one interface.

- `MasterEnd` (messages.py, where its other end is too): our own Python workers, over
  a socketpair. EOF on it means the worker is going away.
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
from typing import Protocol

from unbroken.messages import Heartbeat, Ready, WorkerMessage

log = logging.getLogger("unbroken.master")

MAX_DATAGRAM = 4096


class Channel(Protocol):
    sock: socket.socket

    def read(self) -> list[WorkerMessage] | None:
        """Messages received so far; None when the channel closed."""
        ...

    def close(self) -> None: ...


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
