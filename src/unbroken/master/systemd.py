"""systemd's two protocols, from the master's side: socket activation and notify.

- Socket activation (sd_listen_fds(3)): when systemd (or `systemd-socket-activate`)
  started us with LISTEN_PID = our pid and LISTEN_FDS = n, fds 3..3+n-1 are
  listening sockets it owns; we adopt them instead of binding --bind.
- Notify (sd_notify(3)): with NOTIFY_SOCKET set we tell the service manager the
  truth: READY=1 only once the first generation passed readiness (gunicorn sends it
  before any worker exists), RELOADING=1 with MONOTONIC_USEC while a reload rolls
  and READY=1 when it ended, STATUS= lines, STOPPING=1 on shutdown. That makes
  `Type=notify-reload` (systemd ≥ 253) and `ExecReload=unbroken reload` both work.
"""

from __future__ import annotations

import logging
import os
import socket
import time

SD_LISTEN_FDS_START = 3

log = logging.getLogger("unbroken.master")


def activated_sockets(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """The sockets systemd passed us, or [] when it passed none (or not to us)."""
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    sockets = [socket.socket(fileno=SD_LISTEN_FDS_START + index) for index in range(count)]
    # Our children must not think the sockets were meant for them.
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return sockets


class Notifier:
    """Sends sd_notify datagrams; does nothing when NOTIFY_SOCKET is unset."""

    def __init__(self, address: str | None = None) -> None:
        path = os.environ.pop("NOTIFY_SOCKET", None) if address is None else address
        self.address = "\0" + path[1:] if path and path.startswith("@") else path
        self.sock: socket.socket | None = None
        if self.address:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.setblocking(False)

    def send(self, *assignments: str) -> None:
        if self.sock is None or self.address is None:
            return
        try:
            self.sock.sendto("\n".join(assignments).encode(), self.address)
        except OSError as error:
            log.warning("cannot notify the service manager: %s", error)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self, status: str) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
