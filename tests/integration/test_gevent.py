"""The gevent worker class: many slow requests per worker, and reloads like WSGI's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from framework_release import write_flask_release
from loadcheck import assert_no_failures, load_both, stop_both, versions
from release import point_current

from unbroken.loadgen import Load

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def flask(releases: Path, service_factory: Any) -> Any:
    write_flask_release(releases, "v1")
    point_current(releases, "v1")

    def start(*args: str, workers: int = 2) -> Any:
        service = service_factory("-k", "gevent", "--health-path", "/", *args, workers=workers)
        service.wait_serving()
        return service
    return start


def test_200_concurrent_slow_requests_finish_together(flask: Any) -> None:
    service = flask(workers=2)
    started = time.monotonic()
    samples = Load(service.address, clients=200, keep_alive=False, path="/slow?s=1",
                   duration=15, max_requests=200, timeout=10).start().wait()
    took = time.monotonic() - started
    assert len(samples) == 200 and all(s.error is None for s in samples), samples[:3]
    assert took < 3.5, took  # 200 x 1 s on 2 workers: concurrent, not 100 s


def test_worker_connections_bounds_concurrency(flask: Any) -> None:
    service = flask("--worker-connections", "5", workers=1)
    started = time.monotonic()
    samples = Load(service.address, clients=10, keep_alive=False, path="/slow?s=0.5",
                   duration=15, max_requests=10, timeout=10).start().wait()
    took = time.monotonic() - started
    assert all(s.error is None for s in samples)
    assert took >= 0.95  # 10 requests through 5 slots: two rounds of 0.5 s


def test_reload_under_load_with_keep_alive_clients(flask: Any, releases: Path) -> None:
    service = flask()
    write_flask_release(releases, "v2")
    loads = load_both(service)
    time.sleep(0.5)
    point_current(releases, "v2")
    reply = service.reload()
    time.sleep(0.5)
    samples = stop_both(loads)
    assert reply.ok, reply
    assert_no_failures(samples, service)
    served = versions(samples)
    assert served[0] == "v1" and served[-1] == "v2"
