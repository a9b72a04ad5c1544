"""gunicorn's server hooks from a gunicorn.conf.py, each observed at its moment and in its
process (issue 16, item 1): a real master, real workers, a reload, a scale, a stop."""

from __future__ import annotations

import os
import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from release import point_current, write_release
from waiting import wait_until

from unbroken.control.client import call

HOOKS = '''
import os, sys

_LOG, _CONTROL = os.environ["HOOK_LOG"], os.environ["HOOK_CONTROL"]


def _say(*parts):
    with open(_LOG, "a") as log:
        log.write(" ".join(str(part) for part in parts) + "\\n")


def on_starting(server):
    _say("on_starting", os.getpid(), os.path.exists(_CONTROL))


def when_ready(server):
    _say("when_ready", os.getpid(), os.path.exists(_CONTROL), server.pid == os.getpid())


def on_reload(server):
    _say("on_reload", os.getpid())


def pre_fork(server, worker):
    _say("pre_fork", os.getpid(), worker.age)


def post_fork(server, worker):
    _say("post_fork", os.getpid(), worker.pid == os.getpid(), "app" in sys.modules)


def post_worker_init(worker):
    _say("post_worker_init", os.getpid(), "app" in sys.modules)


def worker_int(worker):
    _say("worker_int", os.getpid())


def worker_exit(server, worker):
    _say("worker_exit", os.getpid(), worker.generation)


def child_exit(server, worker):
    _say("child_exit", os.getpid(), worker.pid)


def nworkers_changed(server, new_value, old_value):
    _say("nworkers_changed", os.getpid(), new_value, old_value)


def pre_request(worker, req):
    _say("pre_request", os.getpid(), req.method, req.path, dict(req.headers).get("X-HOOK"))


def post_request(worker, req, environ, resp):
    _say("post_request", os.getpid(), req.path, environ["PATH_INFO"], resp.status_code)


def on_exit(server):
    _say("on_exit", os.getpid())
'''


def _lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def _named(log: Path, name: str) -> list[list[str]]:
    return [line for line in _lines(log) if line[0] == name]


def test_each_hook_is_called_at_its_moment_in_its_process(
        service_factory: Any, releases: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "hooks.log"
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(HOOKS)
    monkeypatch.setenv("HOOK_LOG", str(log))
    monkeypatch.setenv("HOOK_CONTROL", str(releases / "ctl.sock"))
    service = service_factory("-c", str(config))
    service.wait_serving()
    master = str(service.process.pid)
    first = service.worker_pids()
    assert _named(log, "on_starting") == [["on_starting", master, "False"]]  # before binding
    assert _named(log, "when_ready") == [["when_ready", master, "True", "True"]]
    assert [line[1] for line in _named(log, "pre_fork")] == [master, master]
    for pid in first:  # in the worker, before the app is imported; then after it
        assert ["post_fork", str(pid), "True", "False"] in _lines(log)
        assert ["post_worker_init", str(pid), "True"] in _lines(log)

    request = urllib.request.Request(f"http://127.0.0.1:{service.port}/hello?x=1",
                                     headers={"X-Hook": "seen"})
    with urllib.request.urlopen(request, timeout=5) as response:
        served_by = response.read().split()[1].decode()  # "v1 <pid>"
    assert ["pre_request", served_by, "GET", "/hello", "seen"] in _lines(log)
    wait_until(lambda: ["post_request", served_by, "/hello", "/hello", "200"] in _lines(log),
               timeout=5, message="post_request after the response")

    write_release(releases, "v2")
    point_current(releases, "v2")
    assert service.reload().ok
    assert _named(log, "on_reload") == [["on_reload", master]]
    wait_until(lambda: len(_named(log, "child_exit")) == 2, timeout=20,
               message="child_exit for both old workers")
    for pid in first:  # the old workers ran worker_exit, then the master reaped them
        assert ["worker_exit", str(pid), "1"] in _lines(log)
        assert ["child_exit", master, str(pid)] in _lines(log)
        names = [line[0] for line in _lines(log) if str(pid) in line[1:]]
        assert names.index("worker_exit") < names.index("child_exit")

    assert call(service.control, "scale", workers=3, timeout=10).ok
    assert _named(log, "nworkers_changed") == [["nworkers_changed", master, "3", "2"]]
    wait_until(lambda: [w["state"] for w in service.status()["workers"]] == ["ready"] * 3,
               timeout=20, message="three ready workers")
    serving = service.worker_pids()
    os.kill(service.process.pid, signal.SIGINT)  # a quick stop
    service.process.wait(20)
    assert sorted(line[1] for line in _named(log, "worker_int")) == sorted(map(str, serving))
    assert _lines(log)[-1] == ["on_exit", master]
