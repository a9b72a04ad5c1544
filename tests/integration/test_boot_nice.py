"""--boot-nice (issue 15, item 4): a booting worker imports at a lower CPU priority and
is back at the master's before it serves, every thread of it, including one the app
started while importing. The master runs at nice 3, so "back" is not just "zero"."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from processes import stop_process
from waiting import wait_until

from unbroken.control.client import call

APP = '''
import json, os, threading, time

def _nice_of(thread):
    return os.getpriority(os.PRIO_PROCESS, thread)

with open({record!r}, "a") as record:
    record.write(json.dumps({{"pid": os.getpid(), "importing": _nice_of(0)}}) + "\\n")
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()  # born niced
time.sleep(0.3)

def app(environ, start_response):
    tasks = {{int(t): _nice_of(int(t)) for t in os.listdir("/proc/self/task")}}
    body = json.dumps({{"pid": os.getpid(), "threads": tasks}}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''
MASTER_NICE = 3

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lowering a nice needs root")


def _start(root: Path, listener: socket.socket, *flags: str) -> subprocess.Popen[bytes]:
    fd = listener.fileno()
    command = ["nice", "-n", str(MASTER_NICE), sys.executable, "-m", "unbroken", "serve",
               "app:app", "--chdir", str(root), "-b", f"fd://{fd}", "-w", "1",
               "--control", str(root / "ctl.sock"), *flags]
    log = open(root / "service.log", "wb")  # noqa: SIM115 -- the child holds it
    with log:
        return subprocess.Popen(command, pass_fds=(fd,), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _served(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            answer: dict[str, object] = json.loads(response.read())
            return answer
    except OSError:
        return None


@pytest.mark.parametrize(("flags", "booting"), [((), MASTER_NICE + 10),
                                                (("--boot-nice", "0"), MASTER_NICE)])
def test_a_worker_imports_niced_and_serves_at_the_master_s_nice(
        tmp_path: Path, flags: tuple[str, ...], booting: int) -> None:
    record = tmp_path / "imports"
    (tmp_path / "app.py").write_text(APP.format(record=str(record)))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    process = _start(tmp_path, listener, *flags)
    try:
        port = listener.getsockname()[1]
        first = wait_until(lambda: _served(port), timeout=20, message="a first answer")
        # The first start is not niced: no worker serves yet whose CPU it would protect.
        assert json.loads(record.read_text().splitlines()[0])["importing"] == MASTER_NICE
        assert call(str(tmp_path / "ctl.sock"), "reload", timeout=60).ok
        answer = wait_until(lambda: (a := _served(port)) and a["pid"] != first["pid"] and a,
                            timeout=20, message="an answer from the reloaded worker")
        imported = json.loads(record.read_text().splitlines()[1])
        assert imported == {"pid": answer["pid"], "importing": booting}
        threads = answer["threads"]
        assert isinstance(threads, dict) and len(threads) >= 2  # the import's thread too
        assert set(threads.values()) == {MASTER_NICE}, threads
    finally:
        stop_process(process)
        listener.close()


STAND_IN = '''
import json, os, runpy, sys, types

def main(priority):
    print(json.dumps({"nice": os.getpriority(os.PRIO_PROCESS, 0),
                      "asyncio_loaded": "asyncio" in sys.modules,
                      "restores_to": priority.restore_to if priority else None}))

stand_in = types.ModuleType("unbroken.worker.main")
stand_in.main = main
sys.modules["unbroken.worker.main"] = stand_in
runpy.run_module("unbroken.worker", run_name="__main__")
'''


def test_the_master_nices_a_worker_before_its_interpreter_starts(tmp_path: Path) -> None:
    # The worker's interpreter is a wrapper (--python) that notes its nice before it
    # execs Python: that is the nice the interpreter starts at. It waits a moment
    # first, as the interpreter's own start would, for the master's setpriority.
    record = tmp_path / "interpreter"
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\nsleep 0.2\nnice >> {record}\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    (tmp_path / "app.py").write_text(APP.format(record=str(tmp_path / "imports")))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    process = _start(tmp_path, listener, "--python", str(wrapper))
    try:
        port = listener.getsockname()[1]
        first = wait_until(lambda: _served(port), timeout=20, message="a first answer")
        assert call(str(tmp_path / "ctl.sock"), "reload", timeout=60).ok
        answer = wait_until(lambda: (a := _served(port)) and a["pid"] != first["pid"] and a,
                            timeout=20, message="an answer from the reloaded worker")
        # The first start is not niced (no worker serves yet); the reload's worker is,
        # from before its interpreter ran, and serves at the master's nice.
        assert record.read_text().split() == [str(MASTER_NICE), str(MASTER_NICE + 10)]
        threads = answer["threads"]
        assert isinstance(threads, dict) and set(threads.values()) == {MASTER_NICE}, threads
    finally:
        stop_process(process)
        listener.close()


@pytest.mark.parametrize(("boot_nice", "expected"), [(5, 5), (0, 0)])
def test_the_nice_is_raised_before_the_worker_s_own_imports(boot_nice: int,
                                                            expected: int) -> None:
    # `python -m unbroken.worker` as the master starts it, with unbroken.worker.main
    # replaced by a stand-in that reports the process as the real one would find it:
    # niced already, and asyncio (the worker's heaviest import) not yet loaded.
    spec = json.dumps({"worker_class": "sync", "boot_nice": boot_nice})
    done = subprocess.run([sys.executable, "-c", STAND_IN], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "UNBROKEN_WORKER": spec},
                          preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, 0))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {"nice": expected, "asyncio_loaded": False,
                    "restores_to": 0 if boot_nice else None}


def test_a_worker_the_master_niced_goes_back_to_the_master_s_nice() -> None:
    # Started at nice 7 by a master at nice 0 (niced_from): the worker does not nice
    # itself further, and restores to 0, not to the 7 it found.
    spec = json.dumps({"worker_class": "sync", "boot_nice": 10, "niced_from": 0})
    done = subprocess.run([sys.executable, "-c", STAND_IN], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "UNBROKEN_WORKER": spec},
                          preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, 7))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"nice": 7, "asyncio_loaded": False, "restores_to": 0}
