"""Per-worker response counters the engines fill and the heartbeat carries: pure.

Counts are cumulative for the life of a worker; the master adds the last counts of
workers that exited, so the service-wide counters it exposes never go down.
Buckets are Prometheus' defaults: upper bounds in seconds, one extra slot for +Inf.
"""

from __future__ import annotations

import bisect
from typing import Any

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
NO_RESPONSE = "none"  # the exchange ended (client gone, app failed) before a status


def status_class(status: int | None) -> str:
    return f"{status // 100}xx" if status is not None and 100 <= status < 600 else NO_RESPONSE


# Every response is counted: look the class up instead of formatting it each time.
_CLASSES: dict[int | None, str] = {code: status_class(code) for code in range(100, 600)}
_CLASSES[None] = NO_RESPONSE


class ResponseStats:
    """Written only by the engine's loop thread, read by the heartbeat on that loop."""

    def __init__(self) -> None:
        self.statuses: dict[str, int] = {}
        self.latency_counts = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0

    def observe(self, status: int | None, seconds: float) -> None:
        key = _CLASSES.get(status) or status_class(status)
        self.statuses[key] = self.statuses.get(key, 0) + 1
        self.latency_counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def heartbeat_fields(self) -> dict[str, Any]:
        return {"statuses": dict(self.statuses), "latency_counts": tuple(self.latency_counts),
                "latency_sum": round(self.latency_sum, 6)}
