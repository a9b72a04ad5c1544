"""Requests cut at the graceful deadline: how they are told, and which reload owns them.

A draining worker waits `--graceful-timeout` for its requests; whatever still runs
then is cut (the connection is aborted, the client gets no or a truncated
response). That must never be silent (issue 12, item 4), so the cut is said in
three places, all from the plain data below:

- the worker's log, one line per request (`cut_log_lines`);
- the master, in one `Cut` message sent before the worker exits (`cut_report`),
  which counts it in the metrics and on the reload's history entry;
- the reply to `unbroken reload`, when the cut is known before it (`serving_message`).

Which history entry a cut belongs to is `cut_owner`'s decision. The entry of a
reload is written when the new generation serves, usually before the old workers
have finished draining (they start draining in the same tick), so the master
keeps that entry by the old generation's number and amends it as each old worker
exits (`ReloadEntry.after_worker_drained`): its `draining` count says how many old
workers were still to report, so `draining == 0` means `cut` is final.

Pure: no I/O, no clocks.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from unbroken.messages import Cut

MAX_SAMPLES = 5  # descriptions carried to the master; the count is always exact
MAX_LOG_LINES = 20  # a drain that cuts thousands says so in one more line, not thousands


@dataclass(frozen=True)
class CutRequest:
    """One request still running at the deadline, as the connection core saw it."""

    method: str
    path: str  # without the query string: it may carry secrets, and logs outlive requests
    age: float  # seconds since its head arrived

    def describe(self) -> str:
        return f"{self.method} {self.path} after {self.age:.1f}s"


def cut_log_lines(requests: Sequence[CutRequest], pid: int, worker: int,
                  generation: int) -> list[str]:
    """The worker's log lines for a cut: one per request, up to MAX_LOG_LINES."""
    who = f"worker {pid} (id {worker}, generation {generation})"
    lines = [f"{who} cut {request.describe()} at --graceful-timeout: "
             "the client got no complete response"
             for request in requests[:MAX_LOG_LINES]]
    if len(requests) > MAX_LOG_LINES:
        lines.append(f"{who} cut {len(requests) - MAX_LOG_LINES} more request(s) "
                     "at --graceful-timeout")
    return lines


def cut_report(requests: Sequence[CutRequest]) -> Cut | None:
    """The message for the master, or None when nothing was cut (the usual drain)."""
    if not requests:
        return None
    return Cut(len(requests), tuple(request.describe() for request in requests[:MAX_SAMPLES]))


class CutOwner(enum.Enum):
    REPLACING_RELOAD = "replacing reload"  # the written entry of the reload that replaced it
    ROLLOUT = "rollout"  # the reload in progress: its entry is not written yet
    NONE = "none"  # a drain no reload caused (scale down, --max-requests, stop)


def cut_owner(generation: int, replaced: Collection[int], rolling_from: int | None) -> CutOwner:
    """Whose history entry the cut requests of an exited worker of `generation` go to.

    `replaced`: generations whose reload entry is written and still waits for their
    workers to drain; `rolling_from`: the serving generation while a reload is in
    progress (None otherwise), whose workers a surge rollout may already drain.
    """
    if generation in replaced:
        return CutOwner.REPLACING_RELOAD
    if rolling_from is not None and generation == rolling_from:
        return CutOwner.ROLLOUT
    return CutOwner.NONE


def serving_message(generation: int, cut: int) -> str:
    """The final word of a successful reload: the new code serves, and what it cost."""
    if not cut:
        return f"generation {generation} serving"
    return (f"generation {generation} serving; {cut} request(s) of the old generation "
            "cut at --graceful-timeout")
