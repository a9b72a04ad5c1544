"""The servers bench/speed.py compares, how each is started, and how its workers are found.

Every server gets the same app module, 2 workers, 127.0.0.1 and no access log; a server
with threads gets 4 per worker. Starting, stopping and the peers' venv come from
servers.py, shared with the reload bench, so both benches measure the same installs.
"""

from __future__ import annotations

import http.client
import importlib.metadata
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import servers

APPS = servers.BENCH / "speed_apps"
WORKERS = servers.WORKERS
THREADS = servers.THREADS
READY_TIMEOUT = 20.0
CHART_TIMEOUT = 120.0
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")  # /proc/<pid>/stat counts CPU time in these
# A first answer means one worker is up; the others may still be importing the app.
ALL_WORKERS_TIMEOUT = 5.0
# Helper processes of multiprocessing-based masters (uvicorn) that are not workers.
NOT_WORKERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")

Argv = Callable[[list[str], int, Path], list[str]]


@dataclass(frozen=True)
class Server:
    """One row of the table: a program in one configuration."""

    key: str
    label: str
    interface: str  # "wsgi" or "asgi"
    program: str  # what runs: unbroken, or the peer's name in PEER_PINS
    argv: Argv  # (program's command, port, run dir) -> full command line


def _unbroken(kind: str, threads: int = 1) -> Argv:
    def argv(program: list[str], port: int, run_dir: Path) -> list[str]:
        # --threads 1 is the default: WSGI requests are then served on the event loop
        # (src/unbroken/engines/wsgi/engine.py, rule 2); N > 1 runs every request in a pool.
        threads_flag = ["--threads", str(threads)] if threads != 1 else []
        # Its own control socket: the default path is shared by every `unbroken` on
        # the machine, and the reload bench may be running one.
        return [
            *program, "serve", f"app_{kind}:app", "--chdir", str(APPS),
            "-b", f"127.0.0.1:{port}", "-w", str(WORKERS), "-k", kind, *threads_flag,
            "--control", str(run_dir / "unbroken.sock"),
        ]  # fmt: skip

    return argv


def _gunicorn(worker: str, module: str, extra: tuple[str, ...] = ()) -> Argv:
    def argv(program: list[str], port: int, run_dir: Path) -> list[str]:
        # Its access log is off unless --access-logfile is given.
        return [
            *program, f"{module}:app", "--chdir", str(APPS), "-b", f"127.0.0.1:{port}",
            "-w", str(WORKERS), "-k", worker, *extra,
        ]  # fmt: skip

    return argv


def _uwsgi(program: list[str], port: int, run_dir: Path) -> list[str]:
    # --http11-socket, not --http-socket: the latter closes after each answer without
    # saying `Connection: close`, so keep-alive clients fail (bench/README.md).
    # --need-app: without it a failed import leaves uWSGI up, answering 500.
    return [
        *program, "--http11-socket", f"127.0.0.1:{port}", "--master",
        "--processes", str(WORKERS), "--threads", str(THREADS), "--die-on-term",
        "--chdir", str(APPS), "--pythonpath", str(APPS), "--module", "app_wsgi:app",
        "--need-app", "--disable-logging",
    ]  # fmt: skip


def _granian(kind: str) -> Argv:
    def argv(program: list[str], port: int, run_dir: Path) -> list[str]:
        # WSGI: 4 blocking threads like the others' 4 threads (granian's default is
        # backlog / workers / 2 = 256). ASGI allows only 1, and uses uvloop.
        extra = ["--blocking-threads", str(THREADS)] if kind == "wsgi" else ["--loop", "uvloop"]
        return [
            *program, "--interface", kind, "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(WORKERS), *extra, "--working-dir", str(APPS),
            "--no-access-log", f"app_{kind}:app",
        ]  # fmt: skip

    return argv


def _uvicorn(program: list[str], port: int, run_dir: Path) -> list[str]:
    return [
        *program, "app_asgi:app", "--app-dir", str(APPS), "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(WORKERS), "--loop", "uvloop",
        "--http", "httptools", "--no-access-log",
    ]  # fmt: skip


SERVERS = (
    Server("unbroken-wsgi", "unbroken", "wsgi", "unbroken", _unbroken("wsgi")),
    Server("unbroken-wsgi-threads", f"unbroken --threads {THREADS}", "wsgi", "unbroken",
           _unbroken("wsgi", THREADS)),
    Server("gunicorn-gthread", "gunicorn gthread", "wsgi", "gunicorn",
           _gunicorn("gthread", "app_wsgi", ("--threads", str(THREADS)))),
    Server("gunicorn-sync", "gunicorn sync", "wsgi", "gunicorn", _gunicorn("sync", "app_wsgi")),
    Server("uwsgi", "uWSGI", "wsgi", "uwsgi", _uwsgi),
    Server("granian-wsgi", "granian", "wsgi", "granian", _granian("wsgi")),
    Server("unbroken-asgi", "unbroken", "asgi", "unbroken", _unbroken("asgi")),
    Server("uvicorn", "uvicorn", "asgi", "uvicorn", _uvicorn),
    Server("gunicorn-asgi", "gunicorn asgi", "asgi", "gunicorn",
           _gunicorn("asgi", "app_asgi", ("--asgi-loop", "uvloop"))),
    Server("granian-asgi", "granian", "asgi", "granian", _granian("asgi")),
)  # fmt: skip


