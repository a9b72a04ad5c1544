"""Throughput of unbroken against gunicorn, uWSGI, uvicorn and granian, from one command.

Run: python bench/speed.py [--quick] [--repeats N] [--duration S] [--warmup S]
                           [--cases hello,close,json,stream,upload,sleep|none]
                           [--servers unbroken,gunicorn,uwsgi,uvicorn,granian,...]
                           [--goals tails,reload,curve|all] [--reload-runs N]
                           [--out DIR] [--smoke]

The peers come pinned from PyPI into bench/.venv-peers (servers.ensure_peers). Each
repeat starts every server in turn (the order rotates between repeats, so drift and
position hit all alike) on 127.0.0.1 with the same app, 2 workers and 4 threads where
threads exist, runs every case against it with wrk from a separate process, samples the
workers' RSS, and stops it by process group. The table reports medians over repeats and
unbroken's ratio to each peer of the same interface; it is printed and written as
Markdown, with a PNG chart of the ratios, to bench/results/speed-<date>[-quick].*.
Each per-case row also has the workers' CPU time per request (from /proc, around the
measured run), and issue 15's items 1 and 2 are judged from the table (path_goals).
--goals adds its items 3-5 (bench/goals.py): each measured by its own module, one
Goals section with each figure, its ratio and met / not met.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import cost_curve
import goals
import reload_spike
import servers
import tails
from speed_servers import (
    SERVERS,
    TICKS_PER_SECOND,
    Programs,
    Server,
    accept_queue,
    cpu_ticks,
    free_port,
    rss_mib,
    run_chart_script,
    wait_ready,
    worker_pids,
)
from speed_servers import start as start_server
from speed_wrk import (
    CASES,
    WRK,
    WRK_CONNECTIONS,
    WRK_THREADS,
    Case,
    ProtocolCheck,
    WrkFailed,
    WrkResult,
    check_protocol,
    run_wrk,
    write_upload_script,
    wrk_argv,
    wrk_version,
)

RESULTS = servers.BENCH / "results"
CHART_SCRIPT = servers.BENCH / "speed_chart.py"
SMOKE_SERVERS = ("unbroken-wsgi", "gunicorn-gthread", "unbroken-asgi", "uvicorn")
# --goals: issue 15's items 3, 4 and 5, in the order they run.
GOAL_RUNNERS: dict[str, goals.Runner] = {
    "tails": tails.run, "reload": reload_spike.run, "curve": cost_curve.run,
}  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """What one invocation measures, and how long each measurement lasts."""

    servers: tuple[Server, ...]
    cases: tuple[Case, ...]
    repeats: int
    duration: int
    warmup: int
    mode: str  # "", "quick" or "smoke": names the output files
    out: Path
    chart: bool
    goals: tuple[str, ...] = ()  # GOAL_RUNNERS keys
    reload_runs: int = 5


@dataclass(frozen=True)
class Measured:
    wrk: WrkResult
    rss_mib: float | None  # mean over the workers, at the end of the run
    workers: int
    waiting: float | None  # median of the listen socket's accept queue, keep-alive cases
    cpu_us: float | None = None  # the workers' CPU time per request (cpu_per_request.py's figure)


@dataclass
class Cell:
    """Everything one server did in one case, over all repeats."""

    runs: list[Measured] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    check: ProtocolCheck = field(default_factory=ProtocolCheck)


@dataclass(frozen=True)
class Row:
    """A cell reduced to medians; None where no run succeeded."""

    rps: float | None
    p50: float | None
    p99: float | None
    max: float | None
    rss: float | None
    cpu: float | None  # worker CPU-µs per request
    errors: str
    note: str
    comparable: bool  # the row measures the case (else no ratios)
    tail_comparable: bool  # its latencies cover every client (else no p99 ratio)


Cells = dict[tuple[str, str], Cell]


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse_plan(argv)
    if not Path(WRK).exists():
        print(f"{WRK} is missing: apt-get install wrk", file=sys.stderr)
        return 2
    programs = Programs(peers_venv=plan.mode != "smoke")
    if programs.peers_venv and any(s.program != "unbroken" for s in plan.servers):
        install_peers()
    started = time.monotonic()
    load_before = os.getloadavg()
    commands: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="unbroken-speed-") as scratch:
        cells = measure(plan, programs, Path(scratch), commands)
        goal_report = run_goals(plan, programs, Path(scratch))
    took = time.monotonic() - started
    machine = render_machine(programs, (load_before, os.getloadavg()))
    report = render(plan, cells, commands, took, machine, goal_report)
    print(report)
    written = write_outputs(plan, cells, report) + goal_report.files
    print("\n".join(f"wrote {path}" for path in written))
    print(f"took {format_seconds(took)}")
    return 0


def parse_plan(argv: Sequence[str] | None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    # Whole seconds: wrk takes no fractions.
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of uncounted wrk before each run (0: none)")  # fmt: skip
    parser.add_argument("--cases", default=",".join(c.key for c in CASES),
                        help="comma-separated, or none (only --goals)")  # fmt: skip
    parser.add_argument("--servers", default="all",
                        help="keys, programs such as gunicorn, or wsgi / asgi")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="1 repeat of 2 s")
    parser.add_argument("--smoke", action="store_true",
                        help="unbroken, and gunicorn and uvicorn from this Python if it has "
                             "them: hello only, 1 s, no peers venv, no chart")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write results")
    parser.add_argument("--goals", default="",
                        help=f"issue 15's goals to measure too: {','.join(GOAL_RUNNERS)} or all")
    parser.add_argument("--reload-runs", type=int, default=5,
                        help="reloads per unbroken interface for --goals reload")  # fmt: skip
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else ""
    if args.smoke:
        args.repeats, args.duration, args.warmup = 1, 1, 0
        args.cases = "hello"
        if args.servers == "all":
            args.servers = ",".join(SMOKE_SERVERS)
    elif args.quick:
        args.repeats, args.duration = 1, 2
    if args.repeats < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--repeats must be >= 1, --duration > 0 and --warmup >= 0")
    return Plan(
        servers=select_servers(parser, args.servers),
        cases=select_cases(parser, args.cases),
        repeats=args.repeats, duration=args.duration, warmup=args.warmup,
        mode=mode, out=args.out, chart=not args.smoke,
        goals=select_goals(parser, args.goals), reload_runs=max(1, args.reload_runs),
    )  # fmt: skip


def select_servers(parser: argparse.ArgumentParser, spec: str) -> tuple[Server, ...]:
    """Keys (`gunicorn-sync`), programs (`gunicorn`) or interfaces (`wsgi`), in table order."""
    if spec == "all":
        return SERVERS
    wanted = {word.strip() for word in spec.split(",") if word.strip()}
    known = {s.key for s in SERVERS} | {s.program for s in SERVERS} | {"wsgi", "asgi"}
    if unknown := wanted - known:
        parser.error(f"unknown servers {sorted(unknown)}; known: {sorted(known)}")
    return tuple(s for s in SERVERS if wanted & {s.key, s.program, s.interface})


def select_goals(parser: argparse.ArgumentParser, spec: str) -> tuple[str, ...]:
    words = {word.strip() for word in spec.split(",") if word.strip()}
    wanted = set(GOAL_RUNNERS) if words == {"all"} else words
    if unknown := wanted - set(GOAL_RUNNERS):
        parser.error(f"unknown goals {sorted(unknown)}; known: {sorted(GOAL_RUNNERS)}")
    return tuple(name for name in GOAL_RUNNERS if name in wanted)


def select_cases(parser: argparse.ArgumentParser, spec: str) -> tuple[Case, ...]:
    if spec == "none":
        return ()
    wanted = {word.strip() for word in spec.split(",") if word.strip()}
    known = {c.key for c in CASES}
    if unknown := wanted - known:
        parser.error(f"unknown cases {sorted(unknown)}; known: {sorted(known)}")
    return tuple(c for c in CASES if c.key in wanted)


def install_peers() -> None:
    """Install the pinned peers; if that fails, their rows say so and unbroken still runs."""
    try:
        servers.ensure_peers()
    except (OSError, subprocess.SubprocessError) as error:
        print(f"warning: installing the peers failed: {error}", file=sys.stderr)


def measure(plan: Plan, programs: Programs, scratch: Path, commands: dict[str, str]) -> Cells:
    """Every repeat runs every server, so a slow drift of the machine hits all of them."""
    cells: Cells = {(s.key, c.key): Cell() for s in plan.servers for c in plan.cases}
    if not plan.cases:
        return cells
    upload_script = write_upload_script(scratch)
    for repeat in range(plan.repeats):
        shift = repeat % len(plan.servers)
        for server in plan.servers[shift:] + plan.servers[:shift]:
            print(f"[{repeat + 1}/{plan.repeats}] {server.key}", file=sys.stderr, flush=True)
            run_dir = scratch / f"{server.key}-{repeat}"
            run_dir.mkdir()
            serve_cases(plan, programs, server, run_dir, upload_script, cells, commands)
    return cells


def run_goals(plan: Plan, programs: Programs, scratch: Path) -> goals.Report:
    """Each goal module in turn, on the same servers; one report for the Goals section."""
    report = goals.Report()
    if plan.goals:
        plan.out.mkdir(parents=True, exist_ok=True)
    context = goals.Context(
        servers=plan.servers, programs=programs, scratch=scratch, duration=plan.duration,
        chart_stem=plan.out / output_stem(plan) if plan.chart else None,
        reload_runs=plan.reload_runs, quick=plan.mode == "quick",
    )  # fmt: skip
    for name in plan.goals:
        part = GOAL_RUNNERS[name](context)
        report.goals += part.goals
        report.details += part.details
        report.files += part.files
    return report


def serve_cases(plan: Plan, programs: Programs, server: Server, run_dir: Path,
                upload_script: Path, cells: Cells, commands: dict[str, str]) -> None:  # fmt: skip
    """Start the server once, run every case on it, and stop it whatever happens."""
    if missing := programs.missing(server.program):
        fail_all(plan, server, cells, f"not run: {missing}")
        return
    port = free_port()
    log = run_dir / "server.log"
    master = start_server(server, programs, port, run_dir, log)
    argv = cast("list[str]", master.args)  # start() passes a list of str
    commands.setdefault(server.key, display_command(argv, port, run_dir))
    try:
        if reason := wait_ready(master, port, log):
            fail_all(plan, server, cells, f"did not start: {reason}")
            return
        for case in plan.cases:
            cell = cells[(server.key, case.key)]
            cell.check = check_protocol(case, port)
            measure_case(plan, case, master.pid, port, upload_script, cell)
    finally:
        servers.stop_server(master)


def measure_case(plan: Plan, case: Case, master: int, port: int, upload_script: Path,
                 cell: Cell) -> None:  # fmt: skip
    queue: list[int] = []
    started = time.monotonic()

    def sample_queue() -> None:
        # After the first second, when every client has connected: what waits then waits.
        if not case.close and time.monotonic() - started > 1.0:
            waiting = accept_queue(port)
            if waiting is not None:
                queue.append(waiting)

    try:
        if plan.warmup > 0:
            run_wrk(wrk_argv(case, port, plan.warmup, upload_script), plan.warmup)
        started = time.monotonic()
        argv = wrk_argv(case, port, plan.duration, upload_script)
        ticks = cpu_ticks(worker_pids(master))
        result = run_wrk(argv, plan.duration, sample_queue)
        ticks = cpu_ticks(worker_pids(master)) - ticks
        if result.requests == 0:  # latencies of nothing: a failed run, not a fast one
            raise WrkFailed(f"no response completed in {plan.duration:g} s")
    except WrkFailed as error:
        cell.failures.append(str(error))
        print(f"    {case.key}: {error}", file=sys.stderr, flush=True)
        return
    workers = worker_pids(master)
    sizes = [size for size in map(rss_mib, workers) if size is not None]
    rss = statistics.fmean(sizes) if sizes else None
    waiting = statistics.median(queue) if queue else None
    cpu_us = ticks / TICKS_PER_SECOND * 1e6 / result.requests if ticks >= 0 else None
    cell.runs.append(Measured(result, rss, len(workers), waiting, cpu_us))
    print(f"    {case.key}: {result.rps:.0f} req/s, p99 {result.p99_ms:.2f} ms, "
          f"{result.errors} errors", file=sys.stderr, flush=True)  # fmt: skip


def fail_all(plan: Plan, server: Server, cells: Cells, reason: str) -> None:
    print(f"    {reason}", file=sys.stderr, flush=True)
    for case in plan.cases:
        cells[(server.key, case.key)].failures.append(reason)


def display_command(argv: Sequence[str], port: int, run_dir: Path) -> str:
    """The command line as the README can show it: no temp paths, no machine paths."""
    words = ["PORT" if word == str(port) else word for word in argv]
    if Path(words[0]).name == "unbroken":  # the installed script, wherever it lives
        words[0] = "unbroken"
    text = shlex.join(words).replace(str(run_dir), "<run>")
    text = text.replace(f"127.0.0.1:{port}", "127.0.0.1:PORT")
    return text.replace(f"{servers.REPO}/", "").replace(sys.executable, "python")


# ---------------------------------------------------------------- reducing and rendering


def reduce(cell: Cell, repeats: int) -> Row:
    runs = cell.runs
    notes = [cell.check.note] if cell.check.note else []
    if cell.failures and runs:
        notes.append(f"{len(cell.failures)} of {repeats} runs failed: {cell.failures[0]}")
    elif cell.failures:
        notes.append(cell.failures[0])
    workers = {run.workers for run in runs}
    if workers and workers != {servers.WORKERS}:
        notes.append(f"workers found: {sorted(workers)}")
    if not runs:
        return Row(None, None, None, None, None, None, "—", "; ".join(notes), False, False)
    # Clients stuck behind kept-alive ones; a server that closes every time rotates them.
    waiting = statistics.median(r.waiting or 0 for r in runs) if cell.check.keeps_alive else 0
    if waiting >= 1:
        notes.append(f"{waiting:g} of {WRK_CONNECTIONS} connections sat un-accepted in the "
                     "listen queue (median): latencies cover the served ones only")  # fmt: skip

    def median(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    return Row(
        rps=median([r.wrk.rps for r in runs]),
        p50=median([r.wrk.p50_ms for r in runs]),
        p99=median([r.wrk.p99_ms for r in runs]),
        max=median([r.wrk.max_ms for r in runs]),
        rss=median([r.rss_mib for r in runs]),
        cpu=median([r.cpu_us for r in runs]),
        errors=format_errors(runs),
        note="; ".join(notes),
        comparable=cell.check.comparable,
        tail_comparable=cell.check.comparable and waiting < 1,
    )


def reduce_all(plan: Plan, cells: Cells) -> dict[str, dict[str, Row]]:
    """Rows by case key, then server key."""
    return {c.key: {s.key: reduce(cells[(s.key, c.key)], plan.repeats) for s in plan.servers}
            for c in plan.cases}  # fmt: skip


def format_errors(runs: list[Measured]) -> str:
    """All errors of all repeats, by wrk's kinds: one bad run must show."""
    kinds: dict[str, int] = {}
    for run in runs:
        for kind, count in run.wrk.error_kinds().items():
            kinds[kind] = kinds.get(kind, 0) + count
    total = sum(kinds.values())
    if not total:
        return "0"
    return f"{total} ({', '.join(f'{kind} {count}' for kind, count in kinds.items())})"


