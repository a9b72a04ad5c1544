"""Issue 15, item 3, fair tails: p99 at saturation, and p99 at an equal offered load.

Two passes over speed.py's servers (each started, measured and stopped by process group):

1. Saturation: wrk's closed loop, the `hello` case exactly as speed.py runs it
   (`wrk -t2 -c32`, keep-alive, after 1 s of uncounted wrk). Its req/s is the server's
   capacity here; its p99 is the goal's first figure (unbroken ≤ granian, same interface).
2. Equal offered load: every server of an interface gets the same constant rate, half
   the capacity of the slowest peer of that interface, from an open-loop client: wrk
   with RATE_SCRIPT, 32 connections paced by a schedule (one thread each, so a thread's
   Lua state is its connection's). Each request has an intended send time on the
   schedule; its latency is counted from that time, not from when it went out, so a
   server that falls behind is charged for the queue it built (coordinated omission,
   as wrk2 corrects it). A connection that is late sends its next request at once.

Why wrk's Lua and not a Python client: a Python loop offering thousands of requests a
second would take a CPU the two workers need, and its own scheduling delays would be
counted as the server's. wrk is LuaJIT, so the script reads CLOCK_MONOTONIC through
ffi; `delay()` paces in whole milliseconds, so a request may go out up to 1 ms early,
and then its latency counts from when it went out (never from a time in the future).
"""

from __future__ import annotations

import functools
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import goals
import servers
from speed_servers import Server, accept_queue, free_port, wait_ready
from speed_servers import start as start_server
from speed_wrk import (
    CASES,
    WRK,
    WRK_CONNECTIONS,
    WRK_GRACE,
    WrkFailed,
    WrkResult,
    parse_wrk,
    run_wrk,
    wrk_argv,
)

HELLO = CASES[0]
LOAD_SHARE = 0.5  # of the slowest peer's capacity
RATE_TIMEOUT = 5.0  # wrk --timeout: a slower response counts as a timeout error
KEPT_RATE = 0.9  # achieved / offered below this: the rate was not kept (noted)
GRANIAN = {"wsgi": "granian-wsgi", "asgi": "granian-asgi"}

RATE_SCRIPT = r"""
-- Constant-rate open loop for wrk (bench/tails.py): run with -tN -cN (one connection
-- per thread) and `-- INTERVAL N`, INTERVAL seconds between one connection's requests.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } unbroken_timespec;
int clock_gettime(int clock, unbroken_timespec *now);
]]
local clock = ffi.new("unbroken_timespec")
local function now()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9
end

local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local interval, next_slot, intended
latencies = {}
count = 0
function init(args)
  interval = tonumber(args[1])
  -- Connections start spread over one interval, not all at once.
  next_slot = now() + interval * id / tonumber(args[2])
end

function delay()
  local wait = (next_slot - now()) * 1000
  if wait < 0 then return 0 end
  return wait
end

function request()
  local sent = now()
  intended = math.min(next_slot, sent)  -- late: the schedule's time; early: the real one
  next_slot = next_slot + interval
  return wrk.request()
end

function response(status, headers, body)
  count = count + 1
  latencies[count] = now() - intended
end

function done(summary, latency, requests)
  local all = {}
  for _, thread in ipairs(threads) do
    local got = thread:get("latencies")
    for i = 1, thread:get("count") do all[#all + 1] = got[i] end
  end
  table.sort(all)
  io.write(string.format("OPENLOOP count %d\n", #all))
  for _, q in ipairs({50, 99, 99.9}) do
    local at = math.max(1, math.ceil(q / 100 * #all))
    io.write(string.format("OPENLOOP p%g %.6f\n", q, all[at] or -1))
  end
  io.write(string.format("OPENLOOP max %.6f\n", all[#all] or -1))
end
"""


@dataclass(frozen=True)
class Saturation:
    rps: float
    p99_ms: float
    errors: int
    # Connections that waited un-accepted (median): then wrk's p99 covers only the others.
    waiting: float


@dataclass(frozen=True)
class OpenLoop:
    offered: float  # req/s
    achieved: float
    count: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: int


@dataclass
class Row:
    server: Server
    saturation: Saturation | None = None
    open_loop: OpenLoop | None = None
    failure: str = ""


def open_loop_argv(port: int, rate: float, duration: int, script: Path) -> list[str]:
    """One thread per connection, each paced at rate / connections."""
    interval = WRK_CONNECTIONS / rate
    return [
        WRK, f"-t{WRK_CONNECTIONS}", f"-c{WRK_CONNECTIONS}", f"-d{duration}s",
        f"--timeout={RATE_TIMEOUT:g}s", "--latency", "-s", str(script),
        f"http://127.0.0.1:{port}{HELLO.path}", "--", f"{interval:.9f}", str(WRK_CONNECTIONS),
    ]  # fmt: skip


