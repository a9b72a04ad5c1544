"""The master-worker contract on the wire: messages, exit codes, and both channel ends.

Messages are frozen dataclasses, one JSON line each.

The channel is a socketpair created per worker. Besides carrying messages it is
the worker's lifeline: when the master dies, the worker reads EOF and exits, so
no orphan keeps a port or a database connection.

Worker exit codes are part of this contract (`WorkerExit`): the master names them
in what it logs and replies (master/pool.py `describe_exit`). The master writes to
the same channel to park and resume a worker during a reload's stability window,
to drain it, and to hand it connections a draining sibling could not finish
(`MasterMessage`; descriptors travel as SCM_RIGHTS with the line that counts them).

Both ends of the socketpair are here, so the framing is written once: `MasterEnd`
(non-blocking, read from the master's select loop) and `WorkerEnd` (blocking; the
worker's heartbeat thread and loop both send, and its link thread receives). What the
worker is told at spawn, before the channel exists, is worker/spec.py's `WorkerSpec`.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import NoReturn, TypeVar

log = logging.getLogger("unbroken.messages")

MAX_FDS_PER_LINE = 64  # descriptors one line carries (and one read takes)
MAX_MESSAGE_BUFFER = 1 << 20  # a partial line longer than this is dropped

M = TypeVar("M")


class WorkerExit(enum.IntEnum):
    OK = 0
    BOOT_ERROR = 3  # the worker itself could not start (bad socket, engine error)
    APP_LOAD_ERROR = 4  # importing or creating the app raised
    PROBE_FAILED = 5  # the health probe did not answer 2xx
    ORPHANED = 6  # the master went away

    @property
    def meaning(self) -> str:
        """How the master's logs and replies name it."""
        return EXIT_MEANINGS[self]


EXIT_MEANINGS = {
    WorkerExit.OK: "done",
    WorkerExit.BOOT_ERROR: "the worker could not start",
    WorkerExit.APP_LOAD_ERROR: "the app failed to load",
    WorkerExit.PROBE_FAILED: "its health probe failed",
    WorkerExit.ORPHANED: "it lost its master",
}


@dataclass(frozen=True)
class Ready:
    """The app imported, the probe passed and the worker is accepting."""

    boot_seconds: float


@dataclass(frozen=True)
class BootFailed:
    """The worker will exit without ever serving; `details` is the traceback."""

    reason: str
    details: str


@dataclass(frozen=True)
class Heartbeat:
    requests: int
    in_flight: int
    connections: int
    rss_kib: int
    # Cumulative since the worker started, for the master's metrics (issue 6); defaults
    # keep older workers and --cmd programs (no heartbeats) valid.
    statuses: dict[str, int] = field(default_factory=dict)  # "2xx" -> count
    latency_counts: tuple[int, ...] = ()  # per bucket of observability/latency.BUCKETS
    latency_sum: float = 0.0

    def __post_init__(self) -> None:
        # JSON has no tuples: a decoded list becomes one again, so a round trip is equal.
        object.__setattr__(self, "latency_counts", tuple(self.latency_counts))


@dataclass(frozen=True)
class Retire:
    """The worker asks to be replaced (e.g. it reached --max-requests)."""

    reason: str


@dataclass(frozen=True)
class Cut:
    """Sent once, after the drain and before exit: requests still running at the
    graceful deadline, whose clients got no (or a truncated) response. `samples`
    describes the first few ("GET /slow after 1.0s"); `count` is all of them."""

    count: int
    samples: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", tuple(self.samples))


@dataclass(frozen=True)
class Park:
    """Master to worker: stop accepting, answer kept-alive connections with
    `Connection: close`, but keep running: a new generation is on probation
    (--reload-stable-for) and this worker may be asked to `Resume`."""


@dataclass(frozen=True)
class Resume:
    """Master to worker: the new generation was rolled back; accept again."""


