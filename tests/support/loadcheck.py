"""Load helpers shared by the integration tests: run clients, count failures, read versions."""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from release import point_current

from unbroken.control.protocol import Reply
from unbroken.loadgen import Load, Sample, summarize


def load_both(service: Any, keep_alive_clients: bool = True, **kw: Any) -> tuple[Load, ...]:
    """Keep-alive clients and connection-per-request clients together, bounded."""
    options = {"duration": 60.0, "max_requests": 200_000, "timeout": 15.0, **kw}
    kinds = (True, False) if keep_alive_clients else (False,)
    return tuple(Load(service.address, clients=3, keep_alive=keep, **options).start()
                 for keep in kinds)


def stop_both(loads: tuple[Load, ...]) -> list[Sample]:
    return sorted((sample for load in loads for sample in load.stop()), key=lambda s: s.start)


def versions(samples: list[Sample]) -> list[str]:
    return [s.body.split()[0].decode() for s in samples if s.error is None and s.body]


def assert_no_failures(samples: list[Sample], service: Any) -> None:
    summary = summarize(samples)
    assert summary.requests > 50, summary
    assert summary.failures == 0, (summary, [s for s in samples if s.error][:5],
                                   service.output()[-3000:])


def reload_under_load(service: Any, releases: Path, version: str,
                      keep_alive_clients: bool = True) -> tuple[Any, list[Sample]]:
    """Switch `current` to `version` and reload while clients run; (reply, samples)."""
    reply, _started, _took, samples = timed_reload_under_load(
        service, releases, version, keep_alive_clients)
    return reply, samples


def timed_reload_under_load(service: Any, releases: Path, version: str,
                            keep_alive_clients: bool = True, settle: float = 0.5) -> tuple[
        Any, float, float, list[Sample]]:
    """The same, also giving when the reload was asked for and how long it blocked."""
    loads = load_both(service, keep_alive_clients=keep_alive_clients)
    time.sleep(settle)
    point_current(releases, version)
    started = time.monotonic()
    reply = service.reload()
    took = time.monotonic() - started
    time.sleep(settle)
    return reply, started, took, stop_both(loads)


def refused_release_under_load(service: Any, releases: Path, version: str) -> tuple[
        Any, list[Sample]]:
    """Deploy a release that must be refused, with `unbroken reload` (the CLI) under
    load; checks the old generation (1) was untouched; returns (CLI result, samples)."""
    loads = load_both(service)
    time.sleep(0.3)
    point_current(releases, version)
    result = service.reload_cli()
    time.sleep(0.3)
    samples = stop_both(loads)
    assert result.returncode != 0 and "Traceback" in result.stderr, result
    assert_no_failures(samples, service)
    assert set(versions(samples)) == {"v1"}
    state = service.status()
    assert state["generation"] == 1
    assert all(w["state"] == "ready" and w["generation"] == 1 for w in state["workers"])
    return result, samples


def metric(port: int, name: str) -> float:
    """One unlabelled value from the master's --metrics-bind endpoint on 127.0.0.1:port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics")


def reload_in_background(service: Any) -> tuple[threading.Thread, list[Reply]]:
    """Ask for a reload on a thread (it blocks until the verdict); join, then read."""
    replies: list[Reply] = []
    thread = threading.Thread(target=lambda: replies.append(service.reload()))
    thread.start()
    return thread, replies
