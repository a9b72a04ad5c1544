"""How to start, reload and stop each server under comparison.

Every server runs in its own session (process group), so stopping it kills the group
by the PID we started: orphaned workers of a master that died go too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from releases import Site

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS_VENV = BENCH / ".venv-peers"
PEER_PINS = {"gunicorn": "27.0.1", "uwsgi": "2.0.31"}
WORKERS = 2
# Threads per worker, the same for all three: unbroken's default of 1 would let the two
# slow clients hold both workers and stall every fast request behind them.
THREADS = 4
STOP_TIMEOUT = 5.0
UNBROKEN_RELOAD_TIMEOUT = 60.0
# Run the CLI from this checkout even when it is not installed.
UNBROKEN_ENTRY = "import sys; from unbroken.cli.main import main; sys.exit(main())"


@dataclass(frozen=True)
class ReloadResult:
    """What triggering a reload said: its wall time if it reports one, and a note."""

    wall: float | None
    note: str


def peers_bin(name: str) -> Path:
    return PEERS_VENV / "bin" / name


def installed_peer_versions() -> dict[str, str]:
    """The pinned peers' installed versions in the venv, empty if it is missing."""
    python = peers_bin("python")
    if not python.exists():
        return {}
    script = "import importlib.metadata as m, sys\nfor n in sys.argv[1:]: print(m.version(n))"
    done = subprocess.run(
        [str(python), "-c", script, *PEER_PINS], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        return {}
    return dict(zip(PEER_PINS, done.stdout.split(), strict=False))


def ensure_peers() -> None:
    """Create bench/.venv-peers with the pinned gunicorn and uWSGI unless already there."""
    if installed_peer_versions() == PEER_PINS:
        return
    print(f"installing {PEER_PINS} into {PEERS_VENV} (uWSGI compiles; a minute or two)")
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True, timeout=120)
    pins = [f"{name}=={version}" for name, version in PEER_PINS.items()]
    pip = [str(peers_bin("python")), "-m", "pip", "install", "--quiet", *pins]
    subprocess.run(pip, check=True, timeout=900)


def unbroken_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def unbroken_argv() -> list[str]:
    """The `unbroken` command: the installed script, else this checkout's CLI."""
    script = shutil.which("unbroken")
    return [script] if script else [sys.executable, "-c", UNBROKEN_ENTRY]


def unbroken_missing() -> str | None:
    """Why unbroken cannot be benchmarked yet, or None if `unbroken serve` exists."""
    try:
        done = subprocess.run(
            [*unbroken_argv(), "serve", "--help"],
            capture_output=True, text=True, timeout=20, env=unbroken_env(),
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`unbroken serve --help` failed: {error}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        return f"`unbroken serve --help` exited {done.returncode}: {lines[-1]}"
    return None


def server_argv(server: str, site: Site, port: int) -> list[str]:
    """The command line that serves `app:app` from site/current on 127.0.0.1:port."""
    bind = f"127.0.0.1:{port}"
    current = str(site.current)
    if server == "unbroken":
        return [
            *unbroken_argv(), "serve", "app:app", "--chdir", current, "-b", bind,
            "-w", str(WORKERS), "--threads", str(THREADS),
            "--control", str(site.control_socket),
        ]  # fmt: skip
    if server == "gunicorn":
        return [
            str(peers_bin("gunicorn")), "app:app", "--chdir", current, "-b", bind,
            "-w", str(WORKERS), "-k", "gthread", "--threads", str(THREADS),
        ]  # fmt: skip
    if server == "uwsgi":
        # --http11-socket, not --http-socket: the latter answers HTTP/1.1 without
        # `Connection: close` and then closes, so every second keep-alive request
        # fails before any reload. --pythonpath: --chdir alone pins the master's cwd
        # to the v1 directory (an inode, not the symlink), so a chain reload would
        # re-import v1.
        return [
            str(peers_bin("uwsgi")), "--http11-socket", bind, "--master", "--lazy-apps",
            "--processes", str(WORKERS), "--threads", str(THREADS),
            "--master-fifo", str(site.fifo), "--chdir", current, "--pythonpath", current,
            "--module", "app:app", "--die-on-term",
        ]  # fmt: skip
    raise ValueError(f"unknown server {server!r}")


def start_server(server: str, site: Site, port: int) -> subprocess.Popen[bytes]:
    """Start a server in a new session with its output in site/<server>.log."""
    env = unbroken_env() if server == "unbroken" else dict(os.environ)
    with site.log(server).open("ab") as log:
        return subprocess.Popen(
            server_argv(server, site, port),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, cwd=site.root, start_new_session=True,
        )  # fmt: skip


def trigger_reload(server: str, master: subprocess.Popen[bytes], site: Site) -> ReloadResult:
    """Ask the server to load site/current again.

    unbroken's `reload` blocks until the rollout is decided, so it reports its own
    wall time; the peers only accept the request and the caller watches traffic.
    """
    if server == "unbroken":
        return _unbroken_reload(site)
    if server == "gunicorn":
        os.kill(master.pid, signal.SIGHUP)
        return ReloadResult(None, "HUP")
    if server == "uwsgi":
        # O_NONBLOCK: if the master is gone nobody reads the fifo, and a blocking
        # open would hang the bench.
        descriptor = os.open(site.fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(descriptor, b"c")
        finally:
            os.close(descriptor)
        return ReloadResult(None, "chain reload")
    raise ValueError(f"unknown server {server!r}")


def _unbroken_reload(site: Site) -> ReloadResult:
    argv = [*unbroken_argv(), "reload", "--control", str(site.control_socket)]
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=UNBROKEN_RELOAD_TIMEOUT,
            env=unbroken_env(),
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return ReloadResult(None, f"reload did not return in {UNBROKEN_RELOAD_TIMEOUT:.0f} s")
    wall = time.monotonic() - started
    lines = (done.stderr or done.stdout).strip().splitlines()
    said = f": {lines[-1][:80]}" if lines else ""
    return ReloadResult(wall, f"reload exit {done.returncode}{said}")


def stop_server(master: subprocess.Popen[bytes]) -> None:
    """TERM the server's process group, then KILL it; every wait has a deadline."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(master.pid, sig)
        except ProcessLookupError:
            break  # the whole group is gone
        if _group_gone(master, time.monotonic() + STOP_TIMEOUT):
            break
    try:
        master.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"warning: pid {master.pid} survived SIGKILL", file=sys.stderr)


def _group_gone(master: subprocess.Popen[bytes], deadline: float) -> bool:
    """Reap the leader and poll until no process is left in its group or time is up."""
    while time.monotonic() < deadline:
        master.poll()
        try:
            os.killpg(master.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False