def ratio(mine: float | None, theirs: float | None) -> float | None:
    return mine / theirs if mine and theirs else None


def unbroken_key(server: Server, case: Case) -> str:
    if server.interface == "wsgi" and case.threads_matter:
        return "unbroken-wsgi-threads"  # 4 threads, like the peers (Case.threads_matter)
    return f"unbroken-{server.interface}"


def ratios(rows: dict[str, Row], server: Server,
           case: Case) -> tuple[float | None, float | None]:  # fmt: skip
    """unbroken's req/s and p99 over this peer's, when both rows measure the case."""
    me, them = rows.get(unbroken_key(server, case)), rows[server.key]
    if server.program == "unbroken" or me is None or not (me.comparable and them.comparable):
        return None, None
    tails = me.tail_comparable and them.tail_comparable
    return ratio(me.rps, them.rps), ratio(me.p99, them.p99) if tails else None


# Issue 15's items 1 and 2, read off the table: (case, unbroken's row, the peer's row).
CPU_BOUNDS = tuple((case, mine, peer) for case in ("hello", "json", "upload")
                   for mine, peer in (("unbroken-wsgi", "uwsgi"), ("unbroken-asgi", "uvicorn"),
                                      ("unbroken-asgi", "granian-asgi")))  # fmt: skip
