"""Signals become queued events; handlers do nothing else.

Why: a handler can run between any two bytecodes of the master loop. Handlers
only append to a deque; `signal.set_wakeup_fd` writes a byte to a socket the
loop's selector watches, so a signal also wakes a sleeping `select()`.
"""

from __future__ import annotations

import selectors
import signal
import socket
from collections import deque
from types import FrameType

HANDLED = (
    signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
    signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGCHLD,
)


class SignalQueue:
    def __init__(self, selector: selectors.BaseSelector) -> None:
        self.pending: deque[signal.Signals] = deque()
        self._reader, self._writer = socket.socketpair()
        for end in (self._reader, self._writer):
            end.setblocking(False)
        self._selector = selector

    def install(self) -> None:
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for signum in HANDLED:
            signal.signal(signum, self._enqueue)
        self._selector.register(self._reader, selectors.EVENT_READ, self._drain_wakeups)

    def _enqueue(self, signum: int, frame: FrameType | None) -> None:
        self.pending.append(signal.Signals(signum))

    def _drain_wakeups(self, events: int) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except BlockingIOError:
            pass

    def pop_all(self) -> list[signal.Signals]:
        items = []
        while self.pending:
            items.append(self.pending.popleft())
        return items

    def restore_defaults(self) -> None:
        """Children must not inherit our handlers' meaning; called before exit."""
        signal.set_wakeup_fd(-1)
        for signum in HANDLED:
            signal.signal(signum, signal.SIG_DFL)
