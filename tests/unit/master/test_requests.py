"""Signals, FIFO lines and control requests become the same few request events."""

from __future__ import annotations

import signal

import pytest

from unbroken.master.events import ReloadRequested, ScaleRequested, StopRequested, Trigger
from unbroken.master.fifo import COMMANDS
from unbroken.master.requests import from_control, from_fifo, from_signal


@pytest.mark.parametrize(("signum", "event"), [
    (signal.SIGHUP, ReloadRequested(Trigger.SIGNAL)),
    (signal.SIGTERM, StopRequested(graceful=True)),
    (signal.SIGINT, StopRequested(graceful=False)),
    (signal.SIGQUIT, StopRequested(graceful=False)),
    (signal.SIGTTIN, ScaleRequested(4)),
    (signal.SIGTTOU, ScaleRequested(2)),
    (signal.SIGCHLD, None),  # only wakes the loop, which reaps
    (signal.SIGUSR1, None),  # passed to the workers: reopen logs
])
def test_signals(signum: int, event: object) -> None:
    assert from_signal(signum, desired=3) == event


def test_every_fifo_command_is_a_request_like_its_signal() -> None:
    events = {letter: from_fifo(command, desired=3) for letter, command in COMMANDS.items()}
    assert events == {"r": ReloadRequested(Trigger.FIFO), "q": StopRequested(graceful=True),
                      "Q": StopRequested(graceful=False), "+": ScaleRequested(4),
                      "-": ScaleRequested(2)}


def test_control_requests_carry_who_asked() -> None:
    assert from_control("reload", {}, 7) == ReloadRequested(Trigger.CONTROL, 7)
    assert from_control("scale", {"workers": 5}, 7) == ScaleRequested(5, 7)
    assert from_control("scale", {"workers": "5"}, 7) == ScaleRequested(0, 7)  # refused later
    assert from_control("scale", {"workers": True}, 7) == ScaleRequested(0, 7)
    assert from_control("stop", {"graceful": False}, 7) == StopRequested(graceful=False)
    assert from_control("stop", {}, 7) == StopRequested(graceful=True)
    assert from_control("status", {}, 7) is None and from_control("history", {}, 7) is None
