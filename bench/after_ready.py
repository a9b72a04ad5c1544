"""Issue 12's figures in one run: what happens after Ready, at a drain, and what it costs.

Run: python bench/after_ready.py [--cases crash-after-ready,slow-request-drain,
                                  keepalive-before-after] [--before REF] [--repeats N]
                                  [--slow-seconds S] [--keep]

Three cases, each against servers started here on 127.0.0.1 and stopped by process
group (servers.stop_server) whatever happens; every load is bounded in time and count.
unbroken runs from two trees: the working tree's src/ ("unbroken") and a git ref
checked out once per run in a temporary worktree ("unbroken (before REF)", --before,
default dedcdb7), each with PYTHONPATH=<tree>/src for `serve` and `reload` alike; the
worktree is removed at the end, also on errors. The before tree has no
--reload-stable-for: no row passes that flag (the working tree runs its default, 3 s).

1. crash-after-ready: v1 is hello world; v2 imports fine, appends its pid to a file and
   starts a daemon thread that calls os._exit(1) one second later, so a v2 worker passes
   its boot (and unbroken's probe), is Ready, then dies. Under a steady load (3
   keep-alive and 3 connection-per-request clients, as in reload_compare.py) `current`
   goes to v2 and the reload is triggered (`unbroken reload`; `kill -HUP` for gunicorn);
   the load runs 30 s more. Reported: the reload's exit code and first line, failed
   requests out of all, the v2 imports (spawns) in those 30 s, the version fresh
   connections get at the end. unbroken before and after (2 workers, default threads)
   and gunicorn sync.
2. slow-request-drain: `/slow` sleeps 8 s (--slow-seconds), `/` answers at once; 2
   workers and --graceful-timeout 2. 8 keep-alive clients loop on `/`; one more
   connection sends `GET /slow`, and 0.5 s later (checked: still running) `current` goes
   to an identical v2 and the reload is triggered; the load runs 8 s more. `/slow` must
   outlive the drain, so that its worker is really cut at --graceful-timeout: the working
   tree parks old workers 3 s before draining them, so at 5 s nothing was cut. Reported
   per run: failures among the fast requests (the main column: a correct server has
   none, those clients did nothing wrong); whether `/slow` was answered or cut, and
   when; when each old worker exited (its /proc entry gone or a zombie, polled every
   50 ms); and how many fast connections shared `/slow`'s worker at the trigger (from
   /proc/net/tcp and the workers' fds). With none there, the before tree's defect (a
   request waiting behind `/slow` reset at the kill) cannot show, and the 8 fast clients
   often all sit on one worker: so `/slow`'s connection is dialled again, before any
   request is sent on it, until its worker holds a fast connection (at most 10 times;
   never for gunicorn sync, which keeps no connection open). unbroken before and after,
   each with --threads 1 (its default) and 4, gunicorn sync and gthread (4 threads);
   every server once per round, --repeats rounds (3).
3. keepalive-before-after: unbroken with its defaults (2 workers, threads 1) on
   bench/speed_apps' hello world, `wrk -t2 -c32 -d3s` (speed_wrk's command, after 1 s
   of uncounted wrk), for the working tree ("after") and the --before tree ("before"),
   alternating, --repeats runs each. Reported: req/s per run and the medians, the
   after/before ratio, and the workers' CPU time per request (utime + stime from
   /proc/<pid>/stat before and after the wrk run, over wrk's request count), which moves
   least with noise.

The tables are printed and written to bench/results/after-ready-<date>[-<cases>].md
(cases are named only when a subset ran). Nothing is asserted: the bench measures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import servers
from releases import Site
from reload_compare import final_version, format_failures, free_port, label, wait_ready
from speed_servers import SERVERS as SPEED_SERVERS
from speed_servers import TICKS_PER_SECOND, cpu_ticks, worker_pids
from speed_wrk import CASES as WRK_CASES
from speed_wrk import WRK, WrkFailed, run_wrk, wrk_argv

sys.path.insert(0, str(servers.REPO / "src"))
from unbroken.loadgen import Load, Sample, classify_error, summarize  # after sys.path

RESULTS = servers.BENCH / "results"
CASE_NAMES = ("crash-after-ready", "slow-request-drain", "keepalive-before-after")
WORKERS = servers.WORKERS  # 2
READY_TIMEOUT = 20.0
ALL_WORKERS_TIMEOUT = 5.0
RELOAD_TIMEOUT = 60.0  # `unbroken reload` is killed past this
CLIENT_PAUSE = 0.01
MAX_REQUESTS = 200_000  # per Load: a bound the time limits reach first

CRASH_AFTER_SECONDS = 1.0
CRASH_WARMUP = 2.0
CRASH_WINDOW = 30.0

SLOW_SECONDS = 8.0  # --slow-seconds; must outlive the working tree's park (3 s) + drain
GRACEFUL_TIMEOUT = 2
DRAIN_FAST_CLIENTS = 8
DRAIN_WARMUP = 1.0
SLOW_LEAD = 0.5  # /slow is sent this long before the trigger
DRAIN_AFTER = 8.0
SLOW_TIMEOUT = 15.0  # past /slow's own sleep: the client gives up on it
EXIT_POLL = 0.05  # how often the old workers' /proc entries are checked
# The fast clients often all sit on one worker, and `/slow` may land on the other, where
# no request waits behind it: its connection is dialled again (before any request is
# sent on it) until its worker holds a fast connection too, at most SLOW_DIALS times.
SLOW_DIALS = 10
ACCEPT_WAIT = 0.3  # for a worker to accept the dialled connection
VERSION_TAIL = 2.0  # the note says which versions answered in the load's last seconds

DEFAULT_BEFORE = "dedcdb7"
# Flags the working tree has and the before tree does not: never passed to the latter.
NOT_IN_BEFORE = ("--reload-stable-for",)
WRK_SECONDS = 3
WRK_WARMUP = 1
HELLO = WRK_CASES[0]  # speed_wrk's "hello": GET /, keep-alive

APP = '''\
"""after_ready bench app, release {version}."""

import os
import threading
import time

VERSION = "{version}"
{on_import}

def app(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        time.sleep({slow_seconds})
    body = f"{{VERSION}} pid={{os.getpid()}}\\n".encode()
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    start_response("200 OK", headers)
    return [body]
'''

# v2 of crash-after-ready: counts its imports, then dies once it has had time to be Ready.
CRASH_ON_IMPORT = """
with open({spawns!r}, "a") as spawns:
    spawns.write(f"{{os.getpid()}}\\n")


