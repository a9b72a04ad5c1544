"""Compare reloads under load: unbroken, gunicorn (HUP) and uWSGI (chain reload).

Run: python bench/reload_compare.py [--quick] [--servers unbroken,gunicorn,uwsgi]
                                    [--cases fast,slow-boot,slow-request,broken-release]

For every server and case: serve release v1 from a temp deploy root, put it under
bounded load (keep-alive and connection-per-request clients together), switch
`current` to v2, trigger the reload, keep the load a little longer, stop everything
by process group, and report failed requests, latency during the reload, how long
until only v2 answered, and the version served at the end. Traffic goes only to
127.0.0.1 (the load generator refuses anything else). The table is printed and written
to bench/results/reload-<date>[-quick].md.
"""

from __future__ import annotations

import argparse
import collections
import datetime
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
from releases import CASES, SLOW_PATH, SLOW_REQUEST_SECONDS, Case, Site, lay_out_site

sys.path.insert(0, str(servers.REPO / "src"))
from unbroken.loadgen import Load, Sample, summarize  # after the sys.path line above

SERVERS = ("unbroken", "gunicorn", "uwsgi")
RESULTS = servers.BENCH / "results"
PROBE_TIMEOUT = 2.0
PROBE_INTERVAL = 0.1
CONVERGED_STREAK = 10  # consecutive v2 probes on fresh connections: about a second
FINAL_PROBES = 10
# Longer than the 4 s a broken uWSGI takes to answer 500, so it is reported as a 500.
FINAL_PROBE_TIMEOUT = 6.0
CLIENT_PAUSE = 0.01  # per client between requests: steady load that leaves CPU to the server


@dataclass(frozen=True)
class Timing:
    """Seconds each phase of a case may take; every wait below has one of these bounds."""

    ready_timeout: float
    before_reload: float
    converge_timeout: float
    broken_window: float
    after_reload: float


FULL = Timing(ready_timeout=20.0, before_reload=2.0, converge_timeout=12.0,
              broken_window=8.0, after_reload=2.0)  # fmt: skip
QUICK = Timing(ready_timeout=15.0, before_reload=1.0, converge_timeout=8.0,
               broken_window=5.0, after_reload=1.0)  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """One row of the table."""

    server: str
    case: str
    requests: int = 0
    failures: str = "—"
    split: str = "—"  # failures of keep-alive clients / of connection-per-request clients
    window_p99: float | None = None
    window_max: float | None = None
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
        for load in self.loads:
            load.start()

    def stop(self) -> Samples:
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


def run_case(server: str, case: Case, timing: Timing, root: Path) -> Outcome:
    """Serve v1 under load, reload to v2, measure; always stop the server."""
    site = lay_out_site(root, case)
    port = free_port()
    master = servers.start_server(server, site, port)
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
        if server != "unbroken":
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
    exited = master.poll()
    note = result.note + (f"; master exited {exited}" if exited is not None else "")
    return Outcome(
        server, case.name, requests=len(every), failures=format_failures(every),
        split=f"{summarize(samples.keep_alive).failures} / "
        f"{summarize(samples.new_connection).failures}",
        window_p99=in_window.p99, window_max=in_window.max, reload_returned=result.wall,
        done_after=None if converged is None else converged - trigger,
        final=final, note=note,
    )  # fmt: skip


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


HEADER = (
    "| server | case | requests | failed (by kind) | failed keep-alive / new-conn "
    "| p99 in reload s | max in reload s "
    "| reload returned s | done after s | final version | note |\n"
    "|---|---|---:|---|---:|---:|---:|---:|---:|---|---|"
)


def table(outcomes: list[Outcome]) -> str:
    rows = [
        f"| {o.server} | {o.case} | {o.requests} | {o.failures} | {o.split} "
        f"| {seconds(o.window_p99)} "
        f"| {seconds(o.window_max)} | {seconds(o.reload_returned)} "
        f"| {seconds(o.done_after)} | {o.final} | {o.note} |"
        for o in outcomes
    ]
    return "\n".join([HEADER, *rows])


LEGEND = f"""\
Columns: *failed* counts every request of the run (before, during and after the reload)
that got no response, a reset, a timeout or an HTTP error; *p99/max in reload* are
latencies of the fast endpoint for requests in flight between the trigger and the end of
the reload (the later of *done after* and the end of the bench's wait for it); *reload
returned* is how long `unbroken reload` blocked (the peers' signal and fifo write return
at once); *done after* comes from the load's own samples: the later of the first v2 answer
and the last answer that was not a v2 success (— means v2 never took over); *final
version* is what {FINAL_PROBES} fresh connections got after the load stopped."""


def write_report(outcomes: list[Outcome], quick: bool, skipped: dict[str, str]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    today = datetime.date.today().isoformat()
    path = RESULTS / f"reload-{today}{'-quick' if quick else ''}.md"
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
    if "unbroken" in wanted and (why := servers.unbroken_missing()):
        print(f"skipping unbroken: {why}")
        skipped["unbroken"] = why
    if {"gunicorn", "uwsgi"} & set(wanted):
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
            print(f"{server:9} {case.name:15} done in {time.monotonic() - started:5.1f} s")
    print(table(outcomes))
    print(f"\nwritten to {write_report(outcomes, arguments.quick, skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