def parse_open_loop(text: str, offered: float, wrk: WrkResult) -> OpenLoop:
    """RATE_SCRIPT's OPENLOOP lines (seconds), with wrk's own rate and error counts."""
    found = dict(re.findall(r"^OPENLOOP (\S+) (\S+)$", text, re.MULTILINE))
    if "count" not in found:
        raise WrkFailed(f"no OPENLOOP lines in wrk's output: {text.strip()[-200:]!r}")

    def ms(key: str) -> float:
        return float(found[key]) * 1000

    return OpenLoop(offered, wrk.rps, int(found["count"]), ms("p50"), ms("p99"), ms("p99.9"),
                    ms("max"), wrk.errors)  # fmt: skip


def slowest_peer(rows: list[Row], interface: str) -> Row | None:
    """The peer of this interface with the least capacity: it sets the offered load."""
    peers = [r for r in rows if r.server.interface == interface and r.server.program != "unbroken"
             and r.saturation is not None]  # fmt: skip
    return min(peers, key=lambda r: r.saturation.rps if r.saturation else 0.0, default=None)


def offered_rate(rows: list[Row], interface: str) -> tuple[float | None, str]:
    """LOAD_SHARE of the slowest peer's req/s, and what it was taken from."""
    slowest = slowest_peer(rows, interface)
    if slowest is not None and slowest.saturation is not None:
        return LOAD_SHARE * slowest.saturation.rps, slowest.server.label
    return None, ""


# ---------------------------------------------------------------- measuring


def run(context: goals.Context) -> goals.Report:
    script = context.scratch / "rate.lua"
    script.write_text(RATE_SCRIPT)
    rows = [Row(server) for server in context.servers]
    for row in rows:
        print(f"[tails: saturation] {row.server.key}", file=sys.stderr, flush=True)
        serve(context, row, functools.partial(saturate, context, row))
    rates = {interface: offered_rate(rows, interface) for interface in ("wsgi", "asgi")}
    for row in rows:
        rate, _ = rates[row.server.interface]
        if rate is None or row.failure:
            continue
        print(f"[tails: {rate:.0f} req/s] {row.server.key}", file=sys.stderr, flush=True)
        serve(context, row, functools.partial(offer, context, row, rate, script))
    return goals.Report(judge(rows, rates), render(rows, rates, context.duration))


def serve(context: goals.Context, row: Row, measure: Callable[[int], None]) -> None:
    """Start the row's server, run `measure(port)` on it, stop it whatever happens."""
    if missing := context.programs.missing(row.server.program):
        row.failure = f"not run: {missing}"
        return
    run_dir = context.scratch / f"tails-{row.server.key}-{free_port()}"
    run_dir.mkdir()
    port = free_port()
    log = run_dir / "server.log"
    master = start_server(row.server, context.programs, port, run_dir, log)
    try:
        if reason := wait_ready(master, port, log):
            row.failure = f"did not start: {reason}"
            return
        measure(port)
    except WrkFailed as error:
        row.failure = str(error)
    finally:
        servers.stop_server(master)


def saturate(context: goals.Context, row: Row, port: int) -> None:
    queue: list[int] = []

    def sample() -> None:
        waiting = accept_queue(port)
        if waiting is not None:
            queue.append(waiting)

    run_wrk(wrk_argv(HELLO, port, 1, Path("/dev/null")), 1)  # warm-up, not counted
    result = run_wrk(wrk_argv(HELLO, port, context.duration, Path("/dev/null")),
                     context.duration, sample)  # fmt: skip
    if result.requests == 0:
        raise WrkFailed("no response completed")
    # The first sample may come before every client connected; the median ignores it.
    waiting = statistics.median(queue) if queue else 0.0
    row.saturation = Saturation(result.rps, result.p99_ms, result.errors, waiting)


def offer(context: goals.Context, row: Row, rate: float, script: Path, port: int) -> None:
    run_wrk(wrk_argv(HELLO, port, 1, Path("/dev/null")), 1)  # warm-up, closed loop
    argv = open_loop_argv(port, rate, context.duration, script)
    stdout = run_wrk_text(argv, context.duration)
    row.open_loop = parse_open_loop(stdout, rate, parse_wrk(stdout))


