"""A worker's stderr, passed through the master: whole lines, and the last few kept.

Why through the master: when a new worker dies soon after Ready, whoever asked for
the reload gets its last log lines with the refusal (issue 12), and those lines are
often a traceback printed by a thread, a C library or faulthandler, which no message
on the channel would carry. So each worker's fd 2 is a pipe the master reads; the
lines go on to the master's own stderr as they arrive (whole lines only, so two
workers' output no longer interleaves mid-line) and the last `KEEP_LINES` are kept.

stdout is not tapped: that is where `--access-logfile -` writes, and the master
must not relay every request.

A tap lives until its pipe's EOF, not until its worker is reaped: a process the
worker started may still hold the pipe, and closing it under that process would
turn its next write into EPIPE (or SIGPIPE, for a program that does not ignore it).
"""

from __future__ import annotations

import os
import select
import selectors
from collections import deque

KEEP_LINES = 20
READ_SIZE = 65536
# A "line" longer than this is passed on in pieces rather than held.
MAX_PARTIAL = 65536


class OutputTap:
    """The read end of one worker's stderr pipe. `write_fd` goes to the child."""

    def __init__(self, selector: selectors.BaseSelector, forward_to: int = 2) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.read_fd, False)
        self._selector = selector
        self._forward_to = forward_to
        self._partial = b""
        self.last = deque[str](maxlen=KEEP_LINES)
        selector.register(self.read_fd, selectors.EVENT_READ, lambda _events: self.read())

    def child_started(self) -> None:
        """The child has its copy of the write end: drop ours, so EOF can come."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def read(self) -> None:
        """Read what is there now (the pipe is non-blocking); close at EOF."""
        while self.read_fd >= 0:
            try:
                data = os.read(self.read_fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._flush(self._partial)
                self._partial = b""
                self.close()
                return
            self._take(data)

    def last_lines(self) -> str:
        return "".join(f"{line}\n" for line in self.last)

    def close(self) -> None:
        self.child_started()
        if self.read_fd >= 0:
            self._selector.unregister(self.read_fd)
            os.close(self.read_fd)
            self.read_fd = -1

    def _take(self, data: bytes) -> None:
        whole, newline, rest = (self._partial + data).rpartition(b"\n")
        if newline:
            self._flush(whole + newline)
            self._partial = rest
        else:
            self._partial = rest
        if len(self._partial) > MAX_PARTIAL:
            self._flush(self._partial)
            self._partial = b""

    def _flush(self, data: bytes) -> None:
        if not data:
            return
        self.last.extend(data.decode("utf-8", "replace").splitlines())
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._forward_to, view):]
            except BlockingIOError:
                select.select([], [self._forward_to], [], 1.0)  # our stderr is non-blocking
            except OSError:
                return  # nowhere to write: keep only the tail
