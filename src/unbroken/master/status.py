"""What `unbroken status` shows, from the policy's state and the workers: pure."""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from unbroken.config import Config
from unbroken.master.policy import Service
from unbroken.sockets import describe_listener

if TYPE_CHECKING:
    from unbroken.master.workers import WorkerHub


def watch_left(service: Service, now: float) -> float | None:
    """Seconds left in the reload's --reload-stable-for window, if one runs."""
    started = service.rollout.watch_started if service.rollout else None
    if started is None:
        return None
    return round(max(0.0, started + service.timings.stable_for - now), 1)


def service_status(service: Service, config: Config, pid: int,
                   listeners: Sequence[socket.socket], pool: WorkerHub,
                   now: float) -> dict[str, Any]:
    workers = pool.workers.values()
    live = {w.generation for w in workers} | {service.serving, service.target}
    return {
        "master_pid": pid,
        "name": config.name,
        "phase": service.phase.value,
        "generation": service.serving,
        "target": service.target,
        "watching": watch_left(service, now),
        "desired": service.desired,
        "binds": [describe_listener(s) for s in listeners],
        "python": sys.executable,
        "crash_loop": service.crash_loop.describe(now),
        # What each live generation was resolved to: a deploy checks that the one
        # serving is the release it switched to, not merely "a new one".
        "generations": {
            str(number): {"directory": generation.directory, "python": generation.python}
            for number, generation in pool.generations.items() if number in live
        },
        "workers": [
            {
                "pid": w.pid, "generation": w.generation, "state": w.state.value,
                "age": round(now - w.spawned_at, 1), "requests": w.stats.requests,
                "in_flight": w.stats.in_flight, "connections": w.stats.connections,
                "rss_kib": w.stats.rss_kib, "retiring": w.retiring,
            }
            for w in sorted(workers, key=lambda w: w.id)
        ],
    }
