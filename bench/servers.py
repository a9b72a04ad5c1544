"""How to start, reload and stop each server under comparison.

Every server runs in its own session (process group), so stopping it kills the group
by the PID we started: orphaned workers of a master that died go too.
"""

from __future__ import annotations

import functools
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
# The peers and what they need, pinned so every run measures the same code. uvicorn gets
# uvloop and httptools (its "standard" speed-ups) so it is measured at its best;
# matplotlib draws the speed suite's chart and lives here, not in unbroken's install.
# unbroken runs from this venv too (its source from src/, its dependencies from here:
# httptools, uvloop, rich, wsproto), so every server has the same interpreter and the
# same site-packages: a fuller environment would cost each of its workers memory.
PEER_PINS = {
    "gunicorn": "27.0.1",
    "uwsgi": "2.0.31",
    "uvicorn": "0.54.0",
    "uvloop": "0.23.0",
    "httptools": "0.9.0",
    "granian": "2.8.7",
    "matplotlib": "3.11.2",
    "rich": "15.0.0",
    "wsproto": "1.3.2",
}
# Every server under comparison. The WSGI ones serve `app`, the ASGI ones `asgi_app`:
# the same release module, so they all import the same code at the same cost.
SERVERS = ("unbroken", "gunicorn", "uwsgi", "unbroken-asgi", "uvicorn", "granian")
UNBROKEN_SERVERS = frozenset({"unbroken", "unbroken-asgi"})
PEER_SERVERS = frozenset(SERVERS) - UNBROKEN_SERVERS
WORKERS = 2
# Threads per worker for the WSGI servers, the same for all three: unbroken's default of
# 1 would let the two slow clients hold both workers and stall every fast request behind
# them. The ASGI servers need none: a slow request awaits, it does not hold a thread.
THREADS = 4
# unbroken's default --reload-surge (see `unbroken serve --help`): 0 boots the whole new
# generation before the old one drains, which is a surge of WORKERS. The bench leaves it
# at the default, so the goal's wall-time bound is computed from it.
UNBROKEN_DEFAULT_SURGE = 0
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
    """Create bench/.venv-peers with the pinned peers unless they are already there."""
    if _peers_ready():
        return
    print(f"installing {PEER_PINS} into {PEERS_VENV} (uWSGI compiles; a minute or two)")
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True, timeout=120)
    pins = [f"{name}=={version}" for name, version in PEER_PINS.items()]
    pip = [str(peers_bin("python")), "-m", "pip", "install", "--quiet", *pins]
    subprocess.run(pip, check=True, timeout=900)
    _peers_ready.cache_clear()


def unbroken_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


@functools.cache
def _peers_ready() -> bool:
    """Asked once per run (it starts a Python); ensure_peers() forgets the answer."""
    return installed_peer_versions() == PEER_PINS


def unbroken_argv() -> list[str]:
    """The `unbroken` command: this checkout's CLI run by the peers' venv Python (see
    PEER_PINS), else by the installed script or this Python (the smoke test, no venv)."""
    if _peers_ready():
        return [str(peers_bin("python")), "-c", UNBROKEN_ENTRY]
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
    """The command line that serves the app from site/current on 127.0.0.1:port.

    Each server is pointed at the `current` symlink path, never at the release it
    resolves to now, and each resolves it again when a reload starts new workers
    (checked in their sources; see bench/README.md), so a reload imports v2.
    """
    bind = f"127.0.0.1:{port}"
    current = str(site.current)
    if server == "unbroken":
        return [
            *unbroken_argv(), "serve", "app:app", "--chdir", current, "-b", bind,
            "-w", str(WORKERS), "--threads", str(THREADS),
            "--control", str(site.control_socket),
        ]  # fmt: skip
    if server == "unbroken-asgi":
        return [
            *unbroken_argv(), "serve", "app:asgi_app", "-k", "asgi", "--chdir", current,
            "-b", bind, "-w", str(WORKERS), "--control", str(site.control_socket),
        ]  # fmt: skip
    if server == "uvicorn":
        # --app-dir puts the symlink path itself on sys.path; each worker is a fresh
        # spawned interpreter that imports the app through it, so a SIGHUP restart
        # imports whatever `current` points at then.
        return [
            str(peers_bin("uvicorn")), "app:asgi_app", "--app-dir", current,
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log",
        ]  # fmt: skip
    if server == "granian":
        # --working-dir is resolved (Path.resolve) by each new worker before it imports
        # the app, so a worker started by SIGHUP imports the release `current` points
        # at then. Access log is off by default. --respawn-interval stays at its
        # default of 3.5 s: how long a reload waits after starting a new worker before
        # stopping the old one (a fixed sleep, not a readiness check).
        return [
            str(peers_bin("granian")), "--interface", "asgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(WORKERS), "--loop", "uvloop",
            "--working-dir", current, "app:asgi_app",
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


def start_server(server: str, site: Site, port: int,
                 extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start a server in a new session with its output in site/<server>.log; `extra`
    flags go after the command line (bench/reload_spike.py's `--boot-nice 0`)."""
    env = unbroken_env() if server in UNBROKEN_SERVERS else dict(os.environ)
    with site.log(server).open("ab") as log:
        return subprocess.Popen(
            [*server_argv(server, site, port), *extra],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, cwd=site.root, start_new_session=True,
        )  # fmt: skip


def trigger_reload(server: str, master: subprocess.Popen[bytes], site: Site) -> ReloadResult:
    """Ask the server to load site/current again.

    unbroken's `reload` blocks until the rollout is decided, so it reports its own
    wall time; the peers only accept the request and the caller watches traffic.
    uvicorn's and granian's masters queue SIGHUP and act on it in their main loop:
    uvicorn replaces one worker at a time, each new one ready (health-checked) before
    the old one gets SIGTERM; granian starts a new worker, sleeps --respawn-interval,
    then stops the old one, one worker at a time.
    """
    if server in UNBROKEN_SERVERS:
        return _unbroken_reload(site)
    if server in ("gunicorn", "uvicorn", "granian"):
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
