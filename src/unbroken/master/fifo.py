"""uWSGI's master FIFO, for shell and Fabric scripts: `echo r > FIFO` reloads, no PID needed.

Opened O_RDWR so that the master itself always holds a writer: otherwise every
writer that closes would leave a readable EOF and spin the loop.
"""

from __future__ import annotations

import os
import selectors
import stat
from collections.abc import Callable

from unbroken.errors import ResourceError

COMMANDS = {"r": "reload", "q": "stop", "Q": "quit", "+": "scale_up", "-": "scale_down"}


class MasterFifo:
    def __init__(self, path: str, selector: selectors.BaseSelector,
                 on_command: Callable[[str], None]) -> None:
        self.path = path
        self.selector = selector
        self.on_command = on_command
        self.fd = -1

    def open(self) -> None:
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            info = None
        except OSError as error:
            raise self._cannot(error) from None
        if info is not None and not stat.S_ISFIFO(info.st_mode):
            raise ResourceError(f"--master-fifo {self.path}: exists and is not a FIFO")
        try:
            if info is None:
                os.mkfifo(self.path, 0o600)
            self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        except OSError as error:
            raise self._cannot(error) from None
        self.selector.register(self.fd, selectors.EVENT_READ, self._on_readable)

    def _cannot(self, error: OSError) -> ResourceError:
        return ResourceError(f"cannot create --master-fifo {self.path}: "
                             f"{error.strerror or error}")

    def _on_readable(self, events: int) -> None:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        for letter in data.decode("ascii", "replace"):
            if letter in COMMANDS:
                self.on_command(COMMANDS[letter])

    def close(self) -> None:
        if self.fd >= 0:
            self.selector.unregister(self.fd)
            os.close(self.fd)
            self.fd = -1
            try:
                os.unlink(self.path)
            except OSError:
                pass
