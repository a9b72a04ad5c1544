"""Worker CPU time per request under wrk: the figure that does not move with the noise.

Run: python bench/cpu_per_request.py [--servers unbroken-wsgi,unbroken-asgi,uwsgi,...]
                                     [--cases hello,json,upload] [--duration S]
                                     [--repeats N] [--no-peers]

Each server starts as bench/speed.py starts it (speed_servers.SERVERS: 2 workers on
127.0.0.1, the same app), wrk runs each case against it (speed_wrk.CASES, -t2 -c32),
and the workers' utime + stime from /proc/<pid>/stat, read just before and just after
the run, divided by the requests wrk counted, is the CPU each request cost the server's
workers (the master, which serves no request, is left out). Throughput moves with
whatever else the 2 CPUs are doing; CPU per request moves much less, so a change to
the per-request path shows in it even on a busy machine. Medians over --repeats.

Peers (uWSGI, uvicorn, granian) run from bench/.venv-peers when it exists (create it
with `python -c "import servers; servers.ensure_peers()"` from bench/, or run
bench/speed.py once); unbroken runs this checkout's src/ (servers.unbroken_argv).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import servers
from speed_servers import (
    SERVERS,
    TICKS_PER_SECOND,
    Programs,
    Server,
    cpu_ticks,
    free_port,
    wait_ready,
    worker_pids,
)
from speed_servers import start as start_server
from speed_wrk import CASES, Case, WrkFailed, run_wrk, write_upload_script, wrk_argv

DEFAULT_SERVERS = ("unbroken-wsgi", "uwsgi", "granian-wsgi",
                   "unbroken-asgi", "uvicorn", "granian-asgi")  # fmt: skip
DEFAULT_CASES = ("hello", "json", "upload")
WARMUP_SECONDS = 1.0
BY_KEY = {server.key: server for server in SERVERS}
CASE_BY_KEY = {case.key: case for case in CASES}


class SourcePrograms(Programs):
    """Programs, with unbroken's code from another src/ if asked (`--unbroken-src`)."""

    def __init__(self, *, peers_venv: bool, src: Path | None) -> None:
        super().__init__(peers_venv=peers_venv)
        self.src = src

    def env(self, program: str) -> dict[str, str]:
        env = super().env(program)
        if program == "unbroken" and self.src is not None:
            env["PYTHONPATH"] = str(self.src.resolve())
        return env


def measure_case(case: Case, master: int, port: int, duration: float,
                 upload_script: Path) -> tuple[float, float]:  # fmt: skip
    """(CPU-µs per request, req/s) of one wrk run of `case`."""
    run_wrk(wrk_argv(case, port, WARMUP_SECONDS, upload_script), WARMUP_SECONDS)
    workers = worker_pids(master)
    before = cpu_ticks(workers)
    result = run_wrk(wrk_argv(case, port, duration, upload_script), duration)
    after = cpu_ticks(workers)
    if result.requests == 0 or result.errors:
        raise WrkFailed(f"{result.requests} requests, errors {result.error_kinds()}")
    seconds = (after - before) / TICKS_PER_SECOND
    return seconds * 1e6 / result.requests, result.rps


def serve_cases(server: Server, programs: Programs, cases: Sequence[Case], duration: float,
                scratch: Path, upload_script: Path) -> dict[str, tuple[float, float]]:  # fmt: skip
    run_dir = Path(tempfile.mkdtemp(dir=scratch, prefix=f"{server.key}-"))
    port = free_port()
    log = run_dir / "server.log"
    master = start_server(server, programs, port, run_dir, log)
    measured: dict[str, tuple[float, float]] = {}
    try:
        if reason := wait_ready(master, port, log):
            print(f"  {server.key}: did not start: {reason}", file=sys.stderr)
            return measured
        for case in cases:
            try:
                measured[case.key] = measure_case(case, master.pid, port, duration,
                                                  upload_script)
            except WrkFailed as error:
                print(f"  {server.key} {case.key}: {error}", file=sys.stderr)
                continue
            cpu, rps = measured[case.key]
            print(f"  {server.key:14} {case.key:7} {cpu:6.1f} µs/req  {rps:8.0f} req/s",
                  file=sys.stderr, flush=True)
    finally:
        servers.stop_server(master)
    return measured


def render(chosen: Sequence[Server], cases: Sequence[Case],
           medians: dict[tuple[str, str], float]) -> str:  # fmt: skip
    """One row per server, one column per case; unbroken's ratio to each peer below."""
    header = "| server | " + " | ".join(f"{c.key} µs/req" for c in cases) + " |"
    lines = [header, "|---|" + "---:|" * len(cases)]
    for server in chosen:
        cells = [medians.get((server.key, c.key)) for c in cases]
        shown = [f"{cell:.1f}" if cell is not None else "—" for cell in cells]
        lines.append(f"| {server.key} | " + " | ".join(shown) + " |")
    ratio_lines = []
    for server in chosen:
        if server.program == "unbroken":
            continue
        mine = "unbroken-wsgi" if server.interface == "wsgi" else "unbroken-asgi"
        ratios = []
        for case in cases:
            ours, theirs = medians.get((mine, case.key)), medians.get((server.key, case.key))
            ratios.append(f"{ours / theirs:.2f}" if ours and theirs else "—")
        ratio_lines.append(f"| {mine} / {server.key} | " + " | ".join(ratios) + " |")
    if ratio_lines:
        lines += ["", "| ratio (below 1: unbroken spends less) | "
                  + " | ".join(c.key for c in cases) + " |",
                  "|---|" + "---:|" * len(cases), *ratio_lines]  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                        help=f"comma-separated, of {', '.join(BY_KEY)}")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help=f"comma-separated, of {', '.join(CASE_BY_KEY)}")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-peers", action="store_true", help="unbroken's rows only")
    parser.add_argument("--unbroken-src", type=Path, default=None,
                        help="serve unbroken from this src/ (another checkout: a before)")
    args = parser.parse_args(argv)
    try:
        chosen = [BY_KEY[key] for key in args.servers.split(",") if key]
        cases = [CASE_BY_KEY[key] for key in args.cases.split(",") if key]
    except KeyError as error:
        parser.error(f"unknown server or case {error}")
    peers_venv = servers.peers_bin("python").exists()
    if args.no_peers or not peers_venv:
        chosen = [server for server in chosen if server.program == "unbroken"]
    programs = SourcePrograms(peers_venv=peers_venv, src=args.unbroken_src)
    print(f"unbroken: {' '.join(programs.command('unbroken'))[:80]}", file=sys.stderr)
    samples: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="cpu-per-request-") as scratch_name:
        scratch = Path(scratch_name)
        upload_script = write_upload_script(scratch)
        for repeat in range(args.repeats):
            print(f"[{repeat + 1}/{args.repeats}]", file=sys.stderr, flush=True)
            for server in chosen:
                if missing := programs.missing(server.program):
                    print(f"  {server.key}: not run: {missing}", file=sys.stderr)
                    continue
                found = serve_cases(server, programs, cases, args.duration, scratch,
                                    upload_script)
                for case_key, (cpu, _) in found.items():
                    samples.setdefault((server.key, case_key), []).append(cpu)
    medians = {key: statistics.median(values) for key, values in samples.items()}
    print(render(chosen, cases, medians))
    return 0


if __name__ == "__main__":
    sys.exit(main())
