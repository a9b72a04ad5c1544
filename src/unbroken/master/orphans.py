"""Reaping orphans when the master runs as PID 1 (a container's init).

A process whose parent exits is re-parented to PID 1; if PID 1 never waits for it,
it stays a zombie, and a container that runs `unbroken serve` directly fills up with
them (an app that shells out, a daemonizing subprocess). Our own workers are reaped
by their `Popen` objects, which would lose their exit status to a blind
`waitpid(-1)`: so we look first (WNOWAIT) and reap only what is not ours.
"""

from __future__ import annotations

import os
from collections.abc import Container

MAX_PER_TICK = 64  # bounded: the rest are reaped on the next tick


def reap_orphans(ours: Container[int]) -> int:
    """Reap exited children that are not `ours`; returns how many."""
    reaped = 0
    for _ in range(MAX_PER_TICK):
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return reaped
        if info is None or info.si_pid in ours:
            return reaped  # nothing exited, or a worker of ours: its Popen reaps it
        try:
            os.waitpid(info.si_pid, os.WNOHANG)
        except ChildProcessError:
            pass
        reaped += 1
    return reaped
