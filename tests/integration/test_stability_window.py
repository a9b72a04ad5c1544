"""The stability window after Ready (issue 12, item 1): a new generation that dies (or
goes silent) within --reload-stable-for of being whole is rolled back by re-routing to
the parked old workers, not by rebooting them, and `unbroken reload` says so and fails.
A healthy one is watched, the parked workers answer their kept-alive clients with
`Connection: close` meanwhile, and then they drain."""

from __future__ import annotations

import http.client
import os
import signal
import time
from pathlib import Path
from typing import Any

from loadcheck import load_both, reload_in_background, stop_both, versions
from release import point_current, write_release
from waiting import wait_until

from unbroken.loadgen import summarize

CRASHES_AFTER_READY = '''
import os, sys, threading, time

if sys.argv[0].endswith("__main__.py"):  # a serving worker, not `unbroken check`
    with open({spawns!r}, "a") as spawns:
        spawns.write("%d\\n" % os.getpid())

    def _die():
        time.sleep(1.0)
        print("v2: the cache connection dropped; giving up", file=sys.stderr, flush=True)
        os._exit(1)

    # A second after its first request, so surely after Ready: timed from the import,
    # a boot slowed by --boot-nice under the test's load could still be before it.
    _serve, _dying = app, []

    def app(environ, start_response):
        if not _dying:
            _dying.append(threading.Thread(target=_die, daemon=True))
            _dying[0].start()
        return _serve(environ, start_response)
'''
AFTER = 4.0  # seconds of load after the reload returned: past any window and back-off




def _status_when(service: Any, predicate: Any) -> dict[str, Any]:
    """The service's status once `predicate(status)` holds (waiting.wait_until)."""
    state: dict[str, Any] = wait_until(
        lambda: next((s for s in [service.status()] if predicate(s)), None))
    return state


def _get(connection: http.client.HTTPConnection) -> tuple[str, str | None]:
    """(body: "<version> <pid>", the Connection header if any)."""
    connection.request("GET", "/")
    response = connection.getresponse()
    return response.read().decode().strip(), response.getheader("connection")


def test_a_release_dying_after_ready_is_rolled_back_to_the_parked_workers(
        service_factory: Any, releases: Path, tmp_path: Path) -> None:
    service = service_factory("--reload-stable-for", "3")  # the default (the harness: 0.5)
    service.wait_serving()
    old_pids = sorted(service.worker_pids())
    spawns = tmp_path / "v2-spawns"
    with open(write_release(releases, "v2") / "app.py", "a") as handle:
        handle.write(CRASHES_AFTER_READY.format(spawns=str(spawns)))
    loads = load_both(service)
    time.sleep(0.5)
    point_current(releases, "v2")
    reload = service.reload_cli()
    replied = time.monotonic()
    time.sleep(AFTER)
    samples = stop_both(loads)

    assert reload.returncode != 0, reload
    assert "reload aborted, generation 1 keeps serving" in reload.stdout + reload.stderr
    assert "after Ready: exit code 1" in reload.stdout + reload.stderr
    assert "the cache connection dropped" in reload.stderr  # the worker's last lines
    state = service.status()
    assert state["generation"] == 1 and state["phase"] == "serving", state
    # A re-route, not a reboot: the very workers that served before serve again.
    assert sorted(w["pid"] for w in state["workers"]) == old_pids, state
    assert {w["state"] for w in state["workers"]} == {"ready"}, state
    assert len(spawns.read_text().split()) == 2  # the generation, and never respawned
    summary = summarize(samples)
    failed = [s for s in samples if s.error is not None]
    print(f"\ncrash after Ready: {summary.requests} requests, {len(failed)} failed, "
          f"reload exit {reload.returncode}")
    # Only requests in flight on the two dying workers may fail: at most one per client.
    print([(round(s.start - replied, 3), s.error, getattr(s, "keep_alive", None)) for s in failed])
    assert len(failed) <= 6, failed
    assert all(s.start < replied for s in failed), failed
    after = [s for s in samples if s.start > replied + 0.1]
    assert after and set(versions(after)) == {"v1"}
    assert service.output().count("accepts again") == 2


def test_a_new_worker_that_goes_silent_in_the_window_rolls_back(
        service_factory: Any, releases: Path) -> None:
    service = service_factory("--timeout", "1", "--reload-stable-for", "4")
    service.wait_serving()
    write_release(releases, "v2")
    point_current(releases, "v2")
    reloading, replies = reload_in_background(service)
    state = _status_when(service, lambda s: s.get("watching") is not None)
    stuck = next(w["pid"] for w in state["workers"] if w["generation"] == 2)
    os.kill(stuck, signal.SIGSTOP)  # alive, but no heartbeat: hung on a lock, say
    reloading.join(30)
    assert replies and not replies[0].ok, replies
    assert "no heartbeat for --timeout 1s" in replies[0].message
    assert service.status()["generation"] == 1


def test_a_healthy_release_is_watched_while_parked_workers_hand_their_clients_over(
        service_factory: Any, releases: Path) -> None:
    service = service_factory("--reload-stable-for", "2")
    old_pids = set(service.wait_serving() and service.worker_pids())
    kept = http.client.HTTPConnection(*service.address, timeout=10)
    first, header = _get(kept)
    assert first.startswith("v1") and header is None
    write_release(releases, "v2")
    point_current(releases, "v2")
    reloading, replies = reload_in_background(service)
    state = _status_when(service, lambda s: s.get("watching") is not None)
    watch_began = time.monotonic()
    parked = {w["pid"] for w in state["workers"] if w["state"] == "parked"}
    assert parked == old_pids, state
    # The parked worker still answers its kept-alive client, and tells it to move on.
    again, header = _get(kept)
    assert again == first and header == "close"
    fresh = []
    for _ in range(6):
        connection = http.client.HTTPConnection(*service.address, timeout=10)
        fresh.append(_get(connection)[0])
        connection.close()
    assert all(answer.startswith("v2") for answer in fresh), fresh  # nobody accepts on v1
    kept.close()
    reloading.join(30)
    assert replies and replies[0].ok, replies
    assert time.monotonic() - watch_began >= 1.5
    state = _status_when(service, lambda s: {w["generation"] for w in s["workers"]} == {2})
    assert not old_pids & {w["pid"] for w in state["workers"]}
