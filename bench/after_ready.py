"""Issue 12's figures in one run: what happens after Ready, at a drain, and what it costs.

Run: python bench/after_ready.py [--cases crash-after-ready,slow-request-drain,
                                  keepalive-before-after] [--before REF] [--repeats N]
                                  [--keep]

Three cases, each against servers started here on 127.0.0.1 and stopped by process
group (servers.stop_server) whatever happens; every load is bounded in time and count.

1. crash-after-ready: v1 is hello world; v2 imports fine, appends its pid to a file and
   starts a daemon thread that calls os._exit(1) one second later, so a v2 worker passes
   its boot (and unbroken's probe), is Ready, then dies. Under a steady load (3
   keep-alive and 3 connection-per-request clients, as in reload_compare.py) `current`
   goes to v2 and the reload is triggered (`unbroken reload`; `kill -HUP` for gunicorn);
   the load runs 30 s more. Reported: the reload's exit code and first line, failed
   requests out of all, the v2 imports (spawns) in those 30 s, the version fresh
   connections get at the end. unbroken (2 workers, default threads) and gunicorn sync.
2. slow-request-drain: `/slow` sleeps 5 s, `/` answers at once; 2 workers and
   --graceful-timeout 2. 8 keep-alive clients loop on `/`; one more connection sends
   `GET /slow`, and 0.5 s later (checked: still running) `current` goes to an identical
   v2 and the reload is triggered; the load runs 8 s more. Reported per run: failures
   among the fast requests (a correct server has none: those clients did nothing wrong)
   and what became of `/slow`. unbroken --threads 1 (its default) and 4, gunicorn sync
   and gthread (4 threads); every server once per round, --repeats rounds (3).
3. keepalive-before-after: unbroken with its defaults (2 workers, threads 1) on
   bench/speed_apps' hello world, `wrk -t2 -c32 -d3s` (speed_wrk's command, after 1 s
   of uncounted wrk), for the working tree's src/ ("after") and for a git ref checked
   out in a temporary worktree ("before", --before, default dedcdb7), alternating,
   --repeats runs each. Reported: req/s per run and the medians, the after/before ratio,
   and the workers' CPU time per request (utime + stime from /proc/<pid>/stat before
   and after the wrk run, over wrk's request count), which moves least with noise.

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
from speed_servers import worker_pids
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

SLOW_SECONDS = 5.0
GRACEFUL_TIMEOUT = 2
DRAIN_FAST_CLIENTS = 8
DRAIN_WARMUP = 1.0
SLOW_LEAD = 0.5  # /slow is sent this long before the trigger
DRAIN_AFTER = 8.0
SLOW_TIMEOUT = 15.0
VERSION_TAIL = 2.0  # the note says which versions answered in the load's last seconds

DEFAULT_BEFORE = "dedcdb7"
WRK_SECONDS = 3
WRK_WARMUP = 1
HELLO = WRK_CASES[0]  # speed_wrk's "hello": GET /, keep-alive
CLOCK_TICK = os.sysconf("SC_CLK_TCK")

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
class Spec:
    """One server configuration: a row label, the program and its options."""

    label: str
    program: str  # "unbroken" or "gunicorn"
    options: tuple[str, ...] = ()

    @property
    def unbroken(self) -> bool:
        return self.program == "unbroken"


GRACE = ("--graceful-timeout", str(GRACEFUL_TIMEOUT))
CRASH_SPECS = (
    Spec("unbroken", "unbroken"),
    Spec("gunicorn sync", "gunicorn", ("-k", "sync")),
)
DRAIN_SPECS = (
    Spec("unbroken --threads 1 (default)", "unbroken", GRACE),
    Spec("unbroken --threads 4", "unbroken", ("--threads", "4", *GRACE)),
    Spec("gunicorn sync", "gunicorn", ("-k", "sync", *GRACE)),
    Spec("gunicorn gthread --threads 4", "gunicorn", ("-k", "gthread", "--threads", "4", *GRACE)),
)


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
    env = servers.unbroken_env() if spec.unbroken else dict(os.environ)
    with site.log("server").open("ab") as log:
        return subprocess.Popen(
            server_argv(spec, site, port), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, env=env, cwd=site.root, start_new_session=True,
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
            text=True, env=servers.unbroken_env(), start_new_session=True,
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
        text = "\n".join(part.strip() for part in (self.done.stdout, self.done.stderr))
        text = text.replace(str(self.site.root), "<root>")
        print(f"    `unbroken reload` exited {self.done.returncode}:", *text.strip().splitlines(),
              sep="\n      ", file=sys.stderr)  # fmt: skip
        return ReloadResult(str(self.done.returncode), first_and_last(text),
                            self.returned - self.started)  # fmt: skip


def first_and_last(text: str) -> str:
    """The first line of an output, and its last one if it has more (the verdict)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "no output"
    if len(lines) == 1:
        return lines[0][:100]
    return f"{lines[0][:100]} … (last) {lines[-1][:100]}"


