"""Issue 15, item 5, the cost curve: req/s and worker RSS as idle connections grow.

For each server (CURVE_SERVERS that speed.py's --servers selects), each worker count
(1, 2) and each level of idle kept-alive connections per worker (32, 1,000, 10,000),
a fresh server is started, and then:

1. idle holders (bench/idle_holder.py, separate processes) open level x workers
   connections, each of which sends one request and then stays silent, so the server
   holds them as kept-alive connections between requests;
2. the workers' RSS is read (VmRSS, /proc) once they are all open;
3. `wrk -t2 -c32` runs speed.py's `hello` case beside them: the req/s a server still
   serves while it holds them;
4. the holders count how many of their connections the server kept open, then close them.

Memory per idle connection is (RSS of the workers at the top level - at the bottom
level) / (connections held at the top - at the bottom), from one worker (no sharing out
of connections between workers to blur it), with 2 workers beside it. RSS is
user-space memory only: the kernel's socket buffers are not in it, for any server.

Every server is told to keep idle connections for the whole point (keep-alive 300 s:
unbroken's and uvicorn's default of 5 s would close them mid-measurement), and unbroken
to hold them all (`--worker-connections`: at its default of 1,000 it closes the
longest-idle connection for each new client). A fresh server per point, so one
point's memory is never reused by the next.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import selectors
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import goals
import servers
from speed_servers import (
    Server,
    answers,
    free_port,
    last_line,
    rss_mib,
    run_chart_script,
    worker_pids,
)
from speed_servers import start as start_server
from speed_wrk import CASES, WrkFailed, run_wrk, wrk_argv

HELLO = CASES[0]
LEVELS = (32, 1_000, 10_000)  # idle connections per worker
WORKER_COUNTS = (1, 2)
CURVE_SERVERS = ("unbroken-asgi", "unbroken-wsgi", "uvicorn")
KEEP_ALIVE = 300  # seconds: longer than any point
# Per holder process: under its RLIMIT_NOFILE (20,000 here), and under the ~28,000
# ephemeral ports of its one source address.
PER_HOLDER = 10_000
HOLDER = servers.BENCH / "idle_holder.py"
HOLDER_OPEN_TIMEOUT = 90.0  # its own bound is 60 s; this is the bench's, past it
SETTLE = 1.0  # after the last connection opened, before RSS is read
READY_TIMEOUT = 20.0
ALL_WORKERS_TIMEOUT = 5.0
BEND_SHARE = 0.9  # req/s below this share of the bottom level's: the curve has bent
CHART_SCRIPT = servers.BENCH / "cost_curve_chart.py"


@dataclass(frozen=True)
class Point:
    server: str  # speed_servers key
    workers: int
    level: int  # idle connections asked for, per worker
    held: int | None = None  # still open at the end, all workers together
    rss_mib: tuple[float, ...] = ()  # per worker, with the idle connections open
    rps: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    note: str = ""

    @property
    def rss_total(self) -> float | None:
        return sum(self.rss_mib) if self.rss_mib else None


# ---------------------------------------------------------------- pure: reading the curve


def kib_per_connection(low: Point, high: Point) -> float | None:
    """RSS added per idle connection between two levels of one server and worker count."""
    if low.rss_total is None or high.rss_total is None or low.held is None or high.held is None:
        return None
    if high.held <= low.held:
        return None
    return (high.rss_total - low.rss_total) * 1024 / (high.held - low.held)


def bend(points: list[Point]) -> str:
    """The first level whose req/s is below BEND_SHARE of the best of the levels before
    it, in words (points by level). The best, not the first: one unlucky run at the
    bottom level must not hide a drop above it."""
    measured = [(p.level, p.rps) for p in points if p.rps is not None]
    if len(measured) < 2:
        return "not enough points"
    best_level, best = measured[0]
    share = 1.0
    for level, rps in measured[1:]:
        share = rps / best
        if share < BEND_SHARE:
            return f"bends by {level:,}/worker ({share:.0%} of the req/s at {best_level:,})"
        if rps > best:
            best_level, best = level, rps
    return f"flat to {measured[-1][0]:,}/worker ({share:.0%} of the best req/s below it)"


def with_workers(argv: list[str], workers: int) -> list[str]:
    """speed_servers' command line with another worker count (its -w / --workers value)."""
    words = list(argv)
    for flag in ("-w", "--workers"):
        if flag in words:
            words[words.index(flag) + 1] = str(workers)
    return words


def curve_flags(program: str, connections: int) -> list[str]:
    """Keep idle connections for the whole point, and (unbroken) hold all of them."""
    if program == "unbroken":
        return ["--keep-alive", str(KEEP_ALIVE), "--worker-connections", str(connections)]
    if program == "uvicorn":
        return ["--timeout-keep-alive", str(KEEP_ALIVE)]
    return []


