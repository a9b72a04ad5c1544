"""Prometheus text exposition (format 0.0.4) of the whole service: pure.

Written by hand rather than with prometheus_client: the format is a few lines of
text, the master must stay dependency-free and single-threaded, and
prometheus_client's registry is process-global state the master does not need.

Request counts and latencies come from the workers' heartbeats (at most one
heartbeat interval old); a worker's final counts are folded into `MetricsBook`
when it exits, so counters never go down across reloads. Requests a worker
served after its last heartbeat are not counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from unbroken.messages import Heartbeat
from unbroken.observability.latency import BUCKETS
from unbroken.rollout.lifecycle import ExitCause, WorkerState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WORKER_STATES = tuple(state.value for state in WorkerState)
RELOAD_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)


def restart_cause(cause: ExitCause) -> str | None:
    """The restart metric's label for an exit, or None when the exit was planned."""
    return None if cause.planned else cause.value


@dataclass
class MetricsBook:
    """What outlives a worker: its final counts, and the reload and restart tallies."""

    statuses: dict[str, int] = field(default_factory=dict)
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0
    reloads: dict[str, int] = field(default_factory=dict)
    reload_counts: list[int] = field(default_factory=lambda: [0] * (len(RELOAD_BUCKETS) + 1))
    reload_sum: float = 0.0
    restarts: dict[str, int] = field(default_factory=dict)
    requests_cut: int = 0  # by --graceful-timeout, as workers report before exiting
    connections_handed_over: int = 0  # idle at a drain deadline, to a serving worker
    crash_loop_deaths: int = 0  # serving workers that died soon after Ready, in a row
    crash_loop_gave_up: bool = False
    # Responses by generation and status class, so a dashboard tells releases apart;
    # kept for the life of the master (a few series per reload).
    by_generation: dict[int, dict[str, int]] = field(default_factory=dict)

    def worker_gone(self, stats: Heartbeat, cause: str | None, generation: int = 0) -> None:
        _add_stats(self.statuses, self.latency_counts, stats)
        _add_statuses(self.by_generation.setdefault(generation, {}), stats)
        self.latency_sum += stats.latency_sum
        if cause is not None:
            self.restarts[cause] = self.restarts.get(cause, 0) + 1

    def reload_finished(self, outcome: str, seconds: float) -> None:
        self.reloads[outcome] = self.reloads.get(outcome, 0) + 1
        index = next((i for i, bound in enumerate(RELOAD_BUCKETS) if seconds <= bound),
                     len(RELOAD_BUCKETS))
        self.reload_counts[index] += 1
        self.reload_sum += seconds


def _add_statuses(statuses: dict[str, int], stats: Heartbeat) -> None:
    for key, value in stats.statuses.items():
        statuses[key] = statuses.get(key, 0) + value


def _add_stats(statuses: dict[str, int], counts: list[int], stats: Heartbeat) -> None:
    _add_statuses(statuses, stats)
    for index, value in enumerate(stats.latency_counts[:len(counts)]):
        counts[index] += value


def _histogram(name: str, bounds: tuple[float, ...], counts: list[int],
               total: float) -> list[str]:
    lines, running = [], 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        running += count
        le = "+Inf" if bound == float("inf") else f"{bound:g}"
        lines.append(f'{name}_bucket{{le="{le}"}} {running}')
    return [*lines, f"{name}_sum {total:.6f}", f"{name}_count {running}"]


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


