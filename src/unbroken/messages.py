"""Messages between a worker and its master: frozen dataclasses, one JSON line each.

The channel is a socketpair created per worker. Besides carrying messages it is
the worker's lifeline: when the master dies, the worker reads EOF and exits, so
no orphan keeps a port or a database connection.

Worker exit codes are part of this contract (`WorkerExit`).
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field


class WorkerExit(enum.IntEnum):
    OK = 0
    BOOT_ERROR = 3  # the worker itself could not start (bad socket, engine error)
    APP_LOAD_ERROR = 4  # importing or creating the app raised
    PROBE_FAILED = 5  # the health probe did not answer 2xx
    ORPHANED = 6  # the master went away


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


WorkerMessage = Ready | BootFailed | Heartbeat | Retire | Cut
_TYPES: dict[str, type[WorkerMessage]] = {
    cls.__name__: cls for cls in (Ready, BootFailed, Heartbeat, Retire, Cut)
}


def encode(message: WorkerMessage) -> bytes:
    payload = {"type": type(message).__name__, **asdict(message)}
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> WorkerMessage:
    """Parse one line; raises ValueError on anything that is not a known message."""
    try:
        payload = json.loads(line)
        cls = _TYPES[payload.pop("type")]
        return cls(**payload)
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as error:
        raise ValueError(f"bad worker message: {line[:200]!r}") from error
