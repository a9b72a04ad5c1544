"""The service on a host: one `unbroken serve` master with a stable PID under the host's
supervisor, started from the host's own unbroken install and from no release.

Where systemd runs (PID 1 is systemd) a unit is written: a system unit as root, a user
unit otherwise. Elsewhere a supervisord of the deploy user's own runs the program,
with its socket and pid file in `<deploy_to>/run`. Either way the master's command
line is the same: `--chdir <deploy_to>/current --python .venv/bin/python`, resolved
again at every reload, so a switched `current` is what the next generation runs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from typing import Any

from unbroken.control.client import ControlUnavailable, call
from unbroken.deploy.hostfiles import AgentError, read_json, write_json
from unbroken.deploy.layout import Layout


def serve_argv(layout: Layout, serve: list[str]) -> list[str]:
    return [os.path.join(layout.tool_venv, "bin", "unbroken"), "serve", *serve,
            "--chdir", layout.current, "--python", os.path.join(".venv", "bin", "python"),
            "--control", layout.control, "--name", layout.app]


def _supervisord_conf(layout: Layout) -> str:
    return os.path.join(layout.state, "supervisord.conf")


def _systemd_unit(layout: Layout) -> str:
    name = f"unbroken-{layout.app}.service"
    if os.geteuid() == 0:
        return os.path.join("/etc/systemd/system", name)
    return os.path.expanduser(os.path.join("~/.config/systemd/user", name))


def manager(choice: str = "auto") -> str:
    if choice != "auto":
        return choice
    return "systemd" if os.path.isdir("/run/systemd/system") and shutil.which("systemctl") \
        else "supervisord"


def describe(layout: Layout) -> dict[str, Any] | None:
    return read_json(os.path.join(layout.state, "service.json"))


def install(layout: Layout, serve: list[str], choice: str) -> dict[str, Any]:
    """Write the service definition; idempotent. A changed definition of a running
    master is written but not applied: restarting a master is the one thing a
    deploy never does by itself (it would close the listening sockets)."""
    kind = manager(choice)
    argv = serve_argv(layout, serve)
    old = describe(layout)
    changed = old is None or old.get("argv") != argv or old.get("manager") != kind
    if kind == "systemd":
        _write_if_changed(_systemd_unit(layout), _unit_text(layout, argv))
    else:
        _write_if_changed(_supervisord_conf(layout), _supervisord_text(layout, argv))
    write_json(os.path.join(layout.state, "service.json"),
               {"manager": kind, "argv": argv, "serve": serve})
    running = _master_alive(layout)
    if kind == "systemd":
        _systemctl(["daemon-reload"])
        _systemctl(["enable", f"unbroken-{layout.app}.service"])
    note = "definition changed; restart the service to apply it" if running and changed \
        else "unchanged" if not changed else "written"
    started = False
    if not running and os.path.lexists(layout.current):
        start(layout, 120)
        started = True
    return {"manager": kind, "changed": changed, "note": note, "started": started}


def _write_if_changed(path: str, text: str) -> None:
    try:
        with open(path) as handle:
            if handle.read() == text:
                return
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def _supervisord_text(layout: Layout, argv: list[str]) -> str:
    run, state = layout.run, layout.state
    return f"""\
; Written by `unbroken deploy setup`; run again to change it.
[unix_http_server]
file={run}/supervisord.sock
chmod=0700

[supervisord]
logfile={layout.logs}/supervisord.log
pidfile={run}/supervisord.pid
directory={layout.deploy_to}
childlogdir={layout.logs}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{run}/supervisord.sock

[program:{layout.app}]
command={shlex.join(argv)}
directory={layout.deploy_to}
autostart=true
autorestart=true
startsecs=0
stopsignal=TERM
stopwaitsecs=90
stopasgroup=false
redirect_stderr=true
stdout_logfile={layout.logs}/{layout.app}.log
environment=HOME="{os.path.expanduser('~')}",UNBROKEN_STATE="{state}"
"""


def _unit_text(layout: Layout, argv: list[str]) -> str:
    return f"""\
# Written by `unbroken deploy setup`; run again to change it.
[Unit]
Description=unbroken: {layout.app}
After=network.target

[Service]
Type=notify
NotifyAccess=all
ExecStart={shlex.join(argv)}
ExecReload=/bin/kill -HUP $MAINPID
WorkingDirectory={layout.deploy_to}
KillMode=mixed
TimeoutStopSec=90
Restart=on-failure

[Install]
WantedBy={'multi-user.target' if os.geteuid() == 0 else 'default.target'}
"""


def _systemctl(arguments: list[str]) -> None:
    command = ["systemctl", *([] if os.geteuid() == 0 else ["--user"]), *arguments]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if finished.returncode != 0:
        raise AgentError(f"{shlex.join(command)} failed", finished.stderr)


def _supervisorctl(layout: Layout, arguments: list[str]) -> subprocess.CompletedProcess[str]:
    command = [os.path.join(layout.tool_venv, "bin", "supervisorctl"),
               "-c", _supervisord_conf(layout), *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _supervisord_alive(layout: Layout) -> bool:
    try:
        with open(os.path.join(layout.run, "supervisord.pid")) as handle:
            os.kill(int(handle.read().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def _master_alive(layout: Layout) -> bool:
    try:
        return call(layout.control, "status", timeout=5).ok
    except (ControlUnavailable, OSError):
        return False


def start(layout: Layout, timeout: float) -> dict[str, Any]:
    """Start the master (first release, or after it was stopped) and wait until it serves."""
    info = describe(layout)
    if info is None:
        raise AgentError("no service on this host: run `unbroken deploy setup`")
    if info["manager"] == "systemd":
        _systemctl(["start", f"unbroken-{layout.app}.service"])
    elif not _supervisord_alive(layout):
        finished = subprocess.run(
            [os.path.join(layout.tool_venv, "bin", "supervisord"), "-c",
             _supervisord_conf(layout)], capture_output=True, text=True, timeout=60)
        if finished.returncode != 0:
            raise AgentError("supervisord did not start", finished.stderr + finished.stdout)
    else:
        _supervisorctl(layout, ["start", layout.app])
    return {"seconds": _wait_serving(layout, timeout)}


def _wait_serving(layout: Layout, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            reply = call(layout.control, "status", timeout=5)
            if reply.ok and reply.data["phase"] == "serving":
                return round(time.monotonic() - started, 2)
        except (ControlUnavailable, OSError):
            pass
        time.sleep(0.1)
    raise AgentError(f"the service did not start serving within {timeout:g}s",
                     log_tail(layout))


def log_tail(layout: Layout, lines: int = 40) -> str:
    """The last lines the service wrote: the traceback of a worker that died."""
    try:
        with open(os.path.join(layout.logs, f"{layout.app}.log"), errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def stop(layout: Layout) -> None:
    info = describe(layout)
    if info is None:
        return
    if info["manager"] == "systemd":
        _systemctl(["stop", f"unbroken-{layout.app}.service"])
    elif _supervisord_alive(layout):
        _supervisorctl(layout, ["stop", layout.app])