RPS_BOUNDS = (
    ("hello", "unbroken-wsgi", "uwsgi"), ("hello", "unbroken-wsgi", "granian-wsgi"),
    ("hello", "unbroken-asgi", "uvicorn"), ("hello", "unbroken-asgi", "granian-asgi"),
    ("close", "unbroken-wsgi", "granian-wsgi"), ("close", "unbroken-wsgi", "uvicorn"),
    ("close", "unbroken-asgi", "granian-asgi"), ("close", "unbroken-asgi", "uvicorn"),
)  # fmt: skip


def path_goals(tables: dict[str, dict[str, Row]]) -> list[goals.Goal]:
    """Items 1 (worker CPU per request) and 2 (req/s), from this run's rows.

    A goal is listed when its case and both servers were in the run; it is "not
    measured" when either row failed or does not measure the case (see its note).
    """
    found: list[goals.Goal] = []
    for item, bounds, at_most_peer in (("1 CPU per request", CPU_BOUNDS, True),
                                       ("2 throughput", RPS_BOUNDS, False)):  # fmt: skip
        for case_key, mine_key, peer_key in bounds:
            if (pair := _rows(tables, case_key, mine_key, peer_key)) is None:
                continue
            mine, peer = pair
            comparable = mine.comparable and peer.comparable
            if at_most_peer:  # CPU: ours over theirs
                value, met = goals.at_most(mine.cpu, peer.cpu) if comparable else (None, None)
                claim = f"{case_key}: {mine_key} ≤ {peer_key} (worker CPU-µs/req)"
                figure = f"{format_mib(mine.cpu)} vs {format_mib(peer.cpu)} µs"
            else:  # req/s: theirs over ours, so that ≤ 1.00 meets it here too
                value, met = goals.at_most(peer.rps, mine.rps) if comparable else (None, None)
                claim = f"{case_key}: {mine_key} ≥ {peer_key} (req/s, ratio theirs ÷ ours)"
                figure = f"{format_rps(mine.rps)} vs {format_rps(peer.rps)} req/s"
            found.append(goals.Goal(item, claim, figure, value, met))
    return found


