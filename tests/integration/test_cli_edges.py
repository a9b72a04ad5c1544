"""The command line against real services: `status | head`, a wrong or too long --name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from unbroken.control.paths import UNIX_PATH_LIMIT, choose_control_path, control_directories

UNBROKEN = [sys.executable, "-m", "unbroken"]


def _run(*args: str, env: dict[str, str] | None = None,
         **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*UNBROKEN, *args], capture_output=True, text=True, timeout=60,
                          env=env, **kwargs)


def test_status_into_a_closed_pipe_exits_quietly(service_factory: Any) -> None:
    service = service_factory(workers=2)
    service.wait_serving()
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before anything is written: EPIPE for sure
    try:
        for command in ("status", "history"):
            ran = subprocess.run([*UNBROKEN, command, "--control", service.control],
                                 stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60)
            assert (ran.returncode, ran.stderr) == (0, ""), ran.stderr
    finally:
        os.close(writer)


def test_status_piped_into_head_says_nothing_else(service_factory: Any) -> None:
    service = service_factory(workers=2)
    service.wait_serving()
    ran = subprocess.run(
        ["bash", "-c", 'set -o pipefail; "$@" | head -n 1', "-", *UNBROKEN, "status",
         "--control", service.control], capture_output=True, text=True, timeout=60)
    assert (ran.returncode, ran.stderr) == (0, ""), ran.stderr
    assert ran.stdout.startswith("unbroken: master ")


def test_a_wrong_name_lists_the_services_and_where_it_looked(
        service_factory: Any, tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    control = runtime / "unbroken" / "shop.sock"
    service = service_factory("--control", str(control))  # the last --control wins
    service.control = str(control)
    service.wait_serving()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    ran = _run("status", "--name", "shpo", env=env)
    assert ran.returncode == 1
    lines = ran.stderr.splitlines()
    assert len(lines) == 1, ran.stderr
    # Services of other tests may be running elsewhere: listed around ours.
    uid = os.geteuid()
    tried = choose_control_path("shpo", uid)
    looked = " and ".join(dict.fromkeys([
        os.path.dirname(os.path.dirname(tried)) if tried.endswith("/control.sock")
        else os.path.dirname(tried),
        *control_directories(uid, env)]))
    expected = (rf"unbroken: no unbroken service at {re.escape(tried)}; running: "
                rf"(--name \S+, )*--name shop(, --name \S+)* \(looked in {re.escape(looked)}\)")
    assert re.fullmatch(expected, lines[0]), lines[0]
    named = _run("status", "--name", "shop", env=env)
    assert named.returncode == 0 and named.stdout.startswith("unbroken: master ")
    reload = _run("reload", "--name", "shpo", env=env)
    assert reload.returncode == 1 and reload.stderr == ran.stderr


def test_a_too_long_name_names_the_limit_and_the_path(tmp_path: Path) -> None:
    env = dict(os.environ)
    name = "n" * 100
    path = choose_control_path(name, os.geteuid())  # what the master and a client pick
    expected = (f"unbroken: control socket path {path} is {len(path)} bytes, over the "
                f"{UNIX_PATH_LIMIT}-byte limit of a unix socket path: give a shorter --name, "
                "or --control PATH")
    for args in (("serve", "app:app", "--name", name), ("status", "--name", name)):
        ran = _run(*args, env=env, cwd=tmp_path)
        assert ran.returncode == 2
        assert ran.stderr.splitlines() == [expected], ran.stderr


def test_a_mistake_on_the_command_line_is_one_line_from_the_real_process(
        tmp_path: Path) -> None:
    cases = {
        ("serve", "--master", "app:app"):
            "unbroken: error: unknown option --master: unbroken always runs a master: "
            "remove --master",
        ("serve", "--reload", "app:app"):
            "unbroken: error: unknown option --reload: unbroken does not watch the code: "
            "reload with `unbroken reload`, SIGHUP, or --reload-on-touch FILE",
        ("serve", "-w", "many", "app:app"):
            "unbroken: error: argument -w/--workers: 'many' is not a whole number",
    }
    for args, line in cases.items():
        ran = _run(*args, cwd=tmp_path)
        assert (ran.returncode, ran.stderr.splitlines(), ran.stdout) == (2, [line], "")


def test_gevent_missing_names_the_extra(tmp_path: Path) -> None:
    # gevent is installed for the tests: hide it the way a missing package looks.
    hidden = ("import sys; sys.modules['gevent'] = None; from unbroken.cli.main import main; "
              "sys.exit(main())")
    ran = subprocess.run([sys.executable, "-c", hidden, "serve", "-k", "gevent", "app:app"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert ran.returncode == 2
    assert ran.stderr.splitlines() == [
        "unbroken: -k gevent needs gevent, which is not installed: pip install "
        "'unbroken[gevent]'"]