def run_wrk_text(argv: list[str], duration: int) -> str:
    """wrk's whole stdout (the OPENLOOP lines are not in WrkResult), bounded in time."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + WRK_GRACE)
    except subprocess.TimeoutExpired:
        raise WrkFailed(f"wrk hung past {duration + WRK_GRACE:.0f} s") from None
    if done.returncode != 0:
        raise WrkFailed(f"wrk exited {done.returncode}: {done.stderr.strip()[:160]}")
    return done.stdout


# ---------------------------------------------------------------- judging and rendering


def judge(rows: list[Row], rates: dict[str, tuple[float | None, str]]) -> list[goals.Goal]:
    found: list[goals.Goal] = []
    by_key = {row.server.key: row for row in rows}
    for interface in ("wsgi", "asgi"):
        mine = by_key.get(f"unbroken-{interface}")
        if mine is None:
            continue
        found.append(saturation_goal(interface, mine, by_key.get(GRANIAN[interface])))
        peers = [r for r in rows if r.server.interface == interface
                 and r.server.program != "unbroken"]  # fmt: skip
        found.append(offered_goal(interface, mine, peers, rates[interface]))
    return found


def saturation_goal(interface: str, mine: Row, granian: Row | None) -> goals.Goal:
    claim = f"{interface.upper()}: keep-alive p99 at saturation ≤ granian's"
    item = "3 fair tails"
    if granian is None or granian.saturation is None or mine.saturation is None:
        why = (granian.failure if granian else "granian not in --servers") or mine.failure
        return goals.Goal(item, claim, f"not measured: {why}", None, None)
    ratio, met = goals.at_most(mine.saturation.p99_ms, granian.saturation.p99_ms)
    figure = (f"unbroken {mine.saturation.p99_ms:.2f} ms, granian "
              f"{granian.saturation.p99_ms:.2f} ms (wrk -t2 -c32 hello)")  # fmt: skip
    if granian.saturation.waiting >= 1:
        figure += f"; granian left {granian.saturation.waiting:g} clients un-accepted"
    return goals.Goal(item, claim, figure, ratio, met)


def offered_goal(interface: str, mine: Row, peers: list[Row],
                 rate: tuple[float | None, str]) -> goals.Goal:  # fmt: skip
    offered, source = rate
    claim = f"{interface.upper()}: p99 at equal offered load ≤ every peer's"
    item = "3 fair tails"
    # A peer that did not serve the offered rate (uWSGI serves 8 of 32 kept-alive
    # clients) has latencies of the requests it did serve only: it sets no bound.
    measured = [p for p in peers if p.open_loop is not None
                and p.open_loop.achieved >= KEPT_RATE * p.open_loop.offered]  # fmt: skip
    if offered is None or mine.open_loop is None or not measured:
        why = mine.failure or "no peer of this interface measured"
        return goals.Goal(item, claim, f"not measured: {why}", None, None)
    best = min(measured, key=lambda p: p.open_loop.p99_ms if p.open_loop else 0.0)
    assert best.open_loop is not None
    ratio, met = goals.at_most(mine.open_loop.p99_ms, best.open_loop.p99_ms)
    figure = (f"{offered:.0f} req/s (half of {source}'s capacity): unbroken "
              f"{mine.open_loop.p99_ms:.2f} ms; lowest peer p99 {best.server.label} "
              f"{best.open_loop.p99_ms:.2f} ms")  # fmt: skip
    if mine.open_loop.achieved < KEPT_RATE * offered:
        figure += f"; unbroken served only {mine.open_loop.achieved:.0f} req/s"
    unmeasured = [p.server.label for p in peers if p not in measured]
    if unmeasured:
        figure += f"; no bound from: {', '.join(unmeasured)} (not measured or rate not kept)"
    return goals.Goal(item, claim, figure, ratio, met)


def render(rows: list[Row], rates: dict[str, tuple[float | None, str]],
           duration: int) -> list[str]:  # fmt: skip
    lines = [
        "### Tails (item 3)",
        "",
        f"Saturation: `wrk -t2 -c32 -d{duration}s` on `GET /` (keep-alive). Equal offered "
        f"load: {WRK_CONNECTIONS} connections paced by a schedule at "
        f"{LOAD_SHARE:.0%} of the slowest peer's saturation req/s (per interface), "
        f"latency counted from each request's intended send time (bench/tails.py), "
        f"{duration} s after 1 s of closed-loop warm-up.",
        "",
        "| interface | server | saturation req/s | saturation p99 ms | offered req/s "
        "| served req/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        sat, load = row.saturation, row.open_loop
        note = row.failure
        if sat is not None and sat.waiting >= 1:
            note = f"{sat.waiting:g} clients un-accepted at saturation; " + note
        if load is not None and load.achieved < KEPT_RATE * load.offered:
            note += " rate not kept"
        cells = [
            f"{sat.rps:.0f}" if sat else "—", f"{sat.p99_ms:.2f}" if sat else "—",
            f"{load.offered:.0f}" if load else "—", f"{load.achieved:.0f}" if load else "—",
            *(f"{value:.2f}" if load else "—" for value in (
                load.p50_ms if load else 0, load.p99_ms if load else 0,
                load.p999_ms if load else 0, load.max_ms if load else 0)),
            str(load.errors + (sat.errors if sat else 0)) if load else "—",
        ]  # fmt: skip
        lines.append(f"| {row.server.interface.upper()} | {row.server.label} | "
                     + " | ".join(cells) + f" | {note.strip().replace('|', '/')} |")  # fmt: skip
    return [*lines, ""]
