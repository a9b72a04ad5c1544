"""As a container's init (PID 1, here in a PID namespace of our own) the master reaps
the orphans an app leaves behind, and still reaps and replaces its own workers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import stop_process
from release import write_release

from unbroken.control.client import ControlUnavailable, call

ORPHAN_MAKER = '''
import subprocess, sys
if sys.argv[0].endswith("__main__.py"):
    # `sh` exits at once; its `sleep` is re-parented to PID 1 and exits 0.2 s later.
    subprocess.Popen(["/bin/sh", "-c", "sleep 0.2 & exit 0"])
'''


def _children(pid: int) -> list[tuple[int, str, str]]:
    """(pid, state, command) of the processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        command = stat[stat.index("(") + 1:stat.rindex(")")]
        state, parent = stat[stat.rindex(")") + 2:].split()[:2]
        if int(parent) == pid:
            found.append((int(entry.name), state, command))
    return found


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="a PID namespace needs root and util-linux's unshare")
def test_the_master_as_pid_1_reaps_orphans_and_its_own_workers(tmp_path: Path) -> None:
    release = write_release(tmp_path, "v1")
    with open(release / "app.py", "a") as handle:
        handle.write(ORPHAN_MAKER)
    control = str(tmp_path / "ctl.sock")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    outer = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-m", "unbroken",
         "serve", "app:app", "--chdir", str(release), "-w", "2", "-b",
         f"fd://{listener.fileno()}", "--control", control],
        pass_fds=(listener.fileno(),), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        state: dict[str, object] = {}
        while time.monotonic() < deadline:
            try:
                state = call(control, "status", timeout=2).data
                if state.get("phase") == "serving":
                    break
            except (ControlUnavailable, OSError):
                pass
            time.sleep(0.05)
        assert state.get("master_pid") == 1, state
        (master,) = [pid for pid, _, _ in _children(outer.pid)]
        workers = {pid for pid, _, command in _children(master) if command == "python"}
        time.sleep(1.5)  # the orphaned `sleep`s have exited; were they reaped?
        zombies = [child for child in _children(master) if child[1] == "Z"]
        assert zombies == [], zombies
        # Its own workers are still reaped as workers: one killed is replaced.
        before = {w["pid"] for w in state["workers"]}  # type: ignore[attr-defined]
        os.kill(min(workers), signal.SIGKILL)
        deadline = time.monotonic() + 20
        now = state
        while time.monotonic() < deadline:
            now = call(control, "status", timeout=2).data
            pids = {w["pid"] for w in now["workers"]}
            if len(pids) == 2 and pids != before and all(
                    w["state"] == "ready" for w in now["workers"]):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the killed worker was not replaced: {now}")
    finally:
        try:  # unshare does not pass SIGTERM on: stop the master itself
            call(control, "stop", timeout=20)
        except (ControlUnavailable, OSError):
            pass
        stop_process(outer, timeout=10)
        listener.close()
