"""A booting worker's CPU priority: lowered while it imports, restored when it serves.

Why: a reload boots a whole new generation beside the one serving. Importing a heavy
app is seconds of pure CPU, and on a machine with as many cores as workers the new
interpreters take CPU from the workers answering requests: latency spikes for the
length of the boot (issue 15, item 4). A booting worker therefore runs at a higher
nice value (`--boot-nice`, 10 by default) and goes back to its parent's before it
accepts; the scheduler then gives the serving workers most of the CPU while both want it.

Rules this module keeps:

1. Only boot niced when the nice can be restored. Lowering a nice value (raising the
   priority) needs CAP_SYS_NICE, or an RLIMIT_NICE of at least 20 - target
   (setpriority(2)). Without either, a worker that niced itself would serve at the
   boot nice for good: worse than not trying. So the worker boots at normal priority.
2. The decision is `boot_nice`, a pure function of what the process can do; the
   system calls (`planned_boot_nice`, `nice_started`, `lower_for_boot`,
   `BootPriority.restore`) only carry it out.
3. Restore every thread. On Linux the nice value belongs to each thread, and a thread
   inherits its creator's: threads the app started while importing were born niced.
   So the restore walks /proc/self/task, not only the calling thread.
4. Nice the interpreter's start too. The master raises a new worker's nice as soon as
   `Popen` returns (`nice_started`), so the interpreter's own start (20-80 ms of CPU,
   two of them at once in a reload of two workers, where the bench's spike was) is
   niced too; the worker is told the master's nice (`WorkerSpec.niced_from`) to go
   back to. The master does so only for a worker that keeps its identity: one it drops
   to --user/--group loses the master's CAP_SYS_NICE and judges rule 1 for itself, in
   `python -m unbroken.worker`'s first lines, before its own imports (about 70 ms of
   CPU here), as every worker does when the master's nice did not take.

`--cmd` programs are not niced (they are not our code). Niceness weighs tasks against
each other inside one CPU cgroup; a service whose booting and serving workers sit in
the same cgroup (the usual systemd unit) gets the full effect (docs/reloads.md).
"""

from __future__ import annotations

import logging
import os
import resource
from dataclasses import dataclass

log = logging.getLogger("unbroken.worker")

MAX_NICE = 19  # the lowest priority Linux has
CAP_SYS_NICE = 23  # linux/capability.h


def can_restore(current: int, rlimit_nice: int, capable: bool) -> bool:
    """Whether a process at nice `current` could get back to it after raising it.

    RLIMIT_NICE's soft limit allows nice values down to 20 - limit (setpriority(2);
    RLIM_INFINITY allows all); CAP_SYS_NICE allows any.
    """
    if capable or rlimit_nice == resource.RLIM_INFINITY:
        return True
    return 20 - rlimit_nice <= current


def boot_nice(requested: int, current: int, rlimit_nice: int, capable: bool) -> int | None:
    """The nice value to boot at, or None to boot at the current one.

    `requested` is --boot-nice: how much lower the priority is while booting (0: off);
    the result is capped at MAX_NICE, and None if that is no change or could not be undone.
    """
    if requested <= 0:
        return None
    target = min(current + requested, MAX_NICE)
    if target <= current or not can_restore(current, rlimit_nice, capable):
        return None
    return target


@dataclass(frozen=True)
class BootPriority:
    """A worker that booted niced, and the nice value it goes back to."""

    boot: int
    restore_to: int

    def restore(self) -> None:
        """Every thread back to `restore_to` (rule 3). A thread that ended meanwhile is
        skipped; a refusal (it should not happen: rule 1) is logged, not raised, as the
        worker can still serve, only at a lower priority."""
        try:
            threads = [int(name) for name in os.listdir("/proc/self/task")]
        except OSError:
            threads = [0]  # no /proc: at least the calling thread
        for thread in threads:
            try:
                os.setpriority(os.PRIO_PROCESS, thread, self.restore_to)
            except ProcessLookupError:
                continue
            except OSError as error:
                log.warning("worker %d: cannot restore nice %d after booting at %d: %s",
                            os.getpid(), self.restore_to, self.boot, error)
                return


def _capable_of_sys_nice() -> bool:
    """CAP_SYS_NICE in our effective set (root in a container may not have it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def planned_boot_nice(requested: int) -> BootPriority | None:
    """The boot nice for a process at this one's nice, limits and capabilities (this
    worker, or one this process starts keeping its identity), and what it goes back to."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    target = boot_nice(requested, current, soft, _capable_of_sys_nice())
    return None if target is None else BootPriority(boot=target, restore_to=current)


def nice_started(pid: int, plan: BootPriority) -> None:
    """Raise a just-started child's nice; if that fails it nices itself (rule 4)."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, plan.boot)
    except OSError as error:
        log.debug("cannot nice worker %d for its boot: %s", pid, error)


def lower_for_boot(requested: int, niced_from: int | None = None) -> BootPriority | None:
    """Raise this (still single-threaded) worker's nice for its boot, if it can be undone.

    `niced_from`: the master's nice, when the master set out to nice this worker itself;
    a nice above it is the master's doing (a child starts at its parent's), and the
    worker goes back to the master's nice at Ready.
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if niced_from is not None and current > niced_from:
        return BootPriority(boot=current, restore_to=niced_from)
    plan = planned_boot_nice(requested)
    if plan is None:
        return None
    try:
        os.setpriority(os.PRIO_PROCESS, 0, plan.boot)
    except OSError:
        return None
    return plan