class Programs:
    """Where each program comes from: the pinned peers' venv, or (for the smoke test)
    whatever the running Python has, so a quick check needs no venv at all."""

    def __init__(self, *, peers_venv: bool) -> None:
        self.peers_venv = peers_venv
        self._unbroken_missing: str | None = None
        self._unbroken_checked = False

    def command(self, program: str) -> list[str]:
        if program == "unbroken":
            return servers.unbroken_argv()
        if self.peers_venv:
            return [str(servers.peers_bin(program))]
        return [sys.executable, "-m", program]

    def versions(self) -> str:
        """The peers' versions where they come from, for the report."""
        if self.peers_venv:
            found = servers.installed_peer_versions()
            where = f"peers' venv {servers.PEERS_VENV.relative_to(servers.REPO)}"
        else:
            found = {}
            for name in servers.PEER_PINS:
                try:
                    found[name] = importlib.metadata.version(name)
                except importlib.metadata.PackageNotFoundError:
                    continue
            where = f"{sys.executable} (no peers' venv)"
        listed = ", ".join(f"{name} {version}" for name, version in found.items())
        return f"{where}: {listed or 'none installed'}"

    def env(self, program: str) -> dict[str, str]:
        return servers.unbroken_env() if program == "unbroken" else dict(os.environ)

    def missing(self, program: str) -> str | None:
        """Why the program cannot run here, or None."""
        if program == "unbroken":
            if not self._unbroken_checked:
                self._unbroken_missing = servers.unbroken_missing()
                self._unbroken_checked = True
            return self._unbroken_missing
        if self.peers_venv:
            path = servers.peers_bin(program)
            return None if path.exists() else f"{path} is missing"
        if importlib.util.find_spec(program) is None:
            return f"{program} is not installed in {sys.executable}"
        return None


def free_port() -> int:
    """A port free right now; the server binds it itself a moment later (a small race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start(server: Server, programs: Programs, port: int, run_dir: Path,
          log: Path) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start in a new session, so servers.stop_server can end the whole process group."""
    argv = server.argv(programs.command(server.program), port, run_dir)
    with log.open("ab") as output:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            env=programs.env(server.program), cwd=run_dir, start_new_session=True,
        )  # fmt: skip


def run_chart_script(script: Path, data: object, output: Path, what: str) -> bool:
    """Run `script data.json output` with the peers' venv Python, which has matplotlib.

    A chart is a by-product: any failure is a warning naming `what`, and False.
    """
    python = servers.peers_bin("python")
    if not python.exists():
        print(f"no {what}: no peers venv", file=sys.stderr)
        return False
    with tempfile.NamedTemporaryFile("w", suffix=".json") as source:
        json.dump(data, source)
        source.flush()
        try:
            argv = [str(python), str(script), source.name, str(output)]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=CHART_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"no {what}: drawing took over {CHART_TIMEOUT:.0f} s", file=sys.stderr)
            return False
    if done.returncode != 0:
        print(f"no {what}: {done.stderr.strip()[-300:]}", file=sys.stderr)
        return False
    return True


def answers(port: int) -> bool:
    """Whether GET / on 127.0.0.1:`port` answers 200 within a second."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        connection.request("GET", "/")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def wait_ready(master: subprocess.Popen[bytes], port: int, log: Path) -> str | None:
    """None once the app answers and every worker exists, else why not (bounded)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not answers(port):
        if master.poll() is not None:
            return f"exited {master.returncode} before answering: {last_line(log)}"
        if time.monotonic() > deadline:
            return f"no answer in {READY_TIMEOUT:.0f} s: {last_line(log)}"
        time.sleep(0.1)
    deadline = time.monotonic() + ALL_WORKERS_TIMEOUT
    while len(worker_pids(master.pid)) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.1)
    return None


def last_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1][:160] if lines else "no output"


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces; the fields after it do not.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def worker_pids(master: int) -> list[int]:
    """The master's children that serve requests.

    Every server here forks or spawns its workers directly from the PID we started;
    uvicorn also has a multiprocessing helper, which is no worker.
    """
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _parent(int(entry.name)) == master:
            children.append(int(entry.name))
    return sorted(pid for pid in children if not any(h in _cmdline(pid) for h in NOT_WORKERS))


def cpu_ticks(pids: Sequence[int]) -> int:
    """utime + stime of every process in `pids` (all its threads), in clock ticks."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue  # gone: its time is lost, and the run will show it as an outlier
        # Fields after the command name (which may hold spaces): utime is the 14th field
        # of the whole line, the 12th after ")".
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def rss_mib(pid: int) -> float | None:
    """Resident set size (shared pages included, as `ps` shows it), or None if gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def accept_queue(port: int) -> int | None:
    """Connections the kernel accepted on 127.0.0.1:port that no worker has taken yet.

    For a listening socket /proc/net/tcp shows the accept queue's length as rx_queue.
    A queue that stays up while a fixed set of keep-alive clients runs means some
    clients are never served, which wrk cannot show: it reports only what completed.
    """
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    waiting = None
    for line in lines:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
            waiting = (waiting or 0) + int(queues.split(":")[1], 16)
    return waiting
