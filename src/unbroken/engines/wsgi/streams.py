"""The blocking objects a WSGI application holds, fed from the event loop.

Rule: the loop thread calls the `*_from_loop` / feed methods, the application's
thread calls the file-like methods; a lock (and a `threading.Condition` on it, once
a reader has to wait) is the only bridge.
The loop never blocks; the application thread blocks only in here.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any, Protocol

# Above this much unread body the loop has paused reading; below half of it we
# ask the loop to resume (hysteresis, so we do not bounce on every read).
BODY_HIGH_WATER = 256 * 1024
# Bytes handed to the loop but not yet written to the transport, per request.
WRITE_HIGH_WATER = 1024 * 1024


class BodyReader(Protocol):
    """Who hears, on the app's thread, what the app's reading asks of the loop."""

    def body_read_asked(self) -> None:
        """The app reads for the first time (say `100 Continue` if the client waits)."""

    def body_drained(self) -> None:
        """The app read the buffer below half the high water: resume reading."""


class RequestBody:
    """`wsgi.input`: a stream that blocks the app thread until body bytes arrive.

    The bytes are kept as the transport gave them (a deque of chunks, an offset into
    the first), so a body is copied once, when the app reads it, and a body read whole
    in one chunk is not copied at all. The `Condition` is made by the first read that
    has to wait: a request served inline, its body all here, never makes one.
    """

    def __init__(self, reader: BodyReader) -> None:
        self._lock = threading.Lock()
        self._condition: threading.Condition | None = None  # on _lock, made to wait
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # bytes of _chunks[0] already read
        self._size = 0  # bytes unread
        self._eof = False
        self._error: Exception | None = None
        self._reader = reader
        self._read_asked = False
        self._loop_paused = False

    # ------------------------------------------------------------ loop thread

    def feed(self, data: bytes) -> int:
        with self._lock:
            self._chunks.append(data)
            self._size = buffered = self._size + len(data)
            if buffered > BODY_HIGH_WATER:
                self._loop_paused = True
            if self._condition is not None:
                self._condition.notify_all()
            return buffered

    def feed_eof(self) -> None:
        with self._lock:
            self._eof = True
            if self._condition is not None:
                self._condition.notify_all()

    def fail(self, error: Exception) -> None:
        with self._lock:
            if not self._eof:
                self._error = error
            if self._condition is not None:
                self._condition.notify_all()

    # ----------------------------------------------------- application thread

    def read(self, size: int | None = -1) -> bytes:
        with self._lock:
            if size is None or size < 0:
                self._wait(lambda: False)
                return self._take(self._size)
            self._wait(lambda: self._size >= size)
            return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        limit = None if size is None or size < 0 else size
        with self._lock:
            self._wait(lambda: self._line_ready(limit))
            end = self._line_length()
            length = self._size if end == -1 else end
            return self._take(length if limit is None else min(length, limit))

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def _line_ready(self, limit: int | None) -> bool:
        if self._line_length() != -1:
            return True
        return limit is not None and self._size >= limit

    def _line_length(self) -> int:
        """Unread bytes up to and including the first LF, or -1 if none is here yet."""
        seen = 0
        start = self._offset
        for chunk in self._chunks:
            at = chunk.find(b"\n", start)
            if at != -1:
                return seen + at - start + 1
            seen += len(chunk) - start
            start = 0
        return -1

    def _wait(self, ready: Callable[[], bool]) -> None:
        """Block until `ready()`, end of body, or failure (called holding the lock)."""
        if not self._read_asked:
            self._read_asked = True
            self._reader.body_read_asked()
        while not ready() and not self._eof:
            if self._error is not None:
                raise OSError(f"request body unavailable: {self._error}") from self._error
            if self._loop_paused:
                # The app asks for more than the high water holds (`read()` of a large
                # body): the pause bounds what we buffer unasked, not what it asked.
                self._loop_paused = False
                self._reader.body_drained()
            if self._condition is None:
                self._condition = threading.Condition(self._lock)
            self._condition.wait()

    def _take(self, size: int) -> bytes:
        """The next `size` unread bytes (no more than are here), in one copy at most."""
        size = min(size, self._size)
        chunks = self._chunks
        taken: list[bytes] = []
        need = size
        while need:
            chunk, offset = chunks[0], self._offset
            left = len(chunk) - offset
            if left <= need:
                taken.append(chunk if not offset else chunk[offset:])
                chunks.popleft()
                self._offset = 0
                need -= left
            else:
                taken.append(chunk[offset:offset + need])
                self._offset = offset + need
                need = 0
        self._size -= size
        if self._loop_paused and self._size < BODY_HIGH_WATER // 2:
            self._loop_paused = False
            self._reader.body_drained()
        return taken[0] if len(taken) == 1 else b"".join(taken)


class EmptyBody:
    """`wsgi.input` of a request without a body: nothing to wait for, nothing to lock."""

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    # The loop's side of RequestBody: nothing arrives for a request without a body.
    def feed(self, data: bytes) -> int:
        return 0

    def feed_eof(self) -> None:
        pass

    def fail(self, error: Exception) -> None:
        pass


NO_BODY = EmptyBody()  # stateless, so one serves every request


class WriteGate:
    """Holds the app thread back while the loop cannot take more response bytes."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._outstanding = 0
        self._paused = False
        self.lost = False

    def reserve(self, size: int) -> None:
        """(app thread) Wait for room, then count `size` bytes as in transit."""
        with self._condition:
            while (self._paused or self._outstanding > WRITE_HIGH_WATER) and not self.lost:
                self._condition.wait()
            self._outstanding += size

    def release(self, size: int) -> None:
        with self._condition:
            self._outstanding -= size
            self._condition.notify_all()

    def set_paused(self, paused: bool) -> None:
        with self._condition:
            self._paused = paused
            self._condition.notify_all()

    def connection_lost(self) -> None:
        with self._condition:
            self.lost = True
            self._condition.notify_all()


class FileWrapper:
    """`wsgi.file_wrapper`: lets the server recognise a file and sendfile(2) it."""

    def __init__(self, filelike: IO[bytes] | Any, block_size: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while chunk := read(self.block_size):
            yield chunk

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()
