"""Compare reloads under load: unbroken, gunicorn, uWSGI, uvicorn and granian.

Run: python bench/reload_compare.py [--quick] [--keep]
         [--servers unbroken,gunicorn,uwsgi,unbroken-asgi,uvicorn,granian]
         [--cases fast,slow-boot,slow-request,broken-release]

For every server and case: serve release v1 from a temp deploy root, put it under
bounded load (keep-alive and connection-per-request clients together), switch
`current` to v2, trigger the reload (unbroken reload, gunicorn/uvicorn/granian SIGHUP,
uWSGI chain reload), keep the load a little longer, stop everything by process group,
and report failed requests, latency during the reload against the steady p99 before
it, the throughput dip, how long until only v2 answered, and the version served at the
end; for the slow-boot case, whether the issue's goal holds. Traffic goes only to
127.0.0.1 (the load generator refuses anything else). The table is printed and written
to bench/results/reload-<date>[-<servers>][-<cases>][-quick].md (servers and cases
named only when a subset was run).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import math
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import servers
from releases import (
    CASES,
    SLOW_BOOT_SECONDS,
    SLOW_PATH,
    SLOW_REQUEST_SECONDS,
    Case,
    Site,
    lay_out_site,
)

sys.path.insert(0, str(servers.REPO / "src"))
from unbroken.loadgen import Load, Sample, summarize  # after the sys.path line above

SERVERS = servers.SERVERS
RESULTS = servers.BENCH / "results"
PROBE_TIMEOUT = 2.0
PROBE_INTERVAL = 0.1
CONVERGED_STREAK = 10  # consecutive v2 probes on fresh connections: about a second
FINAL_PROBES = 10
# Longer than the 4 s a broken uWSGI takes to answer 500, so it is reported as a 500.
FINAL_PROBE_TIMEOUT = 6.0
CLIENT_PAUSE = 0.01  # per client between requests: steady load that leaves CPU to the server
# The steady window is the load before the trigger, less its first moments (connections
# being opened, first requests into each worker): what the reload is compared against.
STEADY_SKIP = 0.25
DIP_BUCKET = 0.5  # seconds per throughput bucket
# The goal for the slow-boot reload: max latency under this many steady p99s,
# wall time within ceil(workers / surge) boot times plus this slack.
GOAL_MAX_OVER_P99 = 3.0
GOAL_WALL_SLACK = 1.0


@dataclass(frozen=True)
class Timing:
    """Seconds each phase of a case may take; every wait below has one of these bounds."""

    ready_timeout: float
    before_reload: float
    converge_timeout: float
    broken_window: float
    after_reload: float


# converge_timeout: a one-worker-at-a-time reload of the 3 s-boot app (uvicorn, granian)
# takes two boots and then some, plus the bench's one second of v2 probes.
# broken_window: granian stops the last old worker 2 x 3.5 s (--respawn-interval) after
# the HUP, and only then shows what a broken release did to it; watch past that.
FULL = Timing(ready_timeout=20.0, before_reload=2.0, converge_timeout=15.0,
              broken_window=10.0, after_reload=2.0)  # fmt: skip
QUICK = Timing(ready_timeout=15.0, before_reload=1.0, converge_timeout=12.0,
               broken_window=9.0, after_reload=1.0)  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """One row of the table."""

    server: str
    case: str
    requests: int = 0
    failures: str = "—"
    split: str = "—"  # failures of keep-alive clients / of connection-per-request clients
    steady_p99: float | None = None
    # The steady load's max over as long a stretch as the reload's window, or all of it
    # if shorter: what the max would be with no reload, the floor the goal is judged on.
    steady_max: float | None = None
    window_p99: float | None = None
    window_max: float | None = None
    max_at: float | None = None  # when the slowest of those started, after the trigger
    dip: float | None = None  # lowest bucket's completions / steady rate (1.0: no dip)
    reload_returned: float | None = None
    done_after: float | None = None
    final: str = "—"
    note: str = ""


class Run:
    """The load of one case: fast keep-alive, fast connection-per-request, slow clients."""

    def __init__(self, port: int, case: Case, timing: Timing) -> None:
        self.port = port
        # An upper bound only: the case stops the load itself well before this.
        self.duration = timing.before_reload + timing.converge_timeout + timing.after_reload + 30
        self.loads = [self.load(3, keep_alive=True), self.load(3, keep_alive=False)]
        if case.slow_clients:
            self.loads.append(self.load(case.slow_clients, keep_alive=True, path=SLOW_PATH))

    def load(self, clients: int, *, keep_alive: bool, path: str = "/") -> Load:
        return Load(("127.0.0.1", self.port), clients=clients, keep_alive=keep_alive,
                    path=path, duration=self.duration, max_requests=100_000,
                    pause=CLIENT_PAUSE)  # fmt: skip

    def start(self) -> None:
        self.started = time.monotonic()
        for load in self.loads:
            load.start()

    def stop(self) -> Samples:
        self.stopped = time.monotonic()
        keep_alive, new_connection, *slow = [load.stop() for load in self.loads]
        slow_samples = [sample for samples in slow for sample in samples]
        return Samples(
            every=_by_start(keep_alive + new_connection + slow_samples),
            fast=_by_start(keep_alive + new_connection),
            keep_alive=_by_start(keep_alive + slow_samples),
            new_connection=new_connection,
        )


@dataclass(frozen=True)
class Samples:
    """A run's samples, and the subsets the table reports on."""

    every: list[Sample]
    fast: list[Sample]  # the fast endpoint: what latency is measured on
    keep_alive: list[Sample]
    new_connection: list[Sample]


