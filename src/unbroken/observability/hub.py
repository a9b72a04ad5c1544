"""The one object the master calls for history, readiness and metrics.

The master stays readable: it reports facts (`reload_ended`, `worker_exited`,
`requests_cut`) and
gives two read-only views (its phase, its workers' last heartbeats); everything
else, including the two HTTP endpoints inside its loop, lives here.
"""

from __future__ import annotations

import logging
import selectors
from collections.abc import Callable

from unbroken.messages import Heartbeat
from unbroken.observability.history import ReloadEntry, ReloadHistory, history_path
from unbroken.observability.metrics import CONTENT_TYPE, MetricsBook, render
from unbroken.observability.ready import readiness
from unbroken.observability.responder import Answer, Responder

log = logging.getLogger("unbroken.observability")


class Observatory:
    def __init__(self, control_path: str, selector: selectors.BaseSelector,
                 phase: Callable[[], str],
                 workers: Callable[[], list[tuple[str, int, Heartbeat]]],
                 *, ready_bind: str | None, metrics_bind: str | None,
                 queues: Callable[[], list[tuple[str, int, int]]] = list) -> None:
        self.history = ReloadHistory(history_path(control_path))
        self.book = MetricsBook()
        self.phase = phase
        self.workers = workers
        self.queues = queues
        self.responders = []
        if ready_bind:
            self.responders.append(Responder(ready_bind, selector, self._ready))
        if metrics_bind:
            self.responders.append(Responder(metrics_bind, selector, self._metrics))

    def open(self) -> None:
        self.history.load()
        for responder in self.responders:
            responder.open()
            log.info("serving %s on %s", "readiness" if responder.answer == self._ready
                     else "metrics", responder.where)

    def close(self) -> None:
        for responder in self.responders:
            responder.close()

    def sweep(self, now: float) -> None:
        for responder in self.responders:
            responder.sweep(now)

    def reload_ended(self, entry: ReloadEntry) -> None:
        self.history.add(entry)
        self.book.reload_finished(entry.outcome, entry.seconds)

    def worker_exited(self, stats: Heartbeat, cause: str | None, generation: int) -> None:
        self.book.worker_gone(stats, cause, generation)

    def crash_loop(self, deaths: int, gave_up: bool) -> None:
        self.book.crash_loop_deaths, self.book.crash_loop_gave_up = deaths, gave_up

    def requests_cut(self, count: int) -> None:
        self.book.requests_cut += count

    def connections_handed_over(self, count: int) -> None:
        self.book.connections_handed_over += count

    def reload_amended(self, old: ReloadEntry, new: ReloadEntry) -> None:
        """A written entry learnt more (its old workers' cuts): not a new reload."""
        self.history.replace(old, new)

    def _ready(self, path: str) -> Answer:
        status, body = readiness(self.phase())
        return status, "text/plain; charset=utf-8", body

    def _metrics(self, path: str) -> Answer:
        if path != "/metrics":
            return 404, "text/plain; charset=utf-8", b"metrics are at /metrics\n"
        return 200, CONTENT_TYPE, render(self.book, self.workers(), self.queues()).encode()