def _die_after_ready():
    time.sleep({crash_after})
    os._exit(1)


threading.Thread(target=_die_after_ready, daemon=True).start()
"""


# ---------------------------------------------------------------- servers


@dataclass(frozen=True)
class Tree:
    """A source tree unbroken runs from: the working tree's src/ or the --before worktree's."""

    name: str  # "before" or "after"
    src: Path
    ref: str
    shown_as: str  # src in the report, without temp paths


@dataclass(frozen=True)
class Trees:
    """The trees of this run; before is None if its worktree was not needed or failed."""

    after: Tree
    before: Tree | None
    before_ref: str
    before_error: str = ""  # why before is None, when a case needed it
    checks: tuple[tuple[str, str], ...] = ()  # (tree name, where `import unbroken` goes)

    def check(self, name: str) -> str:
        return dict(self.checks).get(name, "?")


@dataclass(frozen=True)
class Spec:
    """One server configuration: a row label, the program, its options, and for unbroken
    the tree it runs from; `skip` says why the row cannot run (its before tree is missing)."""

    label: str
    program: str  # "unbroken" or "gunicorn"
    options: tuple[str, ...] = ()
    tree: Tree | None = None  # unbroken only
    skip: str = ""

    @property
    def unbroken(self) -> bool:
        return self.program == "unbroken"

    def env(self) -> dict[str, str]:
        return tree_env(self.tree) if self.tree is not None else dict(os.environ)


GRACE = ("--graceful-timeout", str(GRACEFUL_TIMEOUT))
THREADS_4 = ("--threads", "4", *GRACE)


def unbroken_specs(trees: Trees, options: tuple[str, ...], suffix: str = "") -> list[Spec]:
    """unbroken before, then after, with the same options (a row each)."""
    if any(flag in NOT_IN_BEFORE for flag in options):
        raise ValueError(f"{options} has a flag the before tree lacks ({NOT_IN_BEFORE})")
    before = f"unbroken (before {trees.before_ref}){suffix}"
    after = Spec(f"unbroken{suffix}", "unbroken", options, trees.after)
    if trees.before is None:
        return [Spec(before, "unbroken", options, skip=f"not run: {trees.before_error}"), after]
    return [Spec(before, "unbroken", options, trees.before), after]


def crash_specs(trees: Trees) -> list[Spec]:
    return [*unbroken_specs(trees, ()), Spec("gunicorn sync", "gunicorn", ("-k", "sync"))]


def drain_specs(trees: Trees) -> list[Spec]:
    return [
        *unbroken_specs(trees, GRACE, " --threads 1 (default)"),
        *unbroken_specs(trees, THREADS_4, " --threads 4"),
        Spec("gunicorn sync", "gunicorn", ("-k", "sync", *GRACE)),
        Spec("gunicorn gthread --threads 4", "gunicorn", ("-k", "gthread", *THREADS_4)),
    ]


def tree_env(tree: Tree) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree.src)}


def server_argv(spec: Spec, site: Site, port: int) -> list[str]:
    """Serve app:app from the `current` symlink, 2 workers, on 127.0.0.1:port."""
    common = ["app:app", "--chdir", str(site.current), "-b", f"127.0.0.1:{port}",
              "-w", str(WORKERS), *spec.options]  # fmt: skip
    if spec.unbroken:
        return [*servers.unbroken_argv(), "serve", *common,
                "--control", str(site.control_socket)]  # fmt: skip
    return [str(servers.peers_bin("gunicorn")), *common]


def start_server(spec: Spec, site: Site, port: int) -> subprocess.Popen[bytes]:
    """Start in a new session (stop_server ends the group), output to site/server.log."""
    with site.log("server").open("ab") as log:
        return subprocess.Popen(
            server_argv(spec, site, port), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, env=spec.env(), cwd=site.root, start_new_session=True,
        )  # fmt: skip


def last_log_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1][:140] if lines else "no output"


def wait_workers(master: int, deadline: float) -> int:
    """Wait (bounded) until the master has WORKERS children; return how many it has."""
    found = len(worker_pids(master))
    while found < WORKERS and time.monotonic() < deadline:
        time.sleep(0.1)
        found = len(worker_pids(master))
    return found


def wait_serving(master: subprocess.Popen[bytes], port: int, log: Path) -> str | None:
    """None once v1 answers and every worker exists, else why not."""
    if not wait_ready(master, port, time.monotonic() + READY_TIMEOUT):
        state = "exited" if master.poll() is not None else f"no v1 in {READY_TIMEOUT:.0f} s"
        return f"did not start ({state}): {last_log_line(log)}"
    wait_workers(master.pid, time.monotonic() + ALL_WORKERS_TIMEOUT)
    return None


@contextlib.contextmanager
def serving(spec: Spec, site: Site) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A started, answering server; raises ServerFailed if it does not come up."""
    port = free_port()
    master = start_server(spec, site, port)
    try:
        if reason := wait_serving(master, port, site.log("server")):
            raise ServerFailed(reason)
        yield master, port
    finally:
        servers.stop_server(master)


