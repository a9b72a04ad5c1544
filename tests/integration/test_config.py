"""A reload re-reads the configuration file; a bad one is refused and changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from haproxy import free_port
from loadcheck import assert_no_failures, load_both, stop_both
from release import point_current, write_release
from waiting import wait_until


def test_reload_applies_a_changed_file_and_refuses_a_bad_one(service_factory: Any,
                                                             releases: Path) -> None:
    settings = releases / "unbroken.toml"
    settings.write_text("workers = 2\nthreads = 1\n")
    service = service_factory("-c", str(settings), workers=None)  # the file decides
    service.wait_serving()
    loads = load_both(service)
    settings.write_text("workers = 3\nthreads = 4\n")
    assert service.reload().ok
    settings.write_text('workers = 0\nthreads = "x"\ncolour = "blue"\n')
    reply = service.reload()
    samples = stop_both(loads)
    assert_no_failures(samples, service)
    assert not reply.ok
    for key in ("workers (0 must be at least 1", "threads ('x'", "colour (unknown setting)"):
        assert key in reply.message
    state = service.status()
    assert state["generation"] == 2 and state["desired"] == 3
    assert sum(w["state"] == "ready" for w in state["workers"]) == 3


def check(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "unbroken", "check", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_check_imports_the_release_in_a_throwaway_process(releases: Path) -> None:
    good = check("app:app", "--chdir", str(releases / "current"), "--health-path", "/healthz",
                 cwd=releases)
    assert good.returncode == 0 and "GET /healthz answered 2xx" in good.stdout
    write_release(releases, "v2", broken=True)
    point_current(releases, "v2")
    bad = check("app:app", "--chdir", str(releases / "current"), cwd=releases)
    assert bad.returncode == 1
    assert "RuntimeError: release v2 is broken on purpose" in bad.stderr
    assert "Traceback" in bad.stderr
    (releases / "unbroken.toml").write_text("workers = -1\n")
    config = check("app:app", cwd=releases)
    assert config.returncode == 2 and "workers (-1 must be at least 1" in config.stderr


def test_check_boots_with_the_real_settings_not_the_defaults(releases: Path) -> None:
    """A worker of this configuration could not load its certificate: check says so
    (it used to boot with the engine's defaults, no TLS, and answer ok)."""
    (releases / "broken.pem").write_text("not a certificate\n")
    bad = check("app:app", "--chdir", str(releases / "current"), "--certfile",
                str(releases / "broken.pem"), "--keyfile", str(releases / "broken.pem"),
                cwd=releases)
    assert bad.returncode == 1, bad
    assert "check failed: TLS:" in bad.stderr and "broken.pem" in bad.stderr


def test_reload_adds_and_removes_binds(releases: Path, tmp_path: Path) -> None:
    from unbroken.control.client import ControlUnavailable, call
    from unbroken.loadgen import Load

    first, second = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
    settings = tmp_path / "unbroken.toml"
    settings.write_text(f'app = "app:app"\nbind = ["unix:{first}"]\nworkers = 2\n')
    control = str(tmp_path / "ctl.sock")
    process = subprocess.Popen(
        [sys.executable, "-m", "unbroken", "serve", "-c", str(settings), "--chdir",
         str(releases / "current"), "--control", control], stderr=subprocess.DEVNULL)

    def status() -> dict[str, Any]:
        return call(control, "status", timeout=5).data

    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if status()["phase"] == "serving":
                    break
            except (ControlUnavailable, OSError):
                pass
            time.sleep(0.05)
        settings.write_text(f'app = "app:app"\nbind = ["unix:{first}", "unix:{second}"]\n')
        assert call(control, "reload", timeout=60).ok
        assert status()["binds"] == [f"unix:{first}", f"unix:{second}"]
        on_second = Load(second, clients=3, keep_alive=True, duration=30,
                         max_requests=100_000).start()
        settings.write_text(f'app = "app:app"\nbind = ["unix:{second}"]\n')
        assert call(control, "reload", timeout=60).ok
        settings.write_text('app = "app:app"\nbind = ["unix:/nonexistent/dir/c.sock"]\n')
        refused = call(control, "reload", timeout=60)
        samples = on_second.stop()
        assert not refused.ok and "cannot bind unix:/nonexistent/dir/c.sock" in refused.message
        assert samples and all(s.error is None for s in samples)
        assert status()["binds"] == [f"unix:{second}"]
        deadline = time.monotonic() + 20  # the first socket closes once its workers drained
        while os.path.exists(first) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(first)
    finally:
        process.terminate()
        process.wait(30)


def test_check_serves_one_real_request_and_fails_on_a_server_error(tmp_path: Path) -> None:
    """Issue 16, item 2: `check` answered ok for apps that answer 500 to everything (a
    FastAPI app under the WSGI engine did). Now it serves `GET /` over a socket, through
    the engine that will serve, and fails on a 5xx; a 404 at `/` is an app's right."""
    (tmp_path / "apps.py").write_text(
        "def broken(environ, start_response):\n"
        "    start_response('500 Internal Server Error', [('Content-Length', '0')])\n"
        "    return [b'']\n\n"
        "def no_root(environ, start_response):\n"
        "    start_response('404 Not Found', [('Content-Length', '0')])\n"
        "    return [b'']\n")
    broken = check("apps:broken", cwd=tmp_path)
    assert broken.returncode == 1
    assert broken.stderr.splitlines() == [
        "unbroken: check failed: GET / over a socket answered 500, wanted an answer that is "
        "not 5xx"]
    fine = check("apps:no_root", cwd=tmp_path)
    assert fine.returncode == 0, fine.stderr
    assert fine.stdout.strip() == ("unbroken: ok: apps:no_root imported, startup ran, "
                                   "GET / over a socket answered 404")


FRAMEWORK_APPS = '''
import fastapi, flask

api = fastapi.FastAPI()
web = flask.Flask(__name__)


@api.get("/")
def api_root():
    return {"served": "fastapi"}


@web.get("/")
def web_root():
    return "served: flask"
'''


@pytest.mark.parametrize(("app", "answer", "wrong"), [
    ("apps:api", '{"served":"fastapi"}', "wsgi"), ("apps:web", "served: flask", "asgi")])
def test_a_real_framework_app_gets_its_engine_without_k_and_the_wrong_k_is_refused(
        tmp_path: Path, app: str, answer: str, wrong: str) -> None:
    """Issue 16, item 2: FastAPI under the WSGI engine (or Flask under -k asgi) booted
    'ready' and answered 500 to everything. With no -k the engine comes from the app;
    a -k for the other interface is refused at boot, in one line."""
    (tmp_path / "apps.py").write_text(FRAMEWORK_APPS)
    fine = check(app, cwd=tmp_path)
    assert fine.returncode == 0, fine.stderr
    assert fine.stdout.strip().endswith("GET / over a socket answered 200")
    port = free_port()
    served = subprocess.Popen([sys.executable, "-m", "unbroken", "serve", app, "-b",
                               f"127.0.0.1:{port}", "-w", "1", "--control",
                               str(tmp_path / "ctl.sock")], cwd=tmp_path,
                              stderr=subprocess.DEVNULL)
    try:
        def body() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    return str(r.read().decode())
            except OSError:
                return None

        assert wait_until(body, timeout=30, message=f"{app} answering") == answer
    finally:
        served.terminate()
        served.wait(30)
    refused = check(app, "-k", wrong, cwd=tmp_path)
    assert refused.returncode == 1
    kind = "an ASGI" if wrong == "wsgi" else "a WSGI"
    assert refused.stderr.splitlines()[-1].startswith(
        f"unbroken: check failed: {app} is {kind} application but -k {wrong} serves "), \
        refused.stderr
