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


class IllegalTransition(UnbrokenError, RuntimeError):
    pass


def transition(current: WorkerState, new: WorkerState) -> WorkerState:
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"{current.value} -> {new.value}")
    return new