# ---------------------------------------------------------------- site


def lay_out(root: Path, on_import_v2: str = "") -> Site:
    """releases/v1 and v2 of the bench app under root, `current` pointing at v1."""
    for version, on_import in (("v1", ""), ("v2", on_import_v2)):
        release = root / "releases" / version
        release.mkdir(parents=True)
        source = APP.format(version=version, on_import=on_import, slow_seconds=SLOW_SECONDS)
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
    while it runs; records whether it was answered or cut, and after how long."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.outcome = "not sent"
        self.sent_at: float | None = None

    def start(self) -> SlowRequest:
        self.thread.start()
        self.sent.wait(SLOW_TIMEOUT)
        return self

    @property
    def running(self) -> bool:
        return self.sent_at is not None and self.thread.is_alive()

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=SLOW_TIMEOUT)
        started = time.monotonic()
        try:
            connection.request("GET", "/slow")
            self.sent_at = time.monotonic()
            self.sent.set()
            response = connection.getresponse()
            body = response.read()
            took = time.monotonic() - started
            version = body.split(b" ", 1)[0].decode(errors="replace")
            self.outcome = f"answered {response.status} {version} in {took:.1f} s"
        except (OSError, http.client.HTTPException) as error:
            took = time.monotonic() - started
            self.outcome = f"cut ({classify_error(error)}) after {took:.1f} s"
        finally:
            connection.close()
            self.sent.set()

    def result(self, wait: float) -> str:
        self.thread.join(wait)
        return "still waiting" if self.thread.is_alive() else self.outcome


@dataclass(frozen=True)
class DrainRow:
    server: str
    run: int
    fast_requests: int = 0
    fast_failures: str = "—"
    fast_failed: int | None = None
    fast_max: float | None = None
    slow: str = "—"
    slow_running: bool | None = None
    reload: ReloadResult | None = None
    note: str = ""


def run_drain(spec: Spec, run: int, root: Path) -> DrainRow:
    site = lay_out(root)
    try:
        with serving(spec, site) as (master, port):
            return measure_drain(spec, run, site, master, port)
    except ServerFailed as error:
        return DrainRow(spec.label, run, note=str(error))


def measure_drain(spec: Spec, run: int, site: Site, master: subprocess.Popen[bytes],
                  port: int) -> DrainRow:  # fmt: skip
    duration = DRAIN_WARMUP + SLOW_LEAD + DRAIN_AFTER + 20
    load = fast_load(port, DRAIN_FAST_CLIENTS, keep_alive=True, duration=duration).start()
    try:
        time.sleep(DRAIN_WARMUP)
        slow = SlowRequest(port).start()
        time.sleep(SLOW_LEAD)
        slow_running = slow.running
        site.switch_to("v2")
        reload = Reload(spec, master, site)
        trigger = reload.start()
        sleep_until(trigger + DRAIN_AFTER)
    finally:
        fast: list[Sample] = load.stop()
    slow_outcome = slow.result(SLOW_TIMEOUT)
    result = reload.finish(5.0)
    summary = summarize(fast)
    tail = trigger + DRAIN_AFTER - VERSION_TAIL
    versions = {label(s) for s in fast if s.error is None and s.start > tail}
    exited = master.poll()
    served = "+".join(sorted(versions)) or "none"
    notes = [f"fast answers in the last {VERSION_TAIL:g} s: {served}"]
    if exited is not None:
        notes.append(f"master exited {exited}")
    return DrainRow(
        spec.label, run, summary.requests, format_failures(fast), summary.failures,
        summary.max, slow_outcome, slow_running, result, "; ".join(notes),
    )  # fmt: skip


