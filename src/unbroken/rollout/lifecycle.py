"""A worker's lifecycle: states, the events that move them, and how an exit is read.

    BOOTING ──ready──> READY <──park/resume──> PARKED
       │                 ▲  │                     │
     probe            passed drain              drain
       ▼                 │  ▼                     ▼
    PROBING ─────────────┘  DRAINING <────────────┘
                                                  any state but KILLING ──kill──> KILLING

Rules:
1. Every move is a (state, event) pair in `TRANSITIONS`; a pair that is not there
   raises and changes nothing (a bug in the master, never a user's input).
2. There is no EXITED state: a reaped worker leaves the pool in whatever state it was
   in, and that state (for KILLING, the state it was killed in) is what says what its
   exit means (`classify_exit`). An exit is not a transition.
3. PROBING: a --cmd program said it is up and the master's HTTP probe of
   --health-path is under way; it still counts as booting for capacity and for
   --boot-timeout. KILLING: the master sent SIGKILL; the worker counts for nothing
   any more, but still holds its listening sockets until it is reaped.
4. A booting worker that is no longer needed is killed, not drained: it holds no
   request. So BOOTING and PROBING never go to DRAINING.
"""

from __future__ import annotations

import enum

from unbroken.errors import UnbrokenError


class WorkerState(enum.Enum):
    BOOTING = "booting"
    PROBING = "probing"
    READY = "ready"
    PARKED = "parked"
    DRAINING = "draining"
    KILLING = "killing"


class WorkerEvent(enum.Enum):
    SAID_READY = "said_ready"  # Ready message (or --ready-after), and no probe to pass
    PROBE_BEGAN = "probe_began"  # Ready from a --cmd program with --health-path
    PROBE_PASSED = "probe_passed"
    PARKED = "parked"  # told to stop accepting through --reload-stable-for
    RESUMED = "resumed"  # a rollback: accepts again
    DRAINED = "drained"  # told to drain (reload, scale down, retire, stop)
    KILLED = "killed"  # sent SIGKILL


S, E = WorkerState, WorkerEvent
TRANSITIONS: dict[WorkerState, dict[WorkerEvent, WorkerState]] = {
    S.BOOTING: {E.SAID_READY: S.READY, E.PROBE_BEGAN: S.PROBING, E.KILLED: S.KILLING},
    S.PROBING: {E.PROBE_PASSED: S.READY, E.KILLED: S.KILLING},
    S.READY: {E.PARKED: S.PARKED, E.DRAINED: S.DRAINING, E.KILLED: S.KILLING},
    S.PARKED: {E.RESUMED: S.READY, E.DRAINED: S.DRAINING, E.KILLED: S.KILLING},
    S.DRAINING: {E.KILLED: S.KILLING},
    S.KILLING: {},
}
BOOTING_STATES = frozenset({S.BOOTING, S.PROBING})  # not yet serving: count as booting
del S, E


class KillReason(enum.Enum):
    """Why the master SIGKILLed a worker: one name that logs, metrics and the restart
    cause read alike (the human sentence, with its numbers, travels beside it)."""

    BOOT_TIMEOUT = "boot_timeout"  # not ready within --boot-timeout
    SILENT = "silent"  # no heartbeat for --timeout
    DRAIN_TIMEOUT = "drain_timeout"  # still draining after --graceful-timeout + margin
    NOT_NEEDED = "not_needed"  # a booting worker of a generation no longer wanted
    PROBE_FAILED = "probe_failed"  # the master's probe of a --cmd worker failed
    STOPPING = "stopping"  # a booting worker when the service stops, or the stop deadline


class ExitCause(enum.Enum):
    """What a worker's exit means, read the same way by the service policy (does it
    abort a reload? back off?), the logs and the restart metric's label."""

    DRAINED = "drained"  # it was told to drain: planned
    STOPPED = "stopped"  # the service is stopping: planned
    NOT_NEEDED = "not_needed"  # killed while booting, no longer wanted: planned
    BOOT_FAILED = "boot_failed"  # never became ready (import error, crash, probe, timeout)
    SILENT = "timeout"  # killed for no heartbeat within --timeout
    KILLED = "killed"  # killed for another reason, or by someone else
    CRASHED = "crashed"  # a serving worker exited on its own

    @property
    def planned(self) -> bool:
        return self in (ExitCause.DRAINED, ExitCause.STOPPED, ExitCause.NOT_NEEDED)


class IllegalTransition(UnbrokenError, RuntimeError):
    pass


def transition(current: WorkerState, event: WorkerEvent) -> WorkerState:
    try:
        return TRANSITIONS[current][event]
    except KeyError:
        raise IllegalTransition(f"{current.value} --{event.value}-->") from None


def classify_exit(state: WorkerState, stopping: bool, killed: KillReason | None,
                  killed_in: WorkerState | None = None) -> ExitCause:
    """`state` is the state the worker exited in; for KILLING, `killed_in` is the state
    the kill found it in (what it was doing is what its death means)."""
    if state is WorkerState.KILLING and killed_in is not None:
        state = killed_in
    if state is WorkerState.DRAINING:
        return ExitCause.DRAINED
    if stopping or killed is KillReason.STOPPING:
        return ExitCause.STOPPED
    if killed is KillReason.NOT_NEEDED:
        return ExitCause.NOT_NEEDED
    if state in BOOTING_STATES:
        return ExitCause.BOOT_FAILED
    if killed is KillReason.SILENT:
        return ExitCause.SILENT
    return ExitCause.CRASHED if killed is None else ExitCause.KILLED