def _rows(tables: dict[str, dict[str, Row]], case_key: str, mine_key: str,
          peer_key: str) -> tuple[Row, Row] | None:  # fmt: skip
    rows = tables.get(case_key, {})
    if mine_key not in rows or peer_key not in rows:
        return None
    return rows[mine_key], rows[peer_key]


def render(plan: Plan, cells: Cells, commands: dict[str, str], took: float,
           machine: list[str], goal_report: goals.Report | None = None) -> str:  # fmt: skip
    tables = reduce_all(plan, cells)
    goal_report = goal_report or goals.Report()
    lines = [
        "# Throughput: unbroken and its peers",
        "",
        f"{datetime.date.today().isoformat()}: `{invocation()}`, took {format_seconds(took)}. "
        f"Each cell: the median of {plan.repeats} run(s) of wrk -t{WRK_THREADS} "
        f"-c{WRK_CONNECTIONS} -d{plan.duration:g}s"
        + (f" after {plan.warmup:g} s of uncounted warm-up" if plan.warmup else "")
        + f"; {servers.WORKERS} workers per server, 4 threads where the server has threads.",
        "",
        "req/s, latencies and RSS are medians over the runs; *errors* adds up all runs "
        "(wrk's socket errors by kind, and non-2xx answers). The ratios compare unbroken "
        "with a peer of the same interface, from the same runs: *unbroken req/s ÷* above 1 "
        "means unbroken served more, *unbroken p99 ÷* below 1 means its tail was shorter; "
        "— means not measured or not comparable (see the note). *RSS/worker*: mean VmRSS "
        "of the worker processes at the end of the run (shared pages included).",
        "",
        *goals.render(path_goals(tables) + goal_report.goals),
        *(render_summary(plan, tables) + render_cases(plan, tables) if plan.cases else []),
        *(["## Goals in detail", "", *goal_report.details] if goal_report.details else []),
        *machine,
        *(["", "## Command lines", "", "| server | command |", "|---|---|"] if plan.cases else []),
        *(f"| {s.key} | `{commands.get(s.key, 'not started')}` |" for s in plan.servers
          if plan.cases),
    ]
    return "\n".join(lines) + "\n"


