"""What the master's shell tells the service policy, and what the policy tells it back.

Events are facts in the past tense: the shell saw them (a signal became a
`ReloadRequested`, a worker exited, time passed). Actions are imperatives: the shell
performs them without judging. Both are plain, frozen data, so the policy
(master/policy.py) is tested by building them by hand.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from unbroken.rollout.lifecycle import ExitCause

Requester = int  # the shell's handle on whoever waits for an answer (a control connection)


class Trigger(enum.Enum):
    """What asked for a reload: shown by `history` and `status`."""

    SIGNAL = "signal"  # SIGHUP
    FIFO = "fifo"  # "r" on --master-fifo
    TOUCH = "touch"  # --reload-on-touch
    CONTROL = "control"  # `unbroken reload` / the control socket


@dataclass(frozen=True)
class Timings:
    """The settings the policy reads; a reload's new configuration may change them."""

    graceful_timeout: float = 30.0
    drain_delay: float = 0.0
    stable_for: float = 0.0


# -- events: what the shell saw --------------------------------------------------------

@dataclass(frozen=True)
class MasterStarted:
    pass


@dataclass(frozen=True)
class ReloadRequested:
    trigger: Trigger
    requester: Requester | None = None


@dataclass(frozen=True)
class ConfigReread:
    problem: str | None  # why the configuration as it is now cannot be applied
    workers: int = 0
    timings: Timings = field(default_factory=Timings)


@dataclass(frozen=True)
class StopRequested:
    graceful: bool


@dataclass(frozen=True)
class ScaleRequested:
    workers: int
    requester: Requester | None = None


@dataclass(frozen=True)
class WorkerReady:
    generation: int
    ready: int  # workers of that generation ready now, this one included


@dataclass(frozen=True)
class SpawnFailed:
    generation: int
    reason: str


@dataclass(frozen=True)
class WorkerExited:
    pid: int
    generation: int
    cause: ExitCause
    how: str  # the kill's sentence, or how it exited ("exit code 1")
    ready_for: float | None = None  # seconds it had been ready, if it ever was
    boot_reason: str | None = None  # what it said in BootFailed
    details: str = ""  # its traceback or its last lines of stderr


@dataclass(frozen=True)
class RequestsCut:
    count: int  # by old workers of the reload in progress


@dataclass(frozen=True)
class GenerationWhole:
    generation: int  # every target worker is ready: its window begins (planner BeginWatch)


@dataclass(frozen=True)
class GenerationRolledOut:
    generation: int  # the planner completed the rollout
    draining: int  # old workers still draining


@dataclass(frozen=True)
class Ticked:
    ready_since: float | None  # when the longest-serving ready worker of `serving` became so


Event = (MasterStarted | ReloadRequested | ConfigReread | StopRequested | ScaleRequested
         | WorkerReady | SpawnFailed | WorkerExited | RequestsCut | GenerationWhole
         | GenerationRolledOut | Ticked)


# -- actions: what the shell does --------------------------------------------------------

@dataclass(frozen=True)
class Log:
    level: int
    text: str


@dataclass(frozen=True)
class Answer:
    """The final reply to each requester; the shell forgets them after it."""

    to: tuple[Requester, ...]
    ok: bool
    message: str
    details: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    to: tuple[Requester, ...]
    message: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Systemd:
    kind: Literal["ready", "reloading", "stopping", "status"]
    text: str = ""


@dataclass(frozen=True)
class RereadConfig:
    pass


@dataclass(frozen=True)
class StartGeneration:
    number: int
    workers: int
    to: tuple[Requester, ...]  # told where it boots from


@dataclass(frozen=True)
class RestoreListeners:
    generation: int  # an abort: bind what this generation listens on again


@dataclass(frozen=True)
class RecordReload:
    outcome: Literal["ok", "aborted", "interrupted"]
    before: int | None
    after: int | None
    generation: int
    started_at: float
    seconds: float
    trigger: Trigger | None
    reason: str = ""
    cut: int = 0
    draining: int = 0


@dataclass(frozen=True)
class ForgetGenerations:
    pass


@dataclass(frozen=True)
class StopWorkers:
    graceful: bool
    timeout: float


@dataclass(frozen=True)
class KillAll:
    pass


@dataclass(frozen=True)
class CrashLoopChanged:
    deaths: int
    gave_up: bool


Action = (Log | Answer | Progress | Systemd | RereadConfig | StartGeneration | RestoreListeners
          | RecordReload | ForgetGenerations | StopWorkers | KillAll | CrashLoopChanged)
