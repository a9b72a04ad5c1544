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


def test_without_k_the_engine_is_picked_from_the_app_and_a_wrong_k_is_refused(
        releases: Path, service_factory: Any) -> None:
    """A Starlette app with no -k is served by the ASGI engine; a release whose -k does
    not fit is refused at boot in one line, so the reload is rolled back (it used to
    boot "ready" and answer 500 to every request)."""
    write_starlette_release(releases, "v1")
    point_current(releases, "v1")
    service = service_factory("--health-path", "/")
    service.wait_serving()
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{service.port}/", timeout=5) as answer:
        assert answer.status == 200 and answer.read().startswith(b"v1")
    service.stop()  # the next one uses the same control socket path
    wrong = service_factory("-k", "wsgi")
    reply_output = ""
    try:
        wrong.wait_serving(timeout=10)
    except AssertionError as error:
        reply_output = str(error)
    assert ("app:app is an ASGI application but -k wsgi serves WSGI: drop -k (the engine "
            "is picked from the app) or use -k asgi") in reply_output
    assert "Traceback" not in reply_output