def render(book: MetricsBook, workers: list[tuple[str, int, Heartbeat]],
           queues: Iterable[tuple[str, int, int]] = ()) -> str:
    """`workers`: (state, generation, last heartbeat) of every live worker; `queues`:
    (listener, connections waiting in its accept queue, the queue's limit) where the OS
    tells."""
    queues = list(queues)
    statuses = dict(book.statuses)
    counts = list(book.latency_counts)
    latency_sum = book.latency_sum
    by_generation = {number: dict(classes) for number, classes in book.by_generation.items()}
    for _state, generation, stats in workers:
        _add_stats(statuses, counts, stats)
        _add_statuses(by_generation.setdefault(generation, {}), stats)
        latency_sum += stats.latency_sum
    states = {state: 0 for state in WORKER_STATES}
    for state, _generation, _stats in workers:
        states[state] = states.get(state, 0) + 1
    lines = [
        *_family("unbroken_http_requests_total", "counter", "Responses by status class.",
                 (f'unbroken_http_requests_total{{class="{key}"}} {value}'
                  for key, value in sorted(statuses.items()))),
        *_family("unbroken_http_request_duration_seconds", "histogram",
                 "Time from request head to the end of the response.",
                 _histogram("unbroken_http_request_duration_seconds", BUCKETS, counts,
                            latency_sum)),
        *_family("unbroken_http_requests_in_flight", "gauge", "Requests being served now.",
                 [f"unbroken_http_requests_in_flight {sum(s.in_flight for *_, s in workers)}"]),
        *_family("unbroken_generation_http_requests_total", "counter",
                 "Responses by the generation (release) that served them and status class.",
                 (f'unbroken_generation_http_requests_total{{generation="{number}",'
                  f'class="{key}"}} {value}'
                  for number, classes in sorted(by_generation.items())
                  for key, value in sorted(classes.items()))),
        *_family("unbroken_workers", "gauge", "Worker processes by state.",
                 (f'unbroken_workers{{state="{state}"}} {count}'
                  for state, count in sorted(states.items()))),
        *_family("unbroken_reloads_total", "counter", "Finished reloads by outcome.",
                 (f'unbroken_reloads_total{{outcome="{outcome}"}} {book.reloads.get(outcome, 0)}'
                  for outcome in sorted({"ok", "aborted", *book.reloads}))),
        *_family("unbroken_reload_duration_seconds", "histogram",
                 "Time from a reload request to its verdict.",
                 _histogram("unbroken_reload_duration_seconds", RELOAD_BUCKETS,
                            book.reload_counts, book.reload_sum)),
        *_family("unbroken_listen_queue", "gauge",
                 "Connections waiting in a listening socket's accept queue (Linux TCP).",
                 (f'unbroken_listen_queue{{listener="{name}"}} {waiting}'
                  for name, waiting, _limit in queues)),
        *_family("unbroken_listen_queue_limit", "gauge", "The accept queue's length limit.",
                 (f'unbroken_listen_queue_limit{{listener="{name}"}} {limit}'
                  for name, _waiting, limit in queues)),
        *_family("unbroken_worker_restarts_total", "counter",
                 "Workers replaced after an unplanned exit, by cause.",
                 (f'unbroken_worker_restarts_total{{cause="{cause}"}} {count}'
                  for cause, count in sorted(book.restarts.items()))),
        *_family("unbroken_requests_cut_total", "counter",
                 "Requests still running at --graceful-timeout, whose clients got no "
                 "complete response.",
                 [f"unbroken_requests_cut_total {book.requests_cut}"]),
        *_family("unbroken_connections_handed_over_total", "counter",
                 "Idle connections of a worker at its --graceful-timeout passed to a "
                 "serving worker instead of being closed.",
                 [f"unbroken_connections_handed_over_total {book.connections_handed_over}"]),
        *_family("unbroken_crash_loop_deaths", "gauge",
                 "Serving workers that died soon after Ready, in a row (0: no crash loop).",
                 [f"unbroken_crash_loop_deaths {book.crash_loop_deaths}"]),
        *_family("unbroken_crash_loop_gave_up", "gauge",
                 "1 while no worker is respawned until the next reload or scale.",
                 [f"unbroken_crash_loop_gave_up {int(book.crash_loop_gave_up)}"]),
    ]
    return "\n".join(lines) + "\n"
