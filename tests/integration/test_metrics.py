"""History, readiness and metrics served by the master, against the real server."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

from loadcheck import load_both, stop_both
from release import point_current, write_release
from waiting import wait_until

from unbroken.control.client import call


def _free_port() -> int:
    # The master binds these itself; a brief race with another process is acceptable
    # for an auxiliary endpoint in a test (the service sockets use fd:// handover).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _parse(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_after_load_and_a_reload(service_factory: Any, releases: Path) -> None:
    port = _free_port()
    service = service_factory("--metrics-bind", f"127.0.0.1:{port}")
    service.wait_serving()
    loads = load_both(service)
    write_release(releases, "v2", import_delay=1.0)
    point_current(releases, "v2")
    reloader = call(service.control, "reload", timeout=60)  # blocks ~1 s
    assert reloader.ok
    first = _parse(_get(port, "/metrics")[1])
    samples = stop_both(loads)
    # The load has stopped; the new workers' next heartbeats (within one interval)
    # carry their last counts, which /metrics adds to the old generation's.
    answered_by_v2 = sum(s.error is None and s.body.startswith(b"v2 ") for s in samples)
    wait_until(lambda: sum(w["requests"] for w in service.status()["workers"]
                           if w["generation"] == 2) >= answered_by_v2,
               timeout=5, message=f"the new workers' heartbeats counting {answered_by_v2}")
    status, text = _get(port, "/metrics")
    after = _parse(text)
    assert status == 200
    assert 'unbroken_workers{state="ready"}' in first
    assert after['unbroken_http_requests_total{class="2xx"}'] > 0
    assert after['unbroken_http_requests_total{class="2xx"}'] >= answered_by_v2
    assert after['unbroken_reloads_total{outcome="ok"}'] == 1
    assert after['unbroken_http_request_duration_seconds_bucket{le="+Inf"}'] == \
        after["unbroken_http_request_duration_seconds_count"] > 0
    assert after['unbroken_workers{state="ready"}'] == 2
    listener = f'listener="127.0.0.1:{service.port}"'
    assert after[f"unbroken_listen_queue_limit{{{listener}}}"] == 2048  # the test's backlog
    assert after[f"unbroken_listen_queue{{{listener}}}"] >= 0
    assert _get(port, "/nope")[0] == 404


def test_metrics_scraped_while_rolling(service_factory: Any, releases: Path) -> None:
    port = _free_port()
    service = service_factory("--metrics-bind", f"127.0.0.1:{port}")
    service.wait_serving()
    write_release(releases, "v2", import_delay=1.5)
    point_current(releases, "v2")
    os.kill(service.process.pid, signal.SIGHUP)
    booting = wait_until(
        lambda: _parse(_get(port, "/metrics")[1]).get('unbroken_workers{state="booting"}', 0),
        timeout=10, message="booting workers in /metrics")
    assert booting == 2  # scraped mid-reload: the new generation is booting


def test_history_lists_ok_and_aborted(service_factory: Any, releases: Path) -> None:
    service = service_factory()
    service.wait_serving()
    write_release(releases, "v2")
    point_current(releases, "v2")
    assert service.reload().ok
    write_release(releases, "v3", broken=True)
    point_current(releases, "v3")
    assert not service.reload().ok
    reloads = call(service.control, "history", timeout=5).data["reloads"]
    assert [r["outcome"] for r in reloads] == ["ok", "aborted"]
    assert reloads[0]["generation_before"] == 1 and reloads[0]["generation_after"] == 2
    assert reloads[1]["generation_after"] == 2 and "broken on purpose" in reloads[1]["reason"]
    assert abs(reloads[0]["started_at"] - time.time()) < 60
    saved = Path(f"{service.control}.history.json")
    assert saved.exists() and '"aborted"' in saved.read_text()


def test_ready_flips_to_503_at_graceful_stop(service_factory: Any) -> None:
    port = _free_port()
    service = service_factory("--ready-bind", f"127.0.0.1:{port}", "--drain-delay", "1.5")
    service.wait_serving()
    assert _get(port, "/") == (200, "ready\n")
    os.kill(service.process.pid, signal.SIGTERM)

    def not_ready() -> int | None:
        status = _get(port, "/")[0]
        return status if status != 200 else None

    assert wait_until(not_ready, timeout=5, message="the ready endpoint to flip") == 503
    # During --drain-delay the workers still accept: the app keeps answering.
    with urllib.request.urlopen(f"http://127.0.0.1:{service.port}/", timeout=5) as response:
        assert response.status == 200
    service.process.wait(20)


def test_every_request_is_counted_across_reloads_by_generation(
        service_factory: Any, releases: Path) -> None:
    """Issue 16, item 5: requests served by draining workers (and those served after a
    worker's last periodic heartbeat) were lost from the counters across reloads.
    After five reloads under load and a quiet moment, the 2xx counter is exactly the
    number of 2xx responses the clients got, and the per-generation series add up."""
    port = _free_port()
    service = service_factory("--metrics-bind", f"127.0.0.1:{port}")
    service.wait_serving()
    loads = load_both(service)
    for version in ("v2", "v3", "v4", "v5", "v6"):
        write_release(releases, version, import_delay=0.3)
        point_current(releases, version)
        assert call(service.control, "reload", timeout=60).ok
    samples = stop_both(loads)
    answered = sum(1 for s in samples if s.error is None and s.status == 200)
    assert answered > 50
    wait_until(lambda: {w["generation"] for w in service.status()["workers"]} == {6},
               timeout=20, message="the old generations to finish draining")

    def counted() -> float | None:
        total = _parse(_get(port, "/metrics")[1]).get('unbroken_http_requests_total{class="2xx"}')
        return total if total == answered else None

    wait_until(counted, timeout=5, message=f"the 2xx counter to reach {answered}")
    after = _parse(_get(port, "/metrics")[1])
    per_generation = {generation: after.get(
        f'unbroken_generation_http_requests_total{{generation="{generation}",class="2xx"}}', 0)
        for generation in range(1, 7)}
    assert sum(per_generation.values()) == answered
    for generation in range(2, 7):  # each release's responses, told apart by the series
        served = sum(1 for s in samples if s.error is None
                     and s.body.startswith(f"v{generation} ".encode()))
        assert per_generation[generation] == served, (generation, per_generation)
    print(f"counted {answered} of {answered} requests across 5 reloads: {per_generation}")
