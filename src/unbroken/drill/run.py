"""Run a drill: serve (or attach to) a service, load it, reload it, collect what happened.

Order, each step bounded:
  1. start `unbroken serve` on a socket we bind (port 0, handed over as fd://N, so no
     free-port race), or attach to a running service by its control socket;
  2. wait until the control socket says `serving` (deadline START_TIMEOUT);
  3. start keep-alive and connection-per-request clients (loadgen: loopback only,
     bounded by time and count, no retries);
  4. perform the reloads spread over --duration, each waiting for its verdict;
  5. stop the load, stop the service we started (SIGTERM, then SIGKILL at a deadline).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from unbroken.control.client import ControlUnavailable, call
from unbroken.drill.analysis import (
    DrillResult,
    ReloadRecord,
    Snapshot,
    analyse,
    app_says_its_version,
)
from unbroken.drill.releases import write_release
from unbroken.errors import ServiceError
from unbroken.loadgen import Load, Sample

START_TIMEOUT = 30.0
RELOAD_TIMEOUT = 120.0
STOP_TIMEOUT = 40.0
LOAD_SLACK = 60.0  # the load outlives --duration by at most this while reloads finish
MAX_REQUESTS = 2_000_000
AFTER_LAST_RELOAD = 0.5  # keep loading briefly after the last verdict: the tail counts too
WATCH_INTERVAL = 0.25  # the master's status, for which generation served (GenerationWatch)
WATCH_TIMEOUT = 5.0
HEARTBEAT_INTERVAL = 1.0  # a worker's (worker/spec.py); its request counter is that stale
HEARTBEAT = HEARTBEAT_INTERVAL + 0.2  # wait this long for every counter to be current


class DrillError(ServiceError, RuntimeError):
    """The drill could not run (the service did not start, bad arguments)."""


@dataclass(frozen=True)
class DrillOptions:
    app: str | None = None  # None: the bundled example app
    control: str | None = None  # attach to a running service instead of starting one
    target: tuple[str, int] | None = None
    clients: int = 4  # per kind: keep-alive and connection-per-request
    duration: float = 8.0
    reloads: int = 2
    broken: bool = False
    workers: int = 2
    timeout: float = 5.0  # per request


@dataclass(frozen=True)
class Step:
    """One reload of the plan; `release` is written first when the drill owns the code."""

    label: str
    expect_ok: bool
    release: tuple[str, float, bool] | None = None  # (name, boot seconds, broken)


def plan_steps(reloads: int, broken: bool, bundled: bool) -> list[Step]:
    """Good reloads v2..v(N+1) (the first boots slowly, like a big app); the broken
    release goes right after the first good one, so the fixed ones follow it."""
    steps = []
    for index in range(reloads):
        name = f"v{index + 2}"
        boot = 1.0 if index == 0 else 0.0
        steps.append(Step(f"{name} ({boot:g} s import)" if bundled else f"#{index + 1}", True,
                          (name, boot, False) if bundled else None))
    if broken:
        position = min(1, len(steps))
        steps.insert(position, Step("broken (import fails)", False, ("broken", 0.0, True)))
    return steps


def bundled(options: DrillOptions) -> bool:
    """The drill serves the bundled example app (it writes its releases); otherwise the
    user's app or service, whose releases and boot times are theirs."""
    return options.app is None and options.control is None


def describe_target(options: DrillOptions) -> str:
    """What the drill loads, for its report: never "the bundled example" unless it is."""
    if options.control is not None:
        return f"the service at {options.control}"
    return options.app if options.app is not None else "the bundled example app"


def run_drill(options: DrillOptions, say: Callable[[str], None]) -> DrillResult:
    if options.control is not None and (options.target is None or options.broken):
        raise DrillError("--control needs --target HOST:PORT, and cannot write a --broken "
                         "release into a service it did not start")
    if options.broken and options.app is not None:
        raise DrillError("--broken writes releases of the bundled example app; give no APP")
    with contextlib.ExitStack() as stack:
        if options.control is not None:
            assert options.target is not None
            control, target, root = options.control, options.target, None
            alive: Callable[[], bool] = lambda: True  # noqa: E731 -- a one-line predicate
            say(f"drill: attached to {control}, loading {target[0]}:{target[1]}")
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="unbroken-drill-")))
            control, target, alive = stack.enter_context(_serve(options, root, say))
        _wait_serving(control, alive)
        steps = plan_steps(options.reloads, options.broken, bundled(options))
        return _drive(options, control, target, root, steps, say)
    raise AssertionError("unreachable")  # pragma: no cover -- ExitStack does not swallow


