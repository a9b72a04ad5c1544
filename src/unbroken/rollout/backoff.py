"""Failures in a row, each doubling the wait before the next try, then giving up.

One rule for the two places that retry a generation's workers: boots that fail (the
master's boot back-off: give up after 5) and ready workers that die soon after Ready
(rollout/crashloop.py: give up after 8). 0.5 s, doubling, capped at 30 s.

Pure: plain data in, a new `Backoff` out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

FIRST_DELAY = 0.5
MAX_DELAY = 30.0


def delay(failures: int) -> float:
    """The wait after `failures` failures in a row."""
    return 0.0 if failures <= 0 else min(FIRST_DELAY * 2 ** (failures - 1), MAX_DELAY)


@dataclass(frozen=True)
class Backoff:
    limit: int  # failures in a row after which no more tries (until `reset`)
    failures: int = 0
    retry_at: float = 0.0  # monotonic time before which no try is made

    @property
    def gave_up(self) -> bool:
        return self.failures >= self.limit

    @property
    def wait(self) -> float:
        return delay(self.failures)

    def failed(self, now: float) -> Backoff:
        failures = self.failures + 1
        return replace(self, failures=failures, retry_at=now + delay(failures))

    def allows(self, now: float) -> bool:
        return not self.gave_up and now >= self.retry_at

    def reset(self) -> Backoff:
        return Backoff(self.limit)