class ServerFailed(Exception):
    """The server did not come up; the row says why."""


@dataclass(frozen=True)
class ReloadResult:
    exit: str  # exit code, "n/a (signal)", or why there is none
    said: str  # first line of its output (and its last, if more)
    returned_after: float | None  # seconds from the trigger, unbroken only


class Reload:
    """A reload in flight: `unbroken reload` runs in a thread so the load goes on meanwhile."""

    def __init__(self, spec: Spec, master: subprocess.Popen[bytes], site: Site) -> None:
        self.spec, self.master, self.site = spec, master, site
        self.done: subprocess.CompletedProcess[str] | None = None
        self.returned: float | None = None
        self.thread: threading.Thread | None = None
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> float:
        """Trigger it; return the trigger time."""
        self.started = time.monotonic()
        if not self.spec.unbroken:
            os.kill(self.master.pid, signal.SIGHUP)
            return self.started
        argv = [*servers.unbroken_argv(), "reload", "--control", str(self.site.control_socket)]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=self.spec.env(), start_new_session=True,
        )  # fmt: skip
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()
        return self.started

    def _wait(self) -> None:
        assert self.process is not None
        try:
            stdout, stderr = self.process.communicate(timeout=RELOAD_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate()
        self.returned = time.monotonic()
        self.done = subprocess.CompletedProcess(self.process.args, self.process.returncode,
                                                stdout, stderr)  # fmt: skip

    def finish(self, wait: float) -> ReloadResult:
        """What it said; waits up to `wait` s more for `unbroken reload` to return."""
        if self.thread is None:
            return ReloadResult("n/a (signal)", "HUP sent to the master", None)
        self.thread.join(wait)
        if self.thread.is_alive() and self.process is not None:
            self.process.kill()
            self.thread.join(5.0)
            return ReloadResult("none", f"still running {wait:.0f} s after the load; killed",
                                None)  # fmt: skip
        assert self.done is not None and self.returned is not None
        stdout, stderr = (text.replace(str(self.site.root), "<root>").strip().splitlines()
                          for text in (self.done.stdout, self.done.stderr))  # fmt: skip
        print(f"    `unbroken reload` exited {self.done.returncode}:", *stdout, *stderr,
              sep="\n      ", file=sys.stderr)  # fmt: skip
        return ReloadResult(str(self.done.returncode), reply_line(stdout, stderr),
                            self.returned - self.started)  # fmt: skip


def reply_line(stdout: list[str], stderr: list[str]) -> str:
    """`unbroken reload` prints its reply on stdout and its progress on stderr, where a
    failure ends with the verdict: the first line of stdout, else the last of stderr."""
    if stdout:
        return stdout[0][:160]
    return f"{stderr[-1][:160]} (stderr)" if stderr else "no output"


# ---------------------------------------------------------------- site


def lay_out(root: Path, on_import_v2: str = "", slow_seconds: float = SLOW_SECONDS) -> Site:
    """releases/v1 and v2 of the bench app under root, `current` pointing at v1."""
    for version, on_import in (("v1", ""), ("v2", on_import_v2)):
        release = root / "releases" / version
        release.mkdir(parents=True)
        source = APP.format(version=version, on_import=on_import, slow_seconds=slow_seconds)
        (release / "app.py").write_text(source)
    site = Site(root)
    site.switch_to("v1")
    return site


def count_lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def fast_load(port: int, clients: int, *, keep_alive: bool, duration: float) -> Load:
    return Load(("127.0.0.1", port), clients=clients, keep_alive=keep_alive, path="/",
                duration=duration, max_requests=MAX_REQUESTS, pause=CLIENT_PAUSE)  # fmt: skip


def escape(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


# ---------------------------------------------------------------- case 1: crash after Ready


@dataclass(frozen=True)
class CrashRow:
    server: str
    reload: ReloadResult | None = None
    requests: int = 0
    failures: str = "—"
    failed: int = 0
    failed_after_trigger: int = 0
    spawns: int | None = None
    final: str = "—"
    note: str = ""


def run_crash(spec: Spec, root: Path) -> CrashRow:
    if spec.skip:
        return CrashRow(spec.label, note=spec.skip)
    spawns_file = root / "v2-spawns"
    on_import = CRASH_ON_IMPORT.format(spawns=str(spawns_file), crash_after=CRASH_AFTER_SECONDS)
    site = lay_out(root, on_import)
    try:
        with serving(spec, site) as (master, port):
            return measure_crash(spec, site, master, port, spawns_file)
    except ServerFailed as error:
        return CrashRow(spec.label, note=str(error))


def measure_crash(spec: Spec, site: Site, master: subprocess.Popen[bytes], port: int,
                  spawns_file: Path) -> CrashRow:  # fmt: skip
    duration = CRASH_WARMUP + CRASH_WINDOW + 20
    loads = [fast_load(port, 3, keep_alive=True, duration=duration),
             fast_load(port, 3, keep_alive=False, duration=duration)]  # fmt: skip
    for load in loads:
        load.start()
    try:
        time.sleep(CRASH_WARMUP)
        site.switch_to("v2")
        reload = Reload(spec, master, site)
        trigger = reload.start()
        sleep_until(trigger + CRASH_WINDOW)
        spawns = count_lines(spawns_file)
    finally:
        samples = [sample for load in loads for sample in load.stop()]
    result = reload.finish(5.0)
    final = final_version(port)
    exited = master.poll()
    summary = summarize(samples)
    after = [s for s in samples if s.error is not None and s.start >= trigger]
    return CrashRow(
        spec.label, result, summary.requests, format_failures(samples), summary.failures,
        len(after), spawns, final,
        note=f"master exited {exited}" if exited is not None else "",
    )  # fmt: skip


def render_crash(rows: list[CrashRow]) -> list[str]:
    lines = [
        "## 1. crash-after-ready",
        "",
        f"v2 imports, is Ready, and calls os._exit(1) {CRASH_AFTER_SECONDS:g} s after its "
        f"import. Load: 3 keep-alive + 3 connection-per-request clients on `/` "
        f"({CLIENT_PAUSE * 1000:g} ms pause), {CRASH_WARMUP:g} s before the trigger and "
        f"{CRASH_WINDOW:g} s after it. *v2 spawns*: imports of v2 within those "
        f"{CRASH_WINDOW:g} s. *final*: 10 fresh connections after the load.",
        "",
        "| server | reload exit | reload said | reload returned s | failed / total "
        "| failed after trigger | v2 spawns in 30 s | final version | note |",
        "|---|---|---|---:|---|---:|---:|---|---|",
    ]
    for row in rows:
        reload = row.reload
        returned = reload.returned_after if reload else None
        lines.append(
            f"| {row.server} | {reload.exit if reload else '—'} "
            f"| {escape(reload.said) if reload else '—'} "
            f"| {'—' if returned is None else f'{returned:.2f}'} "
            f"| {row.failures} / {row.requests} | {row.failed_after_trigger} "
            f"| {'—' if row.spawns is None else row.spawns} | {row.final} | {escape(row.note)} |"
        )
    return [*lines, ""]


# ---------------------------------------------------------------- case 2: slow request at a drain


class SlowRequest:
    """One `GET /slow` on a connection of its own, in a thread, so a reload can start
    while it runs; records whether it was answered or cut, and when."""

    def __init__(self, port: int, slow_seconds: float,
                 where: Callable[[int], Placement | None]) -> None:  # fmt: skip
        self.port, self.where = port, where
        self.timeout = max(SLOW_TIMEOUT, slow_seconds + 5)
        self.sent = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.outcome = "not sent"  # "answered 200 v1", "cut (reset)", ...
        self.sent_at: float | None = None
        self.ended_at: float | None = None
        self.client_port: int | None = None  # its ephemeral port, to find its worker
        self.dials = 0

    def start(self) -> SlowRequest:
        self.thread.start()
        self.sent.wait(self.timeout)
        return self

    @property
    def running(self) -> bool:
        return self.sent_at is not None and self.thread.is_alive()

    def _dial(self) -> http.client.HTTPConnection:
        """A connection whose worker holds a fast one too, or the last of SLOW_DIALS."""
        while True:
            self.dials += 1
            connection = http.client.HTTPConnection("127.0.0.1", self.port,
                                                    timeout=self.timeout)  # fmt: skip
            connection.connect()
            assert connection.sock is not None
            self.client_port = connection.sock.getsockname()[1]
            if self.dials >= SLOW_DIALS:
                return connection
            deadline = time.monotonic() + ACCEPT_WAIT
            where = self.where(self.client_port)
            while where is None and time.monotonic() < deadline:
                time.sleep(0.01)
                where = self.where(self.client_port)
            if where is not None and where.beside_slow > 0:
                return connection
            connection.close()

    def _run(self) -> None:
        connection: http.client.HTTPConnection | None = None
        try:
            connection = self._dial()
            connection.request("GET", "/slow")
            self.sent_at = time.monotonic()
            self.sent.set()
            response = connection.getresponse()
            body = response.read()
            version = body.split(b" ", 1)[0].decode(errors="replace")
            self.outcome = f"answered {response.status} {version}"
        except (OSError, http.client.HTTPException) as error:
            self.outcome = f"cut ({classify_error(error)})"
        finally:
            self.ended_at = time.monotonic()
            if connection is not None:
                connection.close()
            self.sent.set()

    def result(self, wait: float, trigger: float) -> tuple[str, float | None]:
        """What became of it and when, in seconds after the trigger (None: not yet)."""
        self.thread.join(wait)
        if self.thread.is_alive() or self.ended_at is None:
            return "still waiting", None
        return self.outcome, self.ended_at - trigger


def alive(pid: int) -> bool:
    """The process exists and is no zombie (a zombie's worker has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class ExitWatch:
    """When each of the old workers exits, in seconds after the trigger: /proc polled
    every EXIT_POLL s in a thread, until all are gone or `until`."""

    def __init__(self, pids: list[int], trigger: float, until: float) -> None:
        self.pids, self.trigger, self.until = pids, trigger, until
        self.exited: dict[int, float] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ExitWatch:
        self.thread.start()
        return self

    def _run(self) -> None:
        while len(self.exited) < len(self.pids) and time.monotonic() < self.until:
            now = time.monotonic()
            for pid in self.pids:
                if pid not in self.exited and not alive(pid):
                    self.exited[pid] = now - self.trigger
            time.sleep(EXIT_POLL)

    def result(self) -> list[float | None]:
        """Per old worker, sorted; None: still running at `until`."""
        self.thread.join(max(0.0, self.until - time.monotonic()) + 1.0)
        times = [self.exited.get(pid) for pid in self.pids]
        return sorted(times, key=lambda t: (t is None, t or 0.0))


def tcp_connections(port: int) -> dict[int, int]:
    """Established server-side sockets of 127.0.0.1:port: socket inode -> client port."""
    found = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                found[inode] = int(remote.rsplit(":", 1)[1], 16)
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


@dataclass(frozen=True)
class Placement:
    """Where the connections were at the trigger: fast ones beside `/slow` and elsewhere."""

    beside_slow: int
    elsewhere: int


def placement(port: int, slow_port: int | None, workers: list[int]) -> Placement | None:
    """Count the client connections each old worker holds; None if `/slow`'s is not found."""
    connections = tcp_connections(port)
    held = {pid: {connections[i] for i in socket_inodes(pid) if i in connections}
            for pid in workers}  # fmt: skip
    slow_worker = next((pid for pid, ports in held.items() if slow_port in ports), None)
    if slow_worker is None:
        return None
    beside = len(held[slow_worker]) - 1
    elsewhere = sum(len(ports) for pid, ports in held.items() if pid != slow_worker)
    return Placement(beside, elsewhere)


@dataclass(frozen=True)
class DrainRow:
    server: str
    run: int
    fast_requests: int = 0
    fast_failures: str = "—"
    fast_failed: int | None = None
    fast_max: float | None = None
    slow: str = "—"  # "answered 200 v1", "cut (reset)", "still waiting", ...
    slow_ended: float | None = None  # s after the trigger
    slow_running: bool | None = None
    old_exits: tuple[float | None, ...] = ()  # s after the trigger, per old worker
    placement: Placement | None = None
    reload: ReloadResult | None = None
    note: str = ""

    @property
    def slow_cut(self) -> bool:
        return self.slow.startswith("cut")


def run_drain(spec: Spec, run: int, root: Path, slow_seconds: float) -> DrainRow:
    if spec.skip:
        return DrainRow(spec.label, run, note=spec.skip)
    site = lay_out(root, slow_seconds=slow_seconds)
    try:
        with serving(spec, site) as (master, port):
            return measure_drain(spec, run, site, master, port, slow_seconds)
    except ServerFailed as error:
        return DrainRow(spec.label, run, note=str(error))


def measure_drain(spec: Spec, run: int, site: Site, master: subprocess.Popen[bytes],
                  port: int, slow_seconds: float) -> DrainRow:  # fmt: skip
    duration = DRAIN_WARMUP + SLOW_LEAD + DRAIN_AFTER + 20
    load = fast_load(port, DRAIN_FAST_CLIENTS, keep_alive=True, duration=duration).start()
    try:
        time.sleep(DRAIN_WARMUP)
        slow = SlowRequest(port, slow_seconds, lambda client: placement(
            port, client, worker_pids(master.pid))).start()  # fmt: skip
        old_workers = worker_pids(master.pid)
        # Off the clock, in a thread: placement() parses /proc/net/tcp, which the
        # connection-per-request load of case 1 (and gunicorn sync) fills with TIME_WAIT
        # sockets for a minute; parsed in the lead, it took seconds with 8 client
        # threads, and `/slow` then ran that much longer before the trigger.
        found: list[Placement | None] = []
        looking = threading.Thread(target=lambda: found.append(
            placement(port, slow.client_port, old_workers)), daemon=True)  # fmt: skip
        looking.start()
        sleep_until((slow.sent_at or time.monotonic()) + SLOW_LEAD)
        slow_running = slow.running
        site.switch_to("v2")
        reload = Reload(spec, master, site)
        trigger = reload.start()
        lead = None if slow.sent_at is None else trigger - slow.sent_at
        exits = ExitWatch(old_workers, trigger, trigger + DRAIN_AFTER).start()
        sleep_until(trigger + DRAIN_AFTER)
    finally:
        fast: list[Sample] = load.stop()
    looking.join(10.0)
    where = found[0] if found else None
    slow_outcome, slow_ended = slow.result(slow.timeout, trigger)
    old_exits = tuple(exits.result())
    result = reload.finish(5.0)
    summary = summarize(fast)
    tail = trigger + DRAIN_AFTER - VERSION_TAIL
    versions = {label(s) for s in fast if s.error is None and s.start > tail}
    exited = master.poll()
    served = "+".join(sorted(versions)) or "none"
    notes = [f"fast answers in the last {VERSION_TAIL:g} s: {served}"]
    if slow.dials > 1:
        notes.append(f"`/slow` dialled {slow.dials} times")
    if not slow_running:
        notes.append("`/slow` was not running at the trigger")
    if lead is not None and abs(lead - SLOW_LEAD) > 0.1:
        notes.append(f"`/slow` sent {lead:.1f} s before the trigger, not {SLOW_LEAD:g}")
    if len(old_workers) != WORKERS:
        notes.append(f"{len(old_workers)} old workers at the trigger")
    if exited is not None:
        notes.append(f"master exited {exited}")
    return DrainRow(
        spec.label, run, summary.requests, format_failures(fast), summary.failures,
        summary.max, slow_outcome, slow_ended, slow_running, old_exits, where, result,
        "; ".join(notes),
    )  # fmt: skip


def seconds(value: float | None, missing: str = "—") -> str:
    return missing if value is None else f"{value:.1f}"


def slow_cell(row: DrainRow) -> str:
    if row.slow_ended is None:
        return row.slow
    return f"{row.slow} at {row.slow_ended:.1f}"


def exits_cell(row: DrainRow) -> str:
    if not row.old_exits:
        return "—"
    return ", ".join(seconds(t, f"> {DRAIN_AFTER:g}") for t in row.old_exits)


def placement_cell(row: DrainRow) -> str:
    if row.placement is None:
        return "—" if row.slow == "—" else "? (`/slow` not found)"
    return f"{row.placement.beside_slow} (other: {row.placement.elsewhere})"


def render_drain(rows: list[DrainRow], specs: list[Spec], repeats: int,
                 slow_seconds: float) -> list[str]:  # fmt: skip
    order = [spec.label for spec in specs]
    natural_end = slow_seconds - SLOW_LEAD
    lines = [
        "## 2. slow-request-drain",
        "",
        f"`/slow` sleeps {slow_seconds:g} s, `/` answers at once; {WORKERS} workers, "
        f"--graceful-timeout {GRACEFUL_TIMEOUT}. {DRAIN_FAST_CLIENTS} keep-alive clients on "
        f"`/` ({CLIENT_PAUSE * 1000:g} ms pause); `GET /slow` on its own connection "
        f"{SLOW_LEAD:g} s before the trigger, so uncut it answers {natural_end:g} s after "
        f"it; load for {DRAIN_AFTER:g} s after the trigger. *fast failed* must be 0 for a "
        "correct server. Times are seconds after the trigger: when `/slow` ended, and when "
        f"each old worker exited (/proc polled every {EXIT_POLL * 1000:g} ms; "
        f"> {DRAIN_AFTER:g}: still running at the load's end). *fast beside `/slow`*: "
        "client connections the `/slow` worker held besides `/slow` at the trigger "
        "(other: those the other old workers held; a sync gunicorn worker closes after "
        "each response, so it holds few); `/slow`'s connection is dialled again, before "
        f"its request, until it shares a worker with a fast one (at most {SLOW_DIALS} "
        f"dials). {repeats} runs per server, the servers in turn each round.",
        "",
        "| server | run | fast failed / total | fast max ms | `/slow` | old workers exited "
        "| fast beside `/slow` | reload exit | reload said | note |",
        "|---|---:|---|---:|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (order.index(r.server), r.run)):
        reload = row.reload
        fast_max = "—" if row.fast_max is None else f"{row.fast_max * 1000:.0f}"
        lines.append(
            f"| {row.server} | {row.run} | {row.fast_failures} / {row.fast_requests} "
            f"| {fast_max} | {slow_cell(row)} | {exits_cell(row)} | {placement_cell(row)} "
            f"| {reload.exit if reload else '—'} "
            f"| {escape(reload.said) if reload else '—'} | {escape(row.note)} |"
        )
    return [*lines, "", *drain_summary(rows, specs), ""]


def drain_summary(rows: list[DrainRow], specs: list[Spec]) -> list[str]:
    lines = ["| server | fast failed per run | `/slow` answered / cut | last old worker "
             "exited, per run | fast beside `/slow`, per run |",
             "|---|---|---|---|---|"]  # fmt: skip
    for spec in specs:
        mine = sorted((r for r in rows if r.server == spec.label), key=lambda r: r.run)
        if not mine:
            continue
        counts = ", ".join("err" if r.fast_failed is None else str(r.fast_failed) for r in mine)
        answered = sum(r.slow.startswith("answered") for r in mine)
        cut = sum(r.slow_cut for r in mine)
        last = ", ".join(exits_cell(r).rsplit(", ", 1)[-1] for r in mine)
        beside = ", ".join("?" if r.placement is None else str(r.placement.beside_slow)
                           for r in mine)  # fmt: skip
        lines.append(f"| {spec.label} | {counts} | {answered} / {cut} | {last} | {beside} |")
    return lines


# ---------------------------------------------------------------- case 3: keep-alive speed


@dataclass(frozen=True)
class SpeedRow:
    tree: str
    run: int
    rps: float | None = None
    requests: int = 0
    errors: int = 0
    cpu_us: float | None = None  # worker CPU time per request
    note: str = ""


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes, in seconds."""
    return cpu_ticks(pids) / TICKS_PER_SECOND


def run_speed(tree: Tree, run: int, scratch: Path) -> SpeedRow:
    run_dir = scratch / f"{tree.name}-{run}"
    run_dir.mkdir()
    spec = next(s for s in SPEED_SERVERS if s.key == "unbroken-wsgi")
    port = free_port()
    log = run_dir / "server.log"
    with log.open("ab") as output:
        master = subprocess.Popen(
            spec.argv(servers.unbroken_argv(), port, run_dir), stdin=subprocess.DEVNULL,
            stdout=output, stderr=subprocess.STDOUT, env=tree_env(tree), cwd=run_dir,
            start_new_session=True,
        )  # fmt: skip
    try:
        return measure_speed(tree, run, master, port, log)
    finally:
        servers.stop_server(master)


def hello_answers(master: subprocess.Popen[bytes], port: int) -> bool:
    """Bounded wait for a 200 on `/` (the speed app answers `Hello, world!`)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and master.poll() is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        try:
            connection.request("GET", "/")
            if connection.getresponse().status == 200:
                return True
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        time.sleep(0.1)
    return False


def measure_speed(tree: Tree, run: int, master: subprocess.Popen[bytes], port: int,
                  log: Path) -> SpeedRow:  # fmt: skip
    if not hello_answers(master, port):
        return SpeedRow(tree.name, run, note=f"did not start: {last_log_line(log)}")
    found = wait_workers(master.pid, time.monotonic() + ALL_WORKERS_TIMEOUT)
    try:
        run_wrk(wrk_argv(HELLO, port, WRK_WARMUP, Path(os.devnull)), WRK_WARMUP)
        workers = worker_pids(master.pid)
        cpu_before = cpu_seconds(workers)
        result = run_wrk(wrk_argv(HELLO, port, WRK_SECONDS, Path(os.devnull)), WRK_SECONDS)
        cpu = cpu_seconds(workers) - cpu_before
    except WrkFailed as error:
        return SpeedRow(tree.name, run, note=f"wrk failed: {error}")
    notes = [] if found == WORKERS else [f"{found} workers found"]
    if worker_pids(master.pid) != workers:
        notes.append("a worker changed during the run: its CPU is partly missing")
    per_request = cpu / result.requests * 1e6 if result.requests else None
    return SpeedRow(tree.name, run, result.rps, result.requests, result.errors, per_request,
                    "; ".join(notes))  # fmt: skip


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def render_speed(rows: list[SpeedRow], trees: list[Tree], checks: dict[str, str]) -> list[str]:
    command = shlex.join(wrk_argv(HELLO, 0, WRK_SECONDS, Path(os.devnull))).replace(
        "127.0.0.1:0", "127.0.0.1:PORT"
    )
    lines = [
        "## 3. keepalive-before-after",
        "",
        f"unbroken defaults ({WORKERS} workers, threads 1) on bench/speed_apps `app_wsgi:app`, "
        f"`{command}` after {WRK_WARMUP} s of uncounted wrk; before and after alternate. "
        "*CPU µs/req*: the workers' utime + stime over the measured run / wrk's requests.",
        "",
        *(f"- {t.name}: {t.ref}, `import unbroken` → {checks.get(t.name, '?')}" for t in trees),
        "",
        "| tree | run | req/s | requests | errors | CPU µs/req | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in sorted(rows, key=lambda r: (r.tree != "before", r.run)):
        rps = "—" if row.rps is None else f"{row.rps:.0f}"
        cpu = "—" if row.cpu_us is None else f"{row.cpu_us:.1f}"
        lines.append(f"| {row.tree} | {row.run} | {rps} | {row.requests} | {row.errors} "
                     f"| {cpu} | {escape(row.note)} |")  # fmt: skip
    lines += ["", "| | before | after | after / before |", "|---|---:|---:|---:|"]
    for title, get, digits in (("median req/s", lambda r: r.rps, 0),
                               ("median CPU µs/req", lambda r: r.cpu_us, 1)):  # fmt: skip
        before, after = (median([get(r) for r in rows if r.tree == name])
                         for name in ("before", "after"))  # fmt: skip
        ratio = f"{after / before:.3f}" if before and after else "—"
        lines.append(f"| {title} | {number(before, digits)} | {number(after, digits)} | {ratio} |")
    return [*lines, ""]


def number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


# ---------------------------------------------------------------- the trees


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """`git worktree add --detach` of ref in a temp dir, removed afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="after-ready-before-"))
    path = parent / "tree"
    git = ["git", "-C", str(servers.REPO), "worktree"]
    try:
        subprocess.run([*git, "add", "--detach", str(path), ref], check=True,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
        yield path
    finally:
        subprocess.run([*git, "remove", "--force", str(path)], capture_output=True, timeout=60)
        shutil.rmtree(parent, ignore_errors=True)


def imported_from(tree: Tree) -> str:
    """Where `import unbroken` resolves with this tree's PYTHONPATH (a check, for the note)."""
    code = "import unbroken, os; print(os.path.dirname(unbroken.__file__))"
    python = servers.unbroken_argv()[0]
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30,
                          env=tree_env(tree))  # fmt: skip
    return done.stdout.strip() or f"import failed: {done.stderr.strip()[-120:]}"


def needs_before(case_list: list[str]) -> bool:
    return bool({"crash-after-ready", "slow-request-drain"} & set(case_list)) or (
        "keepalive-before-after" in case_list and Path(WRK).exists()
    )


def open_trees(args: argparse.Namespace, stack: contextlib.ExitStack) -> Trees:
    """The working tree, and the --before worktree if a case needs it: created once,
    removed when `stack` closes (at the end, or on any error)."""
    after = Tree("after", servers.REPO / "src", "working tree", "src")
    if not needs_before(args.case_list):
        return Trees(after, None, args.before, f"--before {args.before} not needed")
    try:
        path = stack.enter_context(worktree(args.before))
    except (OSError, subprocess.SubprocessError) as error:
        detail = (getattr(error, "stderr", "") or "").strip()[-200:]
        why = f"worktree of {args.before} failed: {error!r} {detail}".strip()
        return Trees(after, None, args.before, why)
    before = Tree("before", path / "src", f"git {args.before}", "<worktree>/src")
    checks = tuple((tree.name, imported_from(tree).replace(str(tree.src), tree.shown_as))
                   for tree in (before, after))  # fmt: skip
    return Trees(after, before, args.before, checks=checks)


# ---------------------------------------------------------------- running the cases


@contextlib.contextmanager
def temp_root(prefix: str, keep: bool) -> Iterator[Path]:
    """A fresh deploy root, removed afterwards unless --keep (then its logs stay)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        if keep:
            print(f"    kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def crash_case(args: argparse.Namespace, trees: Trees) -> list[str]:
    rows: list[CrashRow] = []
    for spec in crash_specs(trees):
        started = time.monotonic()
        try:
            with temp_root("after-ready-crash-", args.keep) as root:
                rows.append(run_crash(spec, root))
        except Exception as error:  # one broken row must not lose the others
            rows.append(CrashRow(spec.label, note=f"bench error: {error!r}"[:160]))
        progress("crash-after-ready", spec.label, started)
    return render_crash(rows)


def drain_case(args: argparse.Namespace, trees: Trees) -> list[str]:
    rows: list[DrainRow] = []
    specs = drain_specs(trees)
    for run in range(1, args.repeats + 1):
        for spec in specs:
            started = time.monotonic()
            try:
                with temp_root("after-ready-drain-", args.keep) as root:
                    rows.append(run_drain(spec, run, root, args.slow_seconds))
            except Exception as error:
                rows.append(DrainRow(spec.label, run, note=f"bench error: {error!r}"[:160]))
            progress("slow-request-drain", f"{spec.label} run {run}", started)
    return render_drain(rows, specs, args.repeats, args.slow_seconds)


def speed_case(args: argparse.Namespace, trees: Trees) -> list[str]:
    if not Path(WRK).exists():
        return ["## 3. keepalive-before-after", "", f"not run: {WRK} is missing", ""]
    if trees.before is None:
        return ["## 3. keepalive-before-after", "", f"not run: {trees.before_error}", ""]
    both = [trees.before, trees.after]
    with tempfile.TemporaryDirectory(prefix="after-ready-speed-") as scratch:
        rows = speed_runs(both, args.repeats, Path(scratch))
    return render_speed(rows, both, {tree.name: trees.check(tree.name) for tree in both})


def speed_runs(trees: list[Tree], repeats: int, scratch: Path) -> list[SpeedRow]:
    rows: list[SpeedRow] = []
    for run in range(1, repeats + 1):
        for tree in trees:
            started = time.monotonic()
            try:
                rows.append(run_speed(tree, run, scratch))
            except Exception as error:
                rows.append(SpeedRow(tree.name, run, note=f"bench error: {error!r}"[:160]))
            progress("keepalive-before-after", f"{tree.name} run {run}", started)
    return rows


def progress(case: str, what: str, started: float) -> None:
    print(f"{case:22} {what:32} {time.monotonic() - started:5.1f} s", file=sys.stderr,
          flush=True)  # fmt: skip


CASES: dict[str, Callable[[argparse.Namespace, Trees], list[str]]] = {
    "crash-after-ready": crash_case,
    "slow-request-drain": drain_case,
    "keepalive-before-after": speed_case,
}


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASE_NAMES),
                        help=f"comma-separated subset of {', '.join(CASE_NAMES)}")  # fmt: skip
    parser.add_argument("--before", default=DEFAULT_BEFORE,
                        help="git ref run as 'unbroken (before REF)' in every case")  # fmt: skip
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs per server (slow-request-drain) and per tree (keep-alive)",
    )
    parser.add_argument("--slow-seconds", type=float, default=SLOW_SECONDS,
                        help="how long /slow sleeps in slow-request-drain")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temp deploy roots (logs)")
    args = parser.parse_args(argv)
    args.case_list = [name for name in args.cases.split(",") if name]
    if unknown := set(args.case_list) - set(CASE_NAMES):
        parser.error(f"unknown cases {sorted(unknown)}; known: {', '.join(CASE_NAMES)}")
    if not args.case_list or args.repeats < 1 or not 0 < args.slow_seconds <= 30:
        parser.error("no case selected, --repeats below 1, or --slow-seconds not in (0, 30]")
    return args


def header(took: float, load: tuple[str, str], commits: tuple[str, str],
           trees: Trees) -> list[str]:  # fmt: skip
    command = shlex.join(["python", "bench/after_ready.py", *sys.argv[1:]])
    versions = servers.installed_peer_versions()
    if trees.before is not None:
        before = (f"; \"unbroken (before {trees.before_ref})\" from git {trees.before_ref} in a "
                  f"temporary worktree (`import unbroken` → {trees.check('before')}, working "
                  f"tree → {trees.check('after')})")  # fmt: skip
    else:
        before = f"; no before tree ({trees.before_error})"
    return [
        f"# After Ready: crash, drain and keep-alive cost ({datetime.date.today().isoformat()})",
        "",
        f"`{command}`, took {took:.0f} s; {os.cpu_count()} CPUs, load average before / after "
        f"{load[0]} / {load[1]}; Python {sys.version.split()[0]}; unbroken from the working "
        f"tree ({commit_text(*commits)}){before}; both run by {servers.PEERS_VENV.name}'s "
        f"Python; gunicorn {versions.get('gunicorn', '?')}. All traffic on 127.0.0.1.",
        "",
    ]


def commit_text(at_start: str, at_end: str) -> str:
    if at_start == at_end:
        return f"`{at_start}`"
    return f"`{at_start}` at the start, `{at_end}` at the end: it changed during the run"


def git_describe() -> str:
    done = subprocess.run(["git", "-C", str(servers.REPO), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, timeout=10)  # fmt: skip
    return done.stdout.strip() or "unknown"


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def report_path(case_list: list[str]) -> Path:
    stem = f"after-ready-{datetime.date.today().isoformat()}"
    if set(case_list) != set(CASE_NAMES):
        stem += "-" + "+".join(name for name in CASE_NAMES if name in case_list)
    return RESULTS / f"{stem}.md"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    if why := servers.unbroken_missing():
        print(f"warning: {why}", file=sys.stderr)
    servers.ensure_peers()
    # SIGTERM unwinds like an error, so servers stop and the worktree goes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    started, load_before, commit = time.monotonic(), load_average(), git_describe()
    with contextlib.ExitStack() as stack:
        trees = open_trees(args, stack)
        sections = [line for name in CASE_NAMES if name in args.case_list
                    for line in CASES[name](args, trees)]  # fmt: skip
    took = time.monotonic() - started
    commits = (commit, git_describe())
    load = (load_before, load_average())
    report = "\n".join([*header(took, load, commits, trees), *sections])
    print(report)
    RESULTS.mkdir(exist_ok=True)
    path = report_path(args.case_list)
    path.write_text(report)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