def render_drain(rows: list[DrainRow], repeats: int) -> list[str]:
    lines = [
        "## 2. slow-request-drain",
        "",
        f"`/slow` sleeps {SLOW_SECONDS:g} s, `/` answers at once; {WORKERS} workers, "
        f"--graceful-timeout {GRACEFUL_TIMEOUT}. {DRAIN_FAST_CLIENTS} keep-alive clients on "
        f"`/` ({CLIENT_PAUSE * 1000:g} ms pause); `GET /slow` on its own connection "
        f"{SLOW_LEAD:g} s before the trigger (*slow running at trigger*: no answer yet "
        f"then); load for {DRAIN_AFTER:g} s after it. *fast failed* must be 0 for a "
        f"correct server. {repeats} runs per server, the servers in turn each round.",
        "",
        "| server | run | fast failed / total | fast max ms | `/slow` | slow running at "
        "trigger | reload exit | reload said | note |",
        "|---|---:|---|---:|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: ([s.label for s in DRAIN_SPECS].index(r.server),
                                           r.run)):  # fmt: skip
        reload = row.reload
        running = "—" if row.slow_running is None else ("yes" if row.slow_running else "no")
        fast_max = "—" if row.fast_max is None else f"{row.fast_max * 1000:.0f}"
        lines.append(
            f"| {row.server} | {row.run} | {row.fast_failures} / {row.fast_requests} "
            f"| {fast_max} | {row.slow} | {running} | {reload.exit if reload else '—'} "
            f"| {escape(reload.said) if reload else '—'} | {escape(row.note)} |"
        )
    return [*lines, "", *drain_summary(rows), ""]


def drain_summary(rows: list[DrainRow]) -> list[str]:
    lines = ["| server | fast failed per run | `/slow` answered / cut |", "|---|---|---|"]
    for spec in DRAIN_SPECS:
        mine = sorted((r for r in rows if r.server == spec.label), key=lambda r: r.run)
        if not mine:
            continue
        counts = ", ".join("err" if r.fast_failed is None else str(r.fast_failed) for r in mine)
        answered = sum(r.slow.startswith("answered") for r in mine)
        cut = sum(r.slow.startswith("cut") for r in mine)
        lines.append(f"| {spec.label} | {counts} | {answered} / {cut} |")
    return lines


# ---------------------------------------------------------------- case 3: keep-alive speed


@dataclass(frozen=True)
class Tree:
    name: str  # "before" or "after"
    src: Path
    ref: str
    shown_as: str  # src in the report, without temp paths