# ---------------------------------------------------------------- measuring


def run(context: goals.Context) -> goals.Report:
    raise_file_limit()  # the servers we start inherit it
    chosen = [s for s in context.servers if s.key in CURVE_SERVERS]
    points: list[Point] = []
    for server in chosen:
        if missing := context.programs.missing(server.program):
            points += [Point(server.key, w, n, note=f"not run: {missing}")
                       for w in WORKER_COUNTS for n in LEVELS]  # fmt: skip
            continue
        for workers in WORKER_COUNTS:
            for level in LEVELS:
                print(f"[curve] {server.key} -w {workers}: {level:,} idle/worker",
                      file=sys.stderr, flush=True)  # fmt: skip
                points.append(measure_point(context, server, workers, level))
    report = goals.Report(judge(points), render(points, context.duration))
    if context.chart_stem is not None and points:
        chart = context.chart_stem.with_name(context.chart_stem.name + "-curve.png")
        if draw_chart(points, chart):
            report.files.append(chart)
            report.details.append(f"Chart: `{chart.name}`.\n")
    return report


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def measure_point(context: goals.Context, server: Server, workers: int, level: int) -> Point:
    total = level * workers
    # Every connection may land on one worker: the cap must not close any of them.
    flags = curve_flags(server.program, total + 1000)
    configured = dataclasses.replace(
        server, argv=lambda program, port, run_dir: [
            *with_workers(server.argv(program, port, run_dir), workers), *flags])  # fmt: skip
    run_dir = Path(tempfile.mkdtemp(prefix=f"curve-{server.key}-", dir=context.scratch))
    port = free_port()
    log = run_dir / "server.log"
    master = start_server(configured, context.programs, port, run_dir, log)
    holders: list[subprocess.Popen[str]] = []
    try:
        if reason := wait_serving(master, port, workers, log):
            return Point(server.key, workers, level, note=f"did not start: {reason}")
        pids = worker_pids(master.pid) or [master.pid]  # uvicorn -w 1: the master serves
        run_wrk(wrk_argv(HELLO, port, 1, Path("/dev/null")), 1)  # warm-up, not counted
        holders, opened, failed = open_idle(port, total)
        time.sleep(SETTLE)
        sizes = tuple(size for size in map(rss_mib, pids) if size is not None)
        result = run_wrk(wrk_argv(HELLO, port, context.duration, Path("/dev/null")),
                         context.duration)  # fmt: skip
        held = still_open(holders)
        note = f"{failed} of {total} failed to open" if failed else ""
        if held < opened:
            note += f"; server closed {opened - held} idle"
        return Point(server.key, workers, level, held, sizes, result.rps, result.p99_ms,
                     result.errors, note.strip("; "))  # fmt: skip
    except (WrkFailed, OSError, subprocess.SubprocessError, ValueError) as error:
        return Point(server.key, workers, level, note=f"bench error: {error}"[:160])
    finally:
        close_holders(holders)
        servers.stop_server(master)


