"""Signals, FIFO lines and control requests, turned into the policy's few request events.

Three ways in, one vocabulary out (master/policy.py): whatever asked, a reload is a
`ReloadRequested`, a stop a `StopRequested`, a scale a `ScaleRequested`. Pure: the
master's shell reads the input and hands the event to `decide`.
"""

from __future__ import annotations

import signal
from typing import Any

from unbroken.master.events import (
    Event,
    ReloadRequested,
    Requester,
    ScaleRequested,
    StopRequested,
    Trigger,
)


def from_signal(signum: int, desired: int) -> Event | None:
    """None: not a request of the service (SIGCHLD only wakes the loop, which reaps;
    SIGUSR1 is passed to the workers to reopen their logs)."""
    if signum == signal.SIGHUP:
        return ReloadRequested(Trigger.SIGNAL)
    if signum == signal.SIGTERM:
        return StopRequested(graceful=True)
    if signum in (signal.SIGINT, signal.SIGQUIT):
        return StopRequested(graceful=False)
    if signum == signal.SIGTTIN:
        return ScaleRequested(desired + 1)
    if signum == signal.SIGTTOU:
        return ScaleRequested(desired - 1)
    return None


def from_fifo(command: str, desired: int) -> Event:
    """`command` is one of master/fifo.py's COMMANDS values."""
    if command == "reload":
        return ReloadRequested(Trigger.FIFO)
    if command in ("stop", "quit"):
        return StopRequested(graceful=command == "stop")
    return ScaleRequested(desired + (1 if command == "scale_up" else -1))


def from_control(command: str, arguments: dict[str, Any], requester: Requester) -> Event | None:
    """None for the questions the shell answers itself (`status`, `history`) and for
    `stop`, whose requester is answered once the master has stopped."""
    if command == "reload":
        return ReloadRequested(Trigger.CONTROL, requester)
    if command == "scale":
        count = arguments.get("workers")
        return ScaleRequested(count if isinstance(count, int) and not isinstance(count, bool)
                              else 0, requester)
    if command == "stop":
        return StopRequested(graceful=bool(arguments.get("graceful", True)))
    return None
