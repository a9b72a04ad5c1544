"""Workers that die soon after Ready: a crash loop, backed off and then given up.

A worker that dies while booting already backs off (the master's boot failures); one
that passes its probe and dies a second later was respawned at full speed forever (32
times in 30 s, measured in issue 12). Here a death of a ready worker counts when it
came within `STABLE_AFTER` seconds of Ready: each such death doubles the wait before
the next spawn (rollout/backoff.py: 0.5 s up to 30 s), and after `GIVE_UP_AFTER` of
them in a row nothing is respawned until a reload or a scale asks again; whatever
still serves keeps serving. A worker that lived past `STABLE_AFTER` is an ordinary
crash: the loop is over and the replacement starts at once.

Pure: plain data in, a new `CrashLoop` out, so every rule has a unit test.
"""

from __future__ import annotations

from dataclasses import dataclass

from unbroken.rollout.backoff import delay

STABLE_AFTER = 10.0  # seconds of Ready after which a death is no longer "soon"
GIVE_UP_AFTER = 8  # early deaths in a row


@dataclass(frozen=True)
class CrashLoop:
    deaths: int = 0  # early deaths in a row
    retry_at: float = 0.0  # monotonic time before which no worker is spawned
    last_death: float = 0.0

    @property
    def gave_up(self) -> bool:
        return self.deaths >= GIVE_UP_AFTER

    def backoff(self) -> float:
        return delay(self.deaths)

    def allows_spawn(self, now: float) -> bool:
        return not self.gave_up and now >= self.retry_at

    def describe(self, now: float) -> dict[str, float | int | bool]:
        """For `status` and the metrics."""
        return {"deaths": self.deaths, "gave_up": self.gave_up,
                "retry_in": round(max(self.retry_at - now, 0.0), 2)}


def after_death(loop: CrashLoop, ready_for: float, now: float) -> CrashLoop:
    """A ready worker died after `ready_for` seconds of Ready."""
    if ready_for >= STABLE_AFTER:
        return CrashLoop()
    deaths = loop.deaths + 1
    return CrashLoop(deaths, now + CrashLoop(deaths).backoff(), now)


def settle(loop: CrashLoop, now: float, ready_since: float | None) -> CrashLoop:
    """The loop is over once a worker has served for `STABLE_AFTER` seconds with no early
    death in that time (`ready_since`: when the longest-serving ready worker became
    ready, None if none is)."""
    if loop.deaths and ready_since is not None \
            and now - max(ready_since, loop.last_death) >= STABLE_AFTER:
        return CrashLoop()
    return loop