def wait_serving(master: subprocess.Popen[bytes], port: int, workers: int,
                 log: Path) -> str | None:  # fmt: skip
    """None once the app answers and `workers` workers exist (a single-process server
    has none besides itself), else why not; bounded."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not answers(port):
        if master.poll() is not None:
            return f"exited {master.returncode}: {last_line(log)}"
        if time.monotonic() > deadline:
            return f"no answer in {READY_TIMEOUT:.0f} s: {last_line(log)}"
        time.sleep(0.1)
    deadline = time.monotonic() + ALL_WORKERS_TIMEOUT
    while 0 < len(worker_pids(master.pid)) < workers and time.monotonic() < deadline:
        time.sleep(0.1)
    return None


def open_idle(port: int, total: int) -> tuple[list[subprocess.Popen[str]], int, int]:
    """Start the holders (one source address each) and wait until each has opened its
    share: (holders, connections opened, failed)."""
    holders = []
    for number in range(math.ceil(total / PER_HOLDER)):
        share = min(PER_HOLDER, total - number * PER_HOLDER)
        argv = [sys.executable, str(HOLDER), str(port), str(share), f"127.0.0.{10 + number}"]
        holders.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True))  # fmt: skip
    opened = failed = 0
    for holder in holders:
        words = read_line(holder, HOLDER_OPEN_TIMEOUT).split()  # "opened N failed M"
        if len(words) != 4:
            raise ValueError(f"holder said {' '.join(words)!r}")
        opened, failed = opened + int(words[1]), failed + int(words[3])
    return holders, opened, failed


def read_line(holder: subprocess.Popen[str], timeout: float) -> str:
    """One line of a holder's stdout, or "" after `timeout` (its own bounds are shorter)."""
    assert holder.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(holder.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return holder.stdout.readline()


def still_open(holders: list[subprocess.Popen[str]]) -> int:
    count = 0
    for holder in holders:
        assert holder.stdin is not None
        holder.stdin.write("check\n")
        holder.stdin.flush()
        words = read_line(holder, 10.0).split()
        count += int(words[1]) if len(words) == 2 else 0
    return count


def close_holders(holders: list[subprocess.Popen[str]]) -> None:
    """EOF on stdin closes a holder's connections; a holder that lingers is killed, by PID."""
    for holder in holders:
        try:
            if holder.stdin is not None:
                holder.stdin.close()
        except OSError:
            pass
    for holder in holders:
        try:
            holder.wait(10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait(5)


# ---------------------------------------------------------------- judging and rendering


def series(points: list[Point], server: str, workers: int) -> list[Point]:
    return sorted((p for p in points if p.server == server and p.workers == workers),
                  key=lambda p: p.level)  # fmt: skip


def per_connection(points: list[Point], server: str, workers: int) -> float | None:
    line = series(points, server, workers)
    return kib_per_connection(line[0], line[-1]) if len(line) >= 2 else None


def judge(points: list[Point]) -> list[goals.Goal]:
    found = []
    item = "5 the cost curve"
    theirs = per_connection(points, "uvicorn", 1)
    for mine in ("unbroken-asgi", "unbroken-wsgi"):
        if not series(points, mine, 1):
            continue
        kib = per_connection(points, mine, 1)
        claim = f"memory per idle connection ({mine.split('-')[1].upper()}) ≤ uvicorn's"
        ratio, met = goals.at_most(kib, theirs)
        figure = (f"{fmt(kib, 1)} KiB vs uvicorn {fmt(theirs, 1)} KiB per connection "
                  f"(1 worker, {LEVELS[0]} → {LEVELS[-1]:,} idle)")  # fmt: skip
        found.append(goals.Goal(item, claim, figure, ratio, met))
        bends = "; ".join(f"-w {w}: {bend(series(points, mine, w))}" for w in WORKER_COUNTS)
        found.append(goals.Goal(item, f"where the req/s curve bends ({mine})", bends, None,
                                None, verdict_text="reported"))  # fmt: skip
    return found


def fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render(points: list[Point], duration: int) -> list[str]:
    lines = [
        "### Cost curve (item 5)",
        "",
        f"A fresh server per row; idle kept-alive connections (one request each, then "
        f"silent) held by bench/idle_holder.py; then `wrk -t2 -c32 -d{duration}s` on `GET /` "
        f"beside them. RSS: VmRSS of each worker with the idle connections open. "
        f"unbroken runs with `--keep-alive {KEEP_ALIVE} --worker-connections "
        f"<all of them + 1000>`, uvicorn with `--timeout-keep-alive {KEEP_ALIVE}`.",
        "",
        "| server | workers | idle / worker | held | req/s | p99 ms | RSS / worker MiB "
        "| KiB per idle conn (from the bottom row) | errors | note |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for key in dict.fromkeys(p.server for p in points):
        for workers in WORKER_COUNTS:
            line = series(points, key, workers)
            for point in line:
                rss = " / ".join(f"{size:.1f}" for size in point.rss_mib) or "—"
                kib = kib_per_connection(line[0], point) if point is not line[0] else None
                lines.append(
                    f"| {key} | {workers} | {point.level:,} "
                    f"| {'—' if point.held is None else f'{point.held:,}'} "
                    f"| {fmt(point.rps, 0)} | {fmt(point.p99_ms, 2)} | {rss} | {fmt(kib, 2)} "
                    f"| {point.errors} | {point.note.replace('|', '/')} |"
                )
    lines.append("")
    for key in dict.fromkeys(p.server for p in points):
        bends = "; ".join(f"{w} worker(s): {bend(series(points, key, w))}" for w in WORKER_COUNTS)
        lines.append(f"- {key}: req/s {bends}.")
    return [*lines, ""]


def chart_data(points: list[Point]) -> dict[str, object]:
    lines = []
    for key in dict.fromkeys(p.server for p in points):
        for workers in WORKER_COUNTS:
            line = series(points, key, workers)
            lines.append({
                "label": f"{key} -w {workers}",
                "levels": [p.level for p in line],
                "rps": [p.rps for p in line],
                "rss": [sum(p.rss_mib) / len(p.rss_mib) if p.rss_mib else None for p in line],
            })  # fmt: skip
    return {"title": "cost curve: idle kept-alive connections per worker", "lines": lines}


def draw_chart(points: list[Point], output: Path) -> bool:
    return run_chart_script(CHART_SCRIPT, chart_data(points), output, "curve chart")