@dataclass(frozen=True)
class SpeedRow:
    tree: str
    run: int
    rps: float | None = None
    requests: int = 0
    errors: int = 0
    cpu_us: float | None = None  # worker CPU time per request
    note: str = ""


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """`git worktree add --detach` of ref in a temp dir, removed afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="after-ready-before-"))
    path = parent / "tree"
    git = ["git", "-C", str(servers.REPO), "worktree"]
    subprocess.run([*git, "add", "--detach", str(path), ref], check=True,
                   capture_output=True, text=True, timeout=120)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run([*git, "remove", "--force", str(path)], capture_output=True, timeout=60)
        subprocess.run([*git, "prune"], capture_output=True, timeout=60)
        shutil.rmtree(parent, ignore_errors=True)


def tree_env(tree: Tree) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree.src)}


def imported_from(tree: Tree) -> str:
    """Where `import unbroken` resolves with this tree's PYTHONPATH (a check, for the note)."""
    code = "import unbroken, os; print(os.path.dirname(unbroken.__file__))"
    python = servers.unbroken_argv()[0]
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30,
                          env=tree_env(tree))  # fmt: skip
    return done.stdout.strip() or f"import failed: {done.stderr.strip()[-120:]}"


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes, from /proc/<pid>/stat (fields 14 and 15)."""
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # fields[0] is field 3, the state
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICK


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


# ---------------------------------------------------------------- running the cases


def in_temp_root(prefix: str, keep: bool, body: Callable[[Path], object]) -> object:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return body(root)
    finally:
        if keep:
            print(f"    kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def crash_case(args: argparse.Namespace) -> list[str]:
    rows: list[CrashRow] = []
    for spec in CRASH_SPECS:
        started = time.monotonic()
        try:
            row = in_temp_root("after-ready-crash-", args.keep, lambda r, s=spec: run_crash(s, r))
        except Exception as error:  # one broken row must not lose the others
            row = CrashRow(spec.label, note=f"bench error: {error!r}"[:160])
        assert isinstance(row, CrashRow)
        rows.append(row)
        progress("crash-after-ready", spec.label, started)
    return render_crash(rows)


def drain_case(args: argparse.Namespace) -> list[str]:
    rows: list[DrainRow] = []
    for run in range(1, args.repeats + 1):
        for spec in DRAIN_SPECS:
            started = time.monotonic()
            try:
                row = in_temp_root("after-ready-drain-", args.keep,
                                   lambda r, s=spec, n=run: run_drain(s, n, r))  # fmt: skip
            except Exception as error:
                row = DrainRow(spec.label, run, note=f"bench error: {error!r}"[:160])
            assert isinstance(row, DrainRow)
            rows.append(row)
            progress("slow-request-drain", f"{spec.label} run {run}", started)
    return render_drain(rows, args.repeats)


def speed_case(args: argparse.Namespace) -> list[str]:
    if not Path(WRK).exists():
        return ["## 3. keepalive-before-after", "", f"not run: {WRK} is missing", ""]
    try:
        with (
            worktree(args.before) as before_root,
            tempfile.TemporaryDirectory(prefix="after-ready-speed-") as scratch,
        ):
            trees = [Tree("before", before_root / "src", f"git {args.before}", "<worktree>/src"),
                     Tree("after", servers.REPO / "src", "working tree", "src")]  # fmt: skip
            checks = {tree.name: imported_from(tree) for tree in trees}
            rows = speed_runs(trees, args.repeats, Path(scratch))
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", "") or ""
        return ["## 3. keepalive-before-after", "",
                f"not run: {error!r} {detail.strip()[:200]}", ""]  # fmt: skip
    for tree in trees:
        checks[tree.name] = checks[tree.name].replace(str(tree.src), tree.shown_as)
    return render_speed(rows, trees, checks)


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


CASES: dict[str, Callable[[argparse.Namespace], list[str]]] = {
    "crash-after-ready": crash_case,
    "slow-request-drain": drain_case,
    "keepalive-before-after": speed_case,
}


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASE_NAMES),
                        help=f"comma-separated subset of {', '.join(CASE_NAMES)}")  # fmt: skip
    parser.add_argument("--before", default=DEFAULT_BEFORE,
                        help="git ref measured as 'before' in keepalive-before-after")  # fmt: skip
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs per server (slow-request-drain) and per tree (keep-alive)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp deploy roots (logs)")
    args = parser.parse_args(argv)
    args.case_list = [name for name in args.cases.split(",") if name]
    if unknown := set(args.case_list) - set(CASE_NAMES):
        parser.error(f"unknown cases {sorted(unknown)}; known: {', '.join(CASE_NAMES)}")
    if not args.case_list or args.repeats < 1:
        parser.error("no case selected, or --repeats below 1")
    return args


def header(args: argparse.Namespace, took: float, load: tuple[str, str]) -> list[str]:
    command = shlex.join(["python", "bench/after_ready.py", *sys.argv[1:]])
    versions = servers.installed_peer_versions()
    return [
        f"# After Ready: crash, drain and keep-alive cost ({datetime.date.today().isoformat()})",
        "",
        f"`{command}`, took {took:.0f} s; {os.cpu_count()} CPUs, load average before / after "
        f"{load[0]} / {load[1]}; Python {sys.version.split()[0]}; unbroken from the working "
        f"tree (`{git_describe()}`) run by {servers.PEERS_VENV.name}'s Python; gunicorn "
        f"{versions.get('gunicorn', '?')}. All traffic on 127.0.0.1.",
        "",
    ]


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
    started, load_before = time.monotonic(), load_average()
    sections = [line for name in CASE_NAMES if name in args.case_list
                for line in CASES[name](args)]  # fmt: skip
    took = time.monotonic() - started
    report = "\n".join([*header(args, took, (load_before, load_average())), *sections])
    print(report)
    RESULTS.mkdir(exist_ok=True)
    path = report_path(args.case_list)
    path.write_text(report)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