@dataclass(frozen=True)
class HandOver:
    """Worker to master, at its drain deadline: `count` connections between requests
    travel with this line (SCM_RIGHTS), for a serving sibling to carry on."""

    count: int


@dataclass(frozen=True)
class Drain:
    """Master to worker: stop accepting and finish within `timeout` seconds. Sent on
    the channel, not as SIGTERM, because a worker's loop may be busy in an inline
    request for longer than that; the thread reading the channel is not."""

    timeout: float


@dataclass(frozen=True)
class Adopt:
    """Master to worker: serve the `count` connections attached to this line."""

    count: int


WorkerMessage = Ready | BootFailed | Heartbeat | Retire | Cut | HandOver
MasterMessage = Park | Resume | Drain | Adopt
_TYPES: dict[str, type[WorkerMessage]] = {
    cls.__name__: cls for cls in (Ready, BootFailed, Heartbeat, Retire, Cut, HandOver)
}
_MASTER_TYPES: dict[str, type[MasterMessage]] = {
    cls.__name__: cls for cls in (Park, Resume, Drain, Adopt)
}


def encode(message: WorkerMessage | MasterMessage) -> bytes:
    payload = {"type": type(message).__name__, **asdict(message)}
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> WorkerMessage:
    """Parse one line; raises ValueError on anything that is not a known message."""
    return _decode(line, _TYPES)


def decode_from_master(line: bytes) -> MasterMessage:
    return _decode(line, _MASTER_TYPES)


def _decode(line: bytes, types: dict[str, type[M]]) -> M:
    try:
        payload = json.loads(line)
        cls = types[payload.pop("type")]
        return cls(**payload)
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as error:
        raise ValueError(f"bad message: {line[:200]!r}") from error


class MasterEnd:
    """The master's end of a worker's channel: read whenever select says so."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self.inbox = b""
        # Descriptors received (SCM_RIGHTS) and not yet claimed by a `HandOver` line;
        # they arrive with the line's first byte, so before the line is whole.
        self.fds: deque[int] = deque()

    def read(self) -> list[WorkerMessage] | None:
        """Messages received so far; None when the worker closed its end."""
        try:
            data, fds, _flags, _address = socket.recv_fds(self.sock, 65536, MAX_FDS_PER_LINE)
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

    def send(self, message: MasterMessage, fds: list[int] | None = None) -> bool:
        """Best effort: False when the worker is gone (it is reaped as such)."""
        try:
            sent = socket.send_fds(self.sock, [encode(message)], fds or [])
        except OSError:
            return False
        return sent > 0  # a line this short is written whole or not at all

    def close(self) -> None:
        self.sock.close()
        while self.fds:
            os.close(self.fds.popleft())


class WorkerEnd:
    """The worker's end: `lost` is called (and does not return) when the master is gone."""

    def __init__(self, fd: int, lost: Callable[[], NoReturn]) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(True)
        self.lost = lost
        # The heartbeat thread and the loop both send: one whole line at a time.
        self._lock = threading.Lock()
        self._inbox = b""  # a partial line from the master

    def send(self, message: WorkerMessage, fds: list[int] | None = None) -> None:
        try:
            with self._lock:
                if fds:
                    socket.send_fds(self.sock, [encode(message)], fds)
                else:
                    self.sock.sendall(encode(message))
        except OSError:
            self.lost()

    def receive(self) -> tuple[list[MasterMessage], list[int]] | None:
        """(blocking; the link thread) What the master sent, with any descriptors
        attached; None when the master is gone."""
        try:
            data, fds, _flags, _address = socket.recv_fds(self.sock, 65536, MAX_FDS_PER_LINE)
        except OSError:
            return None
        if not data:
            return None
        *lines, self._inbox = (self._inbox + data).split(b"\n")
        messages = []
        for line in lines:
            try:
                messages.append(decode_from_master(line))
            except ValueError as error:
                log.error("worker %d: %s", os.getpid(), error)
        return messages, fds
