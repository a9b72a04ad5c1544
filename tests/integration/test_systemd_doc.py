"""docs/systemd.md's unit, run the way systemd runs it.

systemd is not PID 1 where the tests run, so the test does what systemd does for the
unit: it makes `RuntimeDirectory=` below /run owned by `User=` (the parents root's), sets
`RUNTIME_DIRECTORY` and runs `ExecStart=` as that user from `WorkingDirectory=`. The
control socket must land in that directory, and `ExecReload=` must reach it with systemd's
environment and from an empty one (a shell's `sudo -u`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
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

DOC = Path(__file__).resolve().parents[2] / "docs" / "systemd.md"
NAME = "ubtsdapp"
APP = '''\
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"{version}"]
'''


def unit() -> dict[str, str]:
    (block,) = [b for b in re.findall(r"^```ini\n(.*?)^```", DOC.read_text(),
                                       re.MULTILINE | re.DOTALL) if "[Service]" in b]
    joined = re.sub(r"\\\n\s*", "", block)  # systemd's line continuations
    return dict(line.split("=", 1) for line in joined.splitlines()
                if "=" in line and not line.startswith("#"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def scratch() -> Iterator[Path]:
    need_root_tools("setpriv")
    path = open_directory("ubt-systemd-doc-")
    try:
        with system_user(NAME):
            need_runnable(NAME, path)
            yield path
    finally:
        shutil.rmtree(f"/run/unbroken/{NAME}", ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)


def test_the_units_runtime_directory_is_where_the_control_socket_lands(
        scratch: Path) -> None:
    settings = unit()
    port = free_port()

    def named(text: str) -> str:
        return (text.replace("/srv/myapp", str(scratch))
                .replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("myapp", NAME))

    user = named(settings["User"])
    runtime = Path("/run") / named(settings["RuntimeDirectory"])
    assert runtime == Path(f"/run/unbroken/{NAME}")
    runtime.parent.mkdir(mode=0o755, exist_ok=True)  # systemd: parents are root's
    runtime.mkdir(mode=0o755)  # RuntimeDirectoryMode= defaults to 0755
    shutil.chown(runtime, user, user)
    for version in ("v1", "v2", "v3"):
        package = scratch / "releases" / version / NAME
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "wsgi.py").write_text(APP.format(version=version))
    (scratch / "current").symlink_to(scratch / "releases" / "v1")
    (scratch / "venv" / "bin").mkdir(parents=True)
    unbroken_wrapper(scratch / "venv" / "bin")
    environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "USER": user,
                   "LOGNAME": user, "HOME": "/nonexistent",
                   "RUNTIME_DIRECTORY": str(runtime)}  # what systemd sets for the unit

    def as_user(line: str) -> list[str]:
        return traversable(user, ["setpriv", f"--reuid={user}", f"--regid={user}",
                                  "--init-groups", "--", "sh", "-c", f"exec {line}"], scratch)

    def answer() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as got:
            return str(got.read().decode())

    def switch(version: str) -> None:
        (scratch / "current").unlink()
        (scratch / "current").symlink_to(scratch / "releases" / version)

    log_path = scratch / "unit.log"
    with open(log_path, "wb") as log:
        master = subprocess.Popen(as_user(named(settings["ExecStart"])),
                                  cwd=named(settings["WorkingDirectory"]), env=environment,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        control = runtime / "control.sock"
        deadline = time.monotonic() + 30
        while True:
            assert master.poll() is None, log_path.read_text()
            try:
                if answer() == "v1":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        assert control.is_socket() and control.owner() == user, sorted(os.listdir(runtime))

        reload = named(settings["ExecReload"])
        switch("v2")
        done = subprocess.run(as_user(reload), env=environment,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (done, log_path.read_text())
        assert answer() == "v2"

        switch("v3")  # the same line from an empty environment: no RUNTIME_DIRECTORY
        done = subprocess.run(as_user(reload), env={}, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, (done, log_path.read_text())
        assert answer() == "v3"
    finally:
        stop_process(master, signal.SIGTERM, timeout=40)  # KillMode=mixed: TERM to the master
    assert master.returncode == 0, log_path.read_text()