def _drive(options: DrillOptions, control: str, target: tuple[str, int], root: Path | None,
           steps: list[Step], say: Callable[[str], None]) -> DrillResult:
    origin = time.monotonic()
    loads = [Load(target, clients=options.clients, keep_alive=keep,
                  duration=options.duration + LOAD_SLACK, max_requests=MAX_REQUESTS,
                  timeout=options.timeout).start() for keep in (True, False)]
    records: list[ReloadRecord] = []
    watch = GenerationWatch(control).start()
    try:
        for index, step in enumerate(steps):
            _sleep_until(origin + options.duration * (index + 1) / (len(steps) + 1))
            records.append(_reload(control, root, step, say))
        last = records[-1].ended_at + AFTER_LAST_RELOAD if records else origin
        _sleep_until(max(origin + options.duration, last))
    finally:
        samples: list[Sample] = sorted(loads[0].stop() + loads[1].stop(),
                                       key=lambda sample: sample.start)
        # When the app does not say which version answered, the master's counters do:
        # wait for the workers' next heartbeat so the last second is counted too.
        snapshots = watch.stop(settle=0.0 if app_says_its_version(samples) else HEARTBEAT)
    return analyse(samples, records, origin, snapshots)


class GenerationWatch:
    """Asks the master for its status every WATCH_INTERVAL: which generation each worker
    is, and how many requests it served (bounded: stops with the drill, or at the first
    status that does not come, as when the service died)."""

    def __init__(self, control: str) -> None:
        self.control = control
        self.snapshots: list[Snapshot] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-generations",
                                        daemon=True)

    def start(self) -> GenerationWatch:
        self.snapshot()  # the baseline, before the load
        self._thread.start()
        return self

    def snapshot(self, as_of: float | None = None) -> bool:
        """`as_of`: when the counters were last current; by default half a heartbeat ago,
        the average age of a worker's counter in the master's status."""
        as_of = time.monotonic() - HEARTBEAT_INTERVAL / 2 if as_of is None else as_of
        try:
            data = call(self.control, "status", timeout=WATCH_TIMEOUT).data
        except (ControlUnavailable, OSError):
            return False
        workers = {int(w["pid"]): (int(w["generation"]), int(w["requests"]))
                   for w in data.get("workers", [])}
        self.snapshots.append(Snapshot(as_of, workers))
        return True

    def _run(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL):
            if not self.snapshot():
                return

    def stop(self, settle: float) -> list[Snapshot]:
        """Stop polling; with `settle`, take a last snapshot after the workers' next
        heartbeat, current as of now (the load has stopped); what it adds was served over
        the last heartbeat, so it counts half one before."""
        stopped = time.monotonic()
        self._stop.set()
        self._thread.join(WATCH_TIMEOUT + 1)
        if settle and self.snapshots:
            time.sleep(settle)
            self.snapshot(as_of=stopped - HEARTBEAT_INTERVAL / 2)
        return self.snapshots


def _sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


def _reload(control: str, root: Path | None, step: Step,
            say: Callable[[str], None]) -> ReloadRecord:
    if root is not None and step.release is not None:
        name, boot, broken = step.release
        write_release(root, name, boot=boot, broken=broken)
    requested = time.monotonic()
    try:
        reply = call(control, "reload", timeout=RELOAD_TIMEOUT)
        ok, message = reply.ok, reply.message
    except (ControlUnavailable, OSError) as error:
        ok, message = False, f"control socket: {error}"
    record = ReloadRecord(step.label, step.expect_ok, requested, time.monotonic(), ok, message)
    say(f"drill: reload {step.label}: {'served' if ok else 'refused'} in "
        f"{record.seconds:.2f}s")
    return record


@contextlib.contextmanager
def _serve(options: DrillOptions, root: Path,
           say: Callable[[str], None]
           ) -> Iterator[tuple[str, tuple[str, int], Callable[[], bool]]]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=2048)
    port = listener.getsockname()[1]
    control = str(root / "control.sock")
    command = [sys.executable, "-m", "unbroken", "serve", "-b", f"fd://{listener.fileno()}",
               "-w", str(options.workers), "--control", control, "--log-level", "warning"]
    if options.app is None:
        write_release(root, "v1")
        command += ["app:app", "--chdir", str(root / "current"), "--health-path", "/healthz"]
    else:
        command += [options.app]
    say(f"drill: serving {describe_target(options)} on 127.0.0.1:{port} with "
        f"{options.workers} workers")
    log = open(root / "service.log", "wb")  # noqa: SIM115 -- closed below
    server = subprocess.Popen(command, pass_fds=(listener.fileno(),), stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        yield control, ("127.0.0.1", port), lambda: server.poll() is None
    finally:
        _stop(server)
        listener.close()
        log.close()


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        server.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(STOP_TIMEOUT)


def _wait_serving(control: str, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and alive():
        try:
            if call(control, "status", timeout=5).data.get("phase") == "serving":
                return
        except (ControlUnavailable, OSError):
            pass
        time.sleep(0.05)
    log = Path(control).with_name("service.log")
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise DrillError(f"the service at {control} did not start serving"
                     + (f"\n{tail}" if tail else ""))


def report_path(given: str | None) -> str:
    if given:
        return given
    return os.path.abspath(time.strftime("unbroken-drill-%Y%m%d-%H%M%S.html"))
