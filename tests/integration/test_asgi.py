"""The ASGI worker class under reloads: lifespan gating, failed startups, WebSocket drain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from framework_release import write_starlette_release
from loadcheck import (
    assert_no_failures,
    refused_release_under_load,
    timed_reload_under_load,
    versions,
)
from release import point_current
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def starlette(releases: Path, service_factory: Any) -> Any:
    """A 2-worker ASGI service serving the Starlette release v1."""
    write_starlette_release(releases, "v1")
    point_current(releases, "v1")

    def start(*args: str) -> Any:
        service = service_factory("-k", "asgi", "--health-path", "/", *args)
        service.wait_serving()
        return service
    return start


def test_slow_lifespan_reload_under_load_fails_no_request(starlette: Any,
                                                          releases: Path) -> None:
    service = starlette()
    write_starlette_release(releases, "v2", startup_delay=3.0)
    reply, _started, took, samples = timed_reload_under_load(service, releases, "v2",
                                                             settle=0.3)
    assert reply.ok, reply
    assert took >= 3.0  # the lifespan gated readiness
    assert_no_failures(samples, service)
    served = versions(samples)
    assert served[0] == "v1" and served[-1] == "v2"
    # Keep-alive clients crossed the reload without one failure: they were asked
    # to close (Connection: close) and reconnected to the new generation.
    assert any(s.error is None for s in samples)


def test_failing_lifespan_aborts_the_reload(starlette: Any, releases: Path) -> None:
    service = starlette()
    write_starlette_release(releases, "v2", startup_raises=True)
    result, _ = refused_release_under_load(service, releases, "v2")
    assert "lifespan of v2 fails on purpose" in result.stderr


def test_websocket_gets_1012_at_the_deadline_and_reconnects(starlette: Any,
                                                            releases: Path) -> None:
    service = starlette("--graceful-timeout", "2")
    url = f"ws://127.0.0.1:{service.port}/ws"
    write_starlette_release(releases, "v2")
    with ws_connect(url, open_timeout=5) as ws:
        ws.send("before")
        assert ws.recv(timeout=5) == "v1 before"
        point_current(releases, "v2")
        reply = service.reload()  # returns once v2 is ready; v1 drains for 2 s
        assert reply.ok, reply
        ws.send("during the drain")
        assert ws.recv(timeout=5) == "v1 during the drain"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=6)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    with ws_connect(url, open_timeout=5) as ws:
        ws.send("after")
        assert ws.recv(timeout=5) == "v2 after"
