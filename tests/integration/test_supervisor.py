"""supervisord for real: unbroken as a `[program:x]`, reloaded by `supervisorctl signal HUP`.

supervisord owns one process, the master; a reload must keep that PID (supervisord would
otherwise see an exit and restart the program, dropping requests) and a stop must drain.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from loadcheck import assert_no_failures, load_both, stop_both, versions
from processes import stop_process
from release import point_current, write_release

from unbroken.control.client import ControlUnavailable, call
from unbroken.loadgen import Load

WAIT_TIMEOUT = 15.0  # seconds; the example app boots in well under one


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(predicate: Callable[[], bool], what: str,
               timeout: float = WAIT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (ControlUnavailable, OSError):
            pass  # the control socket is not there yet, or between replies
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def supervisord_config(tmp_path: Path, releases: Path, port: int) -> Path:
    command = (f"{sys.executable} -m unbroken serve app:app --chdir {releases / 'current'} "
               f"-b 127.0.0.1:{port} -w 2 --control {tmp_path / 'ctl.sock'}")
    config = tmp_path / "supervisord.conf"
    config.write_text(f"""\
[unix_http_server]
file={tmp_path / 'supervisor.sock'}

[supervisord]
logfile={tmp_path / 'supervisord.log'}
pidfile={tmp_path / 'supervisord.pid'}
childlogdir={tmp_path}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{tmp_path / 'supervisor.sock'}

[program:app]
command={command}
stopsignal=TERM
stopwaitsecs=40
autorestart=true
startsecs=1
redirect_stderr=true
stdout_logfile={tmp_path / 'app.log'}
""")
    return config


class Supervised:
    """A supervisord in the foreground running one unbroken program, `app`."""

    def __init__(self, tmp_path: Path, releases: Path) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        self.control = str(tmp_path / "ctl.sock")
        self.config = supervisord_config(tmp_path, releases, self.port)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c",
                               str(self.config), *args], capture_output=True, text=True,
                              timeout=60)

    def app_state(self) -> tuple[str, int | None]:
        """(state, pid) of `app` as `supervisorctl status` prints them."""
        line = self.ctl("status", "app").stdout
        match = re.search(r"^app\s+(\w+)(?:\s+pid (\d+))?", line, re.MULTILINE)
        assert match, line
        return match[1], int(match[2]) if match[2] else None

    def status(self) -> dict[str, Any]:
        return call(self.control, "status", timeout=5).data

    def output(self) -> str:
        logs = [self.tmp_path / "supervisord.log", self.tmp_path / "app.log"]
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in logs if p.exists())

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture
def supervised(releases: Path, tmp_path: Path) -> Any:
    if importlib.util.find_spec("supervisor") is None:
        if os.environ.get("CI"):
            pytest.fail("supervisor is missing; `pip install -e '.[test]'` installs it")
        pytest.skip("supervisor is not installed")
    write_release(releases, "v2")
    supervisor = Supervised(tmp_path, releases)
    try:
        yield supervisor
    finally:
        supervisor.stop()


def test_supervisorctl_signal_hup_reloads_in_place_and_stop_drains(
        supervised: Supervised, releases: Path) -> None:
    wait_until(lambda: supervised.status()["phase"] == "serving", "the first generation")
    wait_until(lambda: supervised.app_state()[0] == "RUNNING", "supervisord to say RUNNING")
    pid_before = supervised.app_state()[1]
    assert supervised.status()["master_pid"] == pid_before

    loads = load_both(supervised)
    time.sleep(0.3)  # some requests against generation 1 first
    point_current(releases, "v2")
    hup = supervised.ctl("signal", "HUP", "app")
    assert hup.returncode == 0, hup
    wait_until(lambda: (s := supervised.status())["generation"] == 2
               and s["phase"] == "serving", "generation 2 to serve")
    time.sleep(0.3)  # and some against generation 2
    samples = stop_both(loads)

    assert_no_failures(samples, supervised)
    assert versions(samples)[-1] == "v2"
    # Still the one process supervisord started: it never saw an exit, so never restarted.
    assert supervised.app_state() == ("RUNNING", pid_before)

    slow = Load(supervised.address, clients=1, keep_alive=False, path="/slow?s=1.5",
                max_requests=1, duration=20).start()
    # In flight means a worker accepted it (heartbeats report in-flight once a second).
    wait_until(lambda: sum(w["in_flight"] for w in supervised.status()["workers"]) >= 1,
               "the slow request to be in flight", timeout=1.4)
    stop = supervised.ctl("stop", "app")
    slow_samples = slow.stop()
    assert stop.returncode == 0 and "app: stopped" in stop.stdout, stop
    assert [(s.status, s.error) for s in slow_samples] == [(200, None)], supervised.output()
    assert supervised.app_state()[0] == "STOPPED"
    assert "stopped: app (exit status 0)" in supervised.output()  # clean, not a SIGKILL
