"""docs/supervisor.md as written: its `[program:myapp]` and its commands, run by root for
a service user `myapp` (a throwaway system user here), with the `sudo -u` deploy line.

Only names change: `myapp` becomes the throwaway user's name, `/srv/myapp` and
`/var/log/myapp` a scratch directory, port 8000 a free one, and `supervisorctl` gets `-c`
for this test's supervisord. `/run/unbroken/` is the real one: that fixed place is the
point (the lookup must not depend on the caller's environment, which sudo resets).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from asuser import (
    need_root_tools,
    need_runnable,
    open_directory,
    system_user,
    traversable,
    unbroken_wrapper,
)
from processes import stop_process

DOC = Path(__file__).resolve().parents[2] / "docs" / "supervisor.md"
NAME = "ubtmyapp"  # a user name, a Python package name and a --name at once
APP = '''\
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"{version}"]
'''


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)


def command(starts: str) -> str:
    """The one documented shell line that starts with `starts`, without its comment."""
    found = [line.split("#")[0].strip() for block in blocks("sh")
             for line in block.splitlines() if line.startswith(starts)]
    assert len(found) == 1, (starts, found)
    return found[0]


class Page:
    def __init__(self, srv: Path) -> None:
        self.srv = srv
        self.port = free_port()
        self.config = srv / "supervisord.conf"

    def named(self, text: str) -> str:
        return (text.replace("/srv/myapp", str(self.srv))
                .replace("/var/log/myapp", str(self.srv / "log"))
                .replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
                .replace("supervisorctl", f"{sys.executable} -m supervisor.supervisorctl "
                                          f"-c {self.config}")
                .replace("myapp", NAME))

    def run(self, line: str) -> subprocess.CompletedProcess[str]:
        argv = traversable(NAME, ["sh", "-c", self.named(line)], self.srv)
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    def answer(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=10) as got:
            return str(got.read().decode())

    def state(self) -> tuple[str, int | None]:
        line = self.run("supervisorctl status myapp").stdout
        match = re.search(rf"^{NAME}\s+(\w+)(?:\s+pid (\d+))?", line, re.MULTILINE)
        assert match, line
        return match[1], int(match[2]) if match[2] else None

    def wait(self, what: str, predicate: object, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if callable(predicate) and predicate():
                    return
            except OSError:
                pass  # not answering yet
            time.sleep(0.1)
        logs = "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in (self.srv / "supervisord.log", self.srv / "log" / "unbroken.log")
                         if p.exists())
        raise AssertionError(f"timed out waiting for {what}\n{logs}")


@pytest.fixture
def page() -> Iterator[Page]:
    if importlib.util.find_spec("supervisor") is None:
        pytest.skip("supervisor is not installed")
    need_root_tools("sudo", "install")
    srv = open_directory("ubt-supervisor-doc-")
    try:
        with system_user(NAME):
            need_runnable(NAME, srv)
            yield Page(srv)
    finally:
        shutil.rmtree(f"/run/unbroken/{NAME}", ignore_errors=True)
        shutil.rmtree(srv, ignore_errors=True)


def test_the_supervisor_page_runs_as_written(page: Page) -> None:
    (program,) = [b for b in blocks("ini") if "[program:myapp]" in b]
    for version in ("v1", "v2", "v3"):
        package = page.srv / "releases" / version / NAME
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "wsgi.py").write_text(APP.format(version=version))
    (page.srv / "current").symlink_to(page.srv / "releases" / "v1")
    (page.srv / "log").mkdir()
    os.makedirs(page.srv / "venv" / "bin")
    unbroken_wrapper(page.srv / "venv" / "bin")  # the docs' /srv/myapp/venv/bin/unbroken
    page.config.write_text(f"""\
[unix_http_server]
file={page.srv / 'supervisor.sock'}
[supervisord]
logfile={page.srv / 'supervisord.log'}
pidfile={page.srv / 'supervisord.pid'}
childlogdir={page.srv}
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{page.srv / 'supervisor.sock'}
{page.named(program)}""")

    made = page.run(command("install -d"))
    assert made.returncode == 0, made
    supervisord = subprocess.Popen(
        traversable(NAME, [sys.executable, "-m", "supervisor.supervisord", "-n", "-c",
                           str(page.config)], page.srv),
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        page.wait("v1 to answer", lambda: page.answer() == "v1")
        socket_path = Path(f"/run/unbroken/{NAME}/control.sock")
        assert socket_path.is_socket() and socket_path.owner() == NAME
        page.wait("RUNNING", lambda: page.state()[0] == "RUNNING")
        pid = page.state()[1]

        (page.srv / "current").unlink()
        (page.srv / "current").symlink_to(page.srv / "releases" / "v2")
        deploy = command("sudo -u myapp")
        reload = page.run(deploy)
        assert reload.returncode == 0 and "ok" in reload.stdout, reload
        assert page.answer() == "v2"
        assert page.state() == ("RUNNING", pid)

        (page.srv / "current").unlink()
        (page.srv / "current").symlink_to(page.srv / "releases" / "v3")
        hup = page.run(command("supervisorctl signal HUP"))
        assert hup.returncode == 0, hup
        page.wait("v3 to answer", lambda: page.answer() == "v3")
        assert page.state() == ("RUNNING", pid)

        # What the page warns about: `unbroken stop` under autorestart=true comes back.
        stop = page.run(deploy.replace(" reload ", " stop "))
        assert stop.returncode == 0, stop
        page.wait("supervisord to start it again",
                  lambda: (s := page.state())[0] == "RUNNING" and s[1] != pid)
        page.wait("v3 to answer again", lambda: page.answer() == "v3")

        stopped = page.run(command("supervisorctl stop"))
        assert stopped.returncode == 0 and f"{NAME}: stopped" in stopped.stdout, stopped
        time.sleep(1.5)  # autorestart must not undo this one
        assert page.state() == ("STOPPED", None)
        assert f"stopped: {NAME} (exit status 0)" in (page.srv / "supervisord.log").read_text()
    finally:
        stop_process(supervisord, timeout=40)
