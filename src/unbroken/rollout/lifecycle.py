"""A worker's lifecycle as an enum plus a transition table.

    BOOTING ──> READY <──> PARKED
       │          │          │
       └────────> DRAINING <─┘ ──> EXITED      (any state but EXITED may exit)

PARKED: an old worker that stopped accepting while a new generation proves itself
(--reload-stable-for); it resumes (back to READY) if the reload is rolled back, and
drains if it is not. An illegal transition raises and changes nothing.
"""

from __future__ import annotations

import enum

from unbroken.errors import UnbrokenError


class WorkerState(enum.Enum):
    BOOTING = "booting"
    READY = "ready"
    PARKED = "parked"
    DRAINING = "draining"
    EXITED = "exited"


TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    WorkerState.BOOTING: frozenset({WorkerState.READY, WorkerState.DRAINING, WorkerState.EXITED}),
    WorkerState.READY: frozenset({WorkerState.PARKED, WorkerState.DRAINING, WorkerState.EXITED}),
    WorkerState.PARKED: frozenset({WorkerState.READY, WorkerState.DRAINING, WorkerState.EXITED}),
    WorkerState.DRAINING: frozenset({WorkerState.EXITED}),
    WorkerState.EXITED: frozenset(),
}


class KillReason(enum.Enum):
    """Why the master SIGKILLed a worker: one name that logs, metrics and the restart
    cause read alike (the human sentence, with its numbers, travels beside it)."""

    BOOT_TIMEOUT = "boot_timeout"  # not ready within --boot-timeout
    SILENT = "silent"  # no heartbeat for --timeout
    DRAIN_TIMEOUT = "drain_timeout"  # still draining after --graceful-timeout + margin
    NOT_NEEDED = "not_needed"  # a booting worker of a generation no longer wanted
    PROBE_FAILED = "probe_failed"  # the master's probe of a --cmd worker failed


class IllegalTransition(UnbrokenError, RuntimeError):
    pass


def transition(current: WorkerState, new: WorkerState) -> WorkerState:
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"{current.value} -> {new.value}")
    return new