def render_summary(plan: Plan, tables: dict[str, dict[str, Row]]) -> list[str]:
    peers = [s for s in plan.servers if s.program != "unbroken"]
    if not peers:
        return []
    lines = [
        "## unbroken's req/s ÷ each peer's (above 1: unbroken faster)",
        "",
        "| case | " + " | ".join(f"{s.label} ({s.interface.upper()})" for s in peers) + " |",
        "|---|" + "---:|" * len(peers),
    ]
    for case in plan.cases:
        cells = [format_ratio(ratios(tables[case.key], s, case)[0]) for s in peers]
        lines.append(f"| {case.title} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def render_cases(plan: Plan, tables: dict[str, dict[str, Row]]) -> list[str]:
    lines = ["## Per case", ""]
    for case in plan.cases:
        method = "POST" if case.upload else "GET"
        close = ", `Connection: close`" if case.close else ""
        lines += [
            f"### {case.title} (`{method} {case.path}`{close})",
            "",
            "| interface | server | req/s | p50 ms | p99 ms | max ms | RSS/worker MiB "
            "| CPU µs/req | errors | unbroken req/s ÷ | unbroken p99 ÷ | note |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
        ]
        for server in plan.servers:
            row = tables[case.key][server.key]
            rps_ratio, p99_ratio = ratios(tables[case.key], server, case)
            lines.append(
                f"| {server.interface.upper()} | {server.label} | {format_rps(row.rps)} "
                f"| {format_ms(row.p50)} | {format_ms(row.p99)} | {format_ms(row.max)} "
                f"| {format_mib(row.rss)} | {format_mib(row.cpu)} | {row.errors} "
                f"| {format_ratio(rps_ratio)} "
                f"| {format_ratio(p99_ratio)} | {row.note.replace('|', '/')} |"
            )
        lines.append("")
    return lines


def render_machine(programs: Programs,
                   load: tuple[tuple[float, ...], tuple[float, ...]]) -> list[str]:  # fmt: skip
    before, after = (" ".join(f"{value:.2f}" for value in sample) for sample in load)
    return [
        "## Machine",
        "",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical CPUs, shared by wrk and the server",
        f"- load average before / after: {before} / {after}",
        f"- kernel: {platform.system()} {platform.release()}",
        f"- Python: {platform.python_version()} (unbroken: {servers.unbroken_argv()[0]})",
        f"- peers: {programs.versions()}",
        f"- wrk: {wrk_version()}",
        f"- unbroken: {git_describe()}",
    ]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_describe() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(servers.REPO), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "unknown commit"
    return f"commit {done.stdout.strip()}" if done.returncode == 0 else "unknown commit"


def invocation() -> str:
    return shlex.join(["python", "bench/speed.py", *sys.argv[1:]])


def format_rps(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def format_ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def format_mib(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def format_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def format_seconds(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


# ---------------------------------------------------------------- files


def write_outputs(plan: Plan, cells: Cells, report: str) -> list[Path]:
    plan.out.mkdir(parents=True, exist_ok=True)
    stem = output_stem(plan)
    markdown = plan.out / f"{stem}.md"
    markdown.write_text(report)
    written = [markdown]
    if plan.chart and plan.cases:
        chart = plan.out / f"{stem}.png"
        if draw_chart(plan, cells, chart):
            written.append(chart)
    return written


def output_stem(plan: Plan) -> str:
    return f"speed-{datetime.date.today().isoformat()}" + (f"-{plan.mode}" if plan.mode else "")


def chart_data(plan: Plan, cells: Cells) -> dict[str, object]:
    tables = reduce_all(plan, cells)
    panels = []
    for interface in ("wsgi", "asgi"):
        peers = [s for s in plan.servers if s.interface == interface and s.program != "unbroken"]
        if not peers:
            continue
        panels.append({
            "name": interface.upper(),
            "cases": [c.key for c in plan.cases],
            "peers": {s.label: [ratios(tables[c.key], s, c)[0] for c in plan.cases]
                      for s in peers},
        })  # fmt: skip
    runs = f"median of {plan.repeats} run(s) of {plan.duration:g} s"
    return {"title": f"unbroken vs peers, {datetime.date.today().isoformat()} ({runs})",
            "panels": panels}  # fmt: skip


def draw_chart(plan: Plan, cells: Cells, output: Path) -> bool:
    data = chart_data(plan, cells)
    if not data["panels"]:
        print("no chart: no peers measured", file=sys.stderr)
        return False
    return run_chart_script(CHART_SCRIPT, data, output, "chart")


if __name__ == "__main__":
    sys.exit(main())