def _by_start(samples: list[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda sample: sample.start)


def free_port() -> int:
    """A port free right now; the peers bind it themselves, so a small race remains."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def label(sample: Sample) -> str:
    """What a response says about the server: its version, an HTTP error or an error kind."""
    if sample.error in ("5xx", "4xx"):
        return f"HTTP {sample.status}"
    if sample.error is not None:
        return sample.error
    return sample.body.split(b" ", 1)[0].decode(errors="replace")


def probe(port: int) -> str:
    samples = Load(("127.0.0.1", port), clients=1, keep_alive=False, max_requests=1,
                   duration=PROBE_TIMEOUT, timeout=PROBE_TIMEOUT).start().wait()  # fmt: skip
    return label(samples[0]) if samples else "timeout"


def wait_ready(master: subprocess.Popen[bytes], port: int, deadline: float) -> bool:
    while time.monotonic() < deadline and master.poll() is None:
        if probe(port) == "v1":
            return True
        time.sleep(PROBE_INTERVAL)
    return False


def wait_converged(master: subprocess.Popen[bytes], port: int, deadline: float) -> None:
    """Probe until v2 answered CONVERGED_STREAK times in a row, the master died, or time is up."""
    streak = 0
    while time.monotonic() < deadline and master.poll() is None and streak < CONVERGED_STREAK:
        streak = streak + 1 if probe(port) == "v2" else 0
        time.sleep(PROBE_INTERVAL)


def reload_done_at(samples: list[Sample], trigger: float, final: str) -> float | None:
    """When the reload was over as clients saw it, or None if v2 never took over.

    Over means both: v2 has answered, and no answer other than a v2 success ended
    later (an old worker still serving, or errors). A reload that kills the old
    workers at once and then stalls is therefore over only when v2 first answers.
    Whether v2 took over at all is read from the final probes, not from the load:
    a draining old worker may answer after the load stopped sending.
    """
    v2_ends = [s.start + s.latency for s in samples if label(s) == "v2" and s.start >= trigger]
    if final != "v2" or not v2_ends:
        return None
    bad_ends = [s.start + s.latency for s in samples if label(s) != "v2"]
    last_bad = max((end for end in bad_ends if end >= trigger), default=trigger)
    return max(last_bad, min(v2_ends))


def final_version(port: int) -> str:
    """What fresh connections get once the load is gone, probed in parallel so it is quick."""
    load = Load(("127.0.0.1", port), clients=FINAL_PROBES, keep_alive=False,
                max_requests=FINAL_PROBES, duration=FINAL_PROBE_TIMEOUT,
                timeout=FINAL_PROBE_TIMEOUT)  # fmt: skip
    counts = collections.Counter(label(sample) for sample in load.start().wait())
    if len(counts) == 1:
        return next(iter(counts))
    return " ".join(f"{name} x{count}" for name, count in sorted(counts.items()))


def steady_p99(fast: list[Sample], begin: float, trigger: float) -> float | None:
    """p99 latency of fast requests that started and ended in [begin, trigger)."""
    steady = [s for s in fast if s.start >= begin and s.start + s.latency < trigger]
    return summarize(steady).p99 if steady else None


def steady_max(fast: list[Sample], begin: float, trigger: float, length: float) -> float | None:
    """Max latency of fast requests in the last `length` seconds before the trigger
    (from `begin` at the earliest), started and ended there."""
    since = max(begin, trigger - length)
    steady = [s.latency for s in fast if s.start >= since and s.start + s.latency < trigger]
    return max(steady) if steady else None


def slowest_start(fast: list[Sample], trigger: float, window_end: float) -> float | None:
    """When the slowest fast request in flight during the reload started, after the trigger."""
    in_flight = [s for s in fast if s.start <= window_end and s.start + s.latency >= trigger]
    if not in_flight:
        return None
    return max(in_flight, key=lambda sample: sample.latency).start - trigger


def throughput_dip(
    fast: list[Sample], begin: float, trigger: float, window_end: float, load_end: float
) -> float | None:
    """The reload's worst DIP_BUCKET of completed fast requests, as a share of the steady rate.

    Completed means a success, counted when it ended. The steady rate is the mean over
    [begin, trigger); the buckets tile [trigger, window_end) (at least one), and a
    bucket reaching past the end of the load is left out, so the load stopping is not
    mistaken for a dip.
    """
    ends = [s.start + s.latency for s in fast if s.error is None]
    steady_rate = sum(1 for end in ends if begin <= end < trigger) / (trigger - begin)
    buckets = max(1, math.ceil((window_end - trigger) / DIP_BUCKET))
    lows = [trigger + i * DIP_BUCKET for i in range(buckets)]
    lows = [low for low in lows if low + DIP_BUCKET <= load_end]
    if steady_rate <= 0 or not lows:
        return None
    counts = [sum(1 for end in ends if low <= end < low + DIP_BUCKET) for low in lows]
    return min(counts) / DIP_BUCKET / steady_rate


def format_failures(samples: list[Sample]) -> str:
    summary = summarize(samples)
    if not summary.failures:
        return "0"
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(summary.by_kind.items()))
    return f"{summary.failures} ({kinds})"


def last_line(site: Site, server: str) -> str:
    """The log's last line for the table; its tail goes to stderr, as the log is temporary."""
    lines = site.log(server).read_text(errors="replace").strip().splitlines()
    print(f"--- last lines of {server}'s log:", *lines[-8:], sep="\n", file=sys.stderr)
    return lines[-1][:120] if lines else "no output"


def run_case(server: str, case: Case, timing: Timing, root: Path,
             extra: tuple[str, ...] = ()) -> Outcome:  # fmt: skip
    """Serve v1 under load, reload to v2, measure; always stop the server."""
    site = lay_out_site(root, case)
    port = free_port()
    master = servers.start_server(server, site, port, extra)
    try:
        if not wait_ready(master, port, time.monotonic() + timing.ready_timeout):
            return Outcome(server, case.name, note=f"v1 never served: {last_line(site, server)}")
        return measure_reload(server, case, timing, site, master, port)
    except Exception as error:  # one broken case must not lose the others' rows
        return Outcome(server, case.name, note=f"bench error: {error!r}"[:160])
    finally:
        servers.stop_server(master)


def measure_reload(
    server: str,
    case: Case,
    timing: Timing,
    site: Site,
    master: subprocess.Popen[bytes],
    port: int,
) -> Outcome:
    run = Run(port, case, timing)
    run.start()
    try:
        time.sleep(timing.before_reload)
        site.switch_to("v2")
        trigger = time.monotonic()
        result = servers.trigger_reload(server, master, site)
        if server not in servers.UNBROKEN_SERVERS:
            window = timing.broken_window if case.broken_v2 else timing.converge_timeout
            wait_converged(master, port, trigger + window)
        waited_until = time.monotonic()
        # Long enough for a slow request that an old worker is draining to end.
        slow_drain = SLOW_REQUEST_SECONDS + 0.5 if case.slow_clients else 0.0
        time.sleep(max(timing.after_reload, slow_drain))
    finally:
        samples = run.stop()
    every, fast = samples.every, samples.fast
    final = final_version(port)
    converged = reload_done_at(every, trigger, final)
    window_end = max(waited_until, converged or 0.0)
    in_window = summarize(fast, window=(trigger, window_end))
    steady_begin = run.started + STEADY_SKIP
    exited = master.poll()
    note = result.note + (f"; master exited {exited}" if exited is not None else "")
    return Outcome(
        server, case.name, requests=len(every), failures=format_failures(every),
        split=f"{summarize(samples.keep_alive).failures} / "
        f"{summarize(samples.new_connection).failures}",
        steady_p99=steady_p99(fast, steady_begin, trigger),
        steady_max=steady_max(fast, steady_begin, trigger, window_end - trigger),
        window_p99=in_window.p99, window_max=in_window.max,
        max_at=slowest_start(fast, trigger, window_end),
        dip=throughput_dip(fast, steady_begin, trigger, window_end, run.stopped),
        reload_returned=result.wall,
        done_after=None if converged is None else converged - trigger,
        final=final, note=note,
    )  # fmt: skip


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def millis(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.1f}"


def ratio(outcome: Outcome) -> float | None:
    """Max latency in the reload over the steady p99 before it."""
    if outcome.window_max is None or not outcome.steady_p99:
        return None
    return outcome.window_max / outcome.steady_p99


def offset(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def times(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}x"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


HEADER = (
    "| server | case | requests | failed (by kind) | failed keep-alive / new-conn "
    "| steady p99 ms | p99 in reload ms | max in reload ms | max at s | max / steady p99 "
    "| throughput dip | reload returned s | done after s | final version | note |\n"
    "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
)


def table(outcomes: list[Outcome]) -> str:
    rows = [
        f"| {o.server} | {o.case} | {o.requests} | {o.failures} | {o.split} "
        f"| {millis(o.steady_p99)} | {millis(o.window_p99)} "
        f"| {millis(o.window_max)} | {offset(o.max_at)} | {times(ratio(o))} "
        f"| {percent(o.dip)} "
        f"| {seconds(o.reload_returned)} "
        f"| {seconds(o.done_after)} | {o.final} | {o.note} |"
        for o in outcomes
    ]
    return "\n".join([HEADER, *rows])


def effective_surge() -> int:
    """unbroken's default surge in workers: 0 means the whole generation at once."""
    return servers.UNBROKEN_DEFAULT_SURGE or servers.WORKERS


def wall_bound() -> float:
    """The goal's wall time: ceil(workers / surge) boots, plus the slack."""
    boots = math.ceil(servers.WORKERS / effective_surge())
    return boots * SLOW_BOOT_SECONDS + GOAL_WALL_SLACK


def yes_no(ok: bool) -> str:
    return "yes" if ok else "no"


def goal_line(outcome: Outcome) -> str:
    """Whether a slow-boot row meets the issue's goal, as facts with their numbers."""
    failed_ok = outcome.failures == "0"
    bound = None if outcome.steady_p99 is None else GOAL_MAX_OVER_P99 * outcome.steady_p99
    max_ok = bound is not None and outcome.window_max is not None and outcome.window_max < bound
    unbroken = outcome.server in servers.UNBROKEN_SERVERS
    wall = outcome.reload_returned if unbroken else outcome.done_after
    wall_name = "reload returned" if unbroken else "done after"
    # A reload that never served v2 (or was refused) has no wall time to meet the goal.
    wall_ok = wall is not None and outcome.final == "v2" and wall <= wall_bound()
    return (
        f"- {outcome.server}: failed {outcome.failures} → {yes_no(failed_ok)}; "
        f"max {millis(outcome.window_max)} ms (started {offset(outcome.max_at)} s) "
        f"< {GOAL_MAX_OVER_P99:.0f} x steady p99 "
        f"{millis(outcome.steady_p99)} ms = {millis(bound)} ms → {yes_no(max_ok)}; "
        f"wall ({wall_name}) {seconds(wall)} s ≤ {wall_bound():.1f} s → {yes_no(wall_ok)}; "
        f"final {outcome.final}; throughput dip {percent(outcome.dip)}; "
        f"goal met: {yes_no(failed_ok and max_ok and wall_ok)}"
    )


def goal_section(outcomes: list[Outcome]) -> str:
    rows = [outcome for outcome in outcomes if outcome.case == "slow-boot"]
    if not rows:
        return ""
    surge = servers.UNBROKEN_DEFAULT_SURGE
    return "\n".join([
        f"Goal check, slow-boot ({SLOW_BOOT_SECONDS:.0f} s boot): 0 failed requests, max "
        f"latency under {GOAL_MAX_OVER_P99:.0f}x the steady p99, wall time ≤ "
        f"ceil({servers.WORKERS} workers / surge {effective_surge()}) x "
        f"{SLOW_BOOT_SECONDS:.0f} s + {GOAL_WALL_SLACK:.0f} s = {wall_bound():.1f} s "
        f"(unbroken's default --reload-surge {surge}: the whole generation at once). "
        "Wall is *reload returned* for unbroken, *done after* for the peers.",
        "",
        *(goal_line(outcome) for outcome in rows),
    ])  # fmt: skip


LEGEND = f"""\
Columns: *failed* counts every request of the run (before, during and after the reload)
that got no response, a reset, a timeout or an HTTP error; *steady p99* is the p99
latency of the fast endpoint before the trigger (requests that started and ended in the
load's first seconds, less its first {STEADY_SKIP} s); *p99/max in reload* are latencies
of the fast endpoint for requests in flight between the trigger and the end of the
reload (the later of *done after* and the end of the bench's wait for it); *max at* is
when the slowest of them started, in seconds after the trigger; *max / steady p99*
divides max by steady p99; *throughput dip* is the fewest fast requests completed in one
{DIP_BUCKET} s bucket from the trigger to the end of the reload, as a share of the mean
rate before the trigger (100% = no dip, 0% = a bucket with no successful answer);
*reload returned* is how long `unbroken reload` blocked (the peers' signal and fifo
write return at once); *done after* comes from the load's own samples: the later of the
first v2 answer and the last answer that was not a v2 success (— means v2 never took
over); *final version* is what {FINAL_PROBES} fresh connections got after the load
stopped."""


def report_path(servers_run: list[str], cases: list[Case], quick: bool) -> Path:
    """bench/results/reload-<date>[-<servers>][-<cases>][-quick].md; subsets are named,
    so a run of some cases does not overwrite the same day's run of others."""
    parts = [f"reload-{datetime.date.today().isoformat()}"]
    if set(servers_run) != set(SERVERS):
        parts.append("+".join(servers_run))
    if len(cases) != len(CASES):
        parts.append("+".join(case.name for case in cases))
    if quick:
        parts.append("quick")
    return RESULTS / ("-".join(parts) + ".md")


def write_report(outcomes: list[Outcome], path: Path, quick: bool, skipped: dict[str, str]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    today = datetime.date.today().isoformat()
    versions = servers.installed_peer_versions()
    lines = [
        f"# Reload comparison, {today}{' (--quick)' if quick else ''}",
        "",
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}, "
        f"{servers.WORKERS} workers each on 127.0.0.1; peers: "
        + ", ".join(f"{name} {version}" for name, version in versions.items()),
        "",
        *(f"- {name} skipped: {why}\n" for name, why in skipped.items()),
        table(outcomes),
        "",
        *([goal, ""] if (goal := goal_section(outcomes)) else []),
        LEGEND,
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter phases")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument("--cases", default=",".join(c.name for c in CASES), help="comma-separated")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (logs) for reading")
    return parser.parse_args(argv)


def available_servers(wanted: list[str]) -> tuple[list[str], dict[str, str]]:
    skipped: dict[str, str] = {}
    unbroken_wanted = sorted(servers.UNBROKEN_SERVERS & set(wanted))
    if unbroken_wanted and (why := servers.unbroken_missing()):
        for name in unbroken_wanted:
            print(f"skipping {name}: {why}")
            skipped[name] = why
    if servers.PEER_SERVERS & set(wanted):
        servers.ensure_peers()
    return [name for name in wanted if name not in skipped], skipped


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    timing = QUICK if arguments.quick else FULL
    wanted = [name for name in arguments.servers.split(",") if name]
    unknown = set(wanted) - set(SERVERS)
    cases = [case for case in CASES if case.name in arguments.cases.split(",")]
    if unknown or not cases:
        print(f"unknown servers {sorted(unknown)} or no known case selected", file=sys.stderr)
        return 2
    names, skipped = available_servers(wanted)
    outcomes: list[Outcome] = []
    for case in cases:
        for server in names:
            root = Path(tempfile.mkdtemp(prefix=f"reload-{server}-{case.name}-"))
            started = time.monotonic()
            try:
                outcomes.append(run_case(server, case, timing, root))
            finally:
                if not arguments.keep:
                    shutil.rmtree(root, ignore_errors=True)
            print(f"{server:13} {case.name:15} done in {time.monotonic() - started:5.1f} s")
    print(table(outcomes))
    if goal := goal_section(outcomes):
        print(f"\n{goal}")
    path = report_path(wanted, cases, arguments.quick)
    print(f"\nwritten to {write_report(outcomes, path, arguments.quick, skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
