"""Load on a fleet's balancer for the whole of a deploy, and what the clients saw.

The clients are `unbroken.loadgen.Load` (no retries, loopback only, every request
bounded by its own timeout, keep-alive clients reconnect after a failure), run twice
over: half the threads hold keep-alive connections, half open one connection per
request, because a deploy can break either kind alone. This module only adds the
fleet view: a deploy is long and unattended, so both loads are capped in time and
requests, and the result says how many requests failed, how, and which release
answered.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

from unbroken.loadgen import Load, Sample, summarize

__all__ = ["FleetLoad", "FleetResult", "tally"]

ANSWER_CHARS = 60


@dataclass
class FleetResult:
    """What the clients saw. A request failed unless it got a 2xx answer.

    failures: "HTTP <status>" for a non-2xx answer, else loadgen's error kind
    (refused, reset, timeout, protocol, other). answers: the first 60 characters of
    each 2xx body (the release that answered) and how often it came. p99 and
    max_latency (seconds) include failed requests: a request HAProxy held through
    its retries is slow, not failed, and a deploy can cost that too.
    """

    total: int = 0
    ok: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    p99: float = 0.0
    max_latency: float = 0.0


def tally(samples: list[Sample], seconds: float = 0.0) -> FleetResult:
    failures: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    for sample in samples:
        if sample.error is None and sample.status is not None and 200 <= sample.status < 300:
            answers[sample.body.decode(errors="replace").strip()[:ANSWER_CHARS]] += 1
        elif sample.status is not None and not 200 <= sample.status < 300:
            failures[f"HTTP {sample.status}"] += 1
        else:
            failures[sample.error or "other"] += 1
    ok = sum(answers.values())
    latency = summarize(samples)
    return FleetResult(total=len(samples), ok=ok, failed=len(samples) - ok,
                       failures=dict(failures.most_common()),
                       answers=dict(answers.most_common()), seconds=seconds,
                       p99=latency.p99, max_latency=latency.max)


class FleetLoad:
    """`clients` threads on http://127.0.0.1:<port><path> until stop() or a cap.

    max_seconds and max_requests bound a deploy that never ends; pause keeps the
    clients from starving the servers of the two CPUs they share with them.
    """

    def __init__(self, port: int, *, host: str = "127.0.0.1", clients: int = 8,
                 path: str = "/", max_seconds: float = 120.0, max_requests: int = 200_000,
                 timeout: float = 5.0, pause: float = 0.01) -> None:
        if clients < 2:
            raise ValueError("clients must be >= 2: half keep-alive, half not")
        def load(count: int, keep_alive: bool, budget: int) -> Load:
            return Load((host, port), clients=count, keep_alive=keep_alive, path=path,
                        duration=max_seconds, max_requests=max(1, budget), timeout=timeout,
                        pause=pause)

        half = clients // 2
        self.loads = (load(half, True, max_requests // 2),
                      load(clients - half, False, max_requests - max_requests // 2))
        self.result: FleetResult | None = None  # set by stop(), for `with` users
        self._started: float | None = None

    def start(self) -> FleetLoad:
        self._started = time.monotonic()
        for load in self.loads:
            load.start()
        return self

    def stop(self) -> FleetResult:
        """Stop both loads (each waits at most timeout + 1 s) and tally every request."""
        samples = [sample for load in self.loads for sample in load.stop()]
        seconds = time.monotonic() - self._started if self._started is not None else 0.0
        self.result = tally(samples, seconds)
        return self.result

    def __enter__(self) -> FleetLoad:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
