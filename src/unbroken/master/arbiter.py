"""The master: one PID for the life of the service, the sockets, and one loop.

    run() ── loop: select(signals, worker channels, control, fifo)
              ├─ handle signals        (queued by handlers, never acted on in them)
              ├─ reap exited workers   (a boot failure of the target aborts the reload)
              └─ perform plan(view)    (spawn / drain / kill / complete: rollout/planner.py)

States of the service: STARTING (first generation booting) → SERVING ⇄ RELOADING
→ STOPPING. A reload is a change of *target* generation; an abort points the
target back at the serving generation, and the planner restores it.

The master never imports the application and never closes the listening
sockets before it exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import os
import random
import selectors
import shlex
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from unbroken.config import Config, ConfigError
from unbroken.config.source import ConfigSource
from unbroken.control.paths import default_control_path
from unbroken.control.protocol import Reply, Request, progress, result
from unbroken.control.server import ControlConnection, ControlServer
from unbroken.errors import ServiceError
from unbroken.master.channels import JSONLineChannel
from unbroken.master.fifo import MasterFifo
from unbroken.master.listeners import ListenerSet
from unbroken.master.orphans import reap_orphans
from unbroken.master.output import OutputTap
from unbroken.master.pidfile import remove_pidfile, write_pidfile
from unbroken.master.pool import (
    Command,
    Generation,
    Worker,
    resolve_python,
    spawn,
    spawn_command,
)
from unbroken.master.probe import HTTPProbe
from unbroken.master.signals import SignalQueue
from unbroken.master.systemd import Notifier
from unbroken.messages import (
    Adopt,
    BootFailed,
    Cut,
    HandOver,
    Heartbeat,
    Park,
    Ready,
    Resume,
    Retire,
    WorkerMessage,
)
from unbroken.observability.cuts import CutOwner, cut_owner, serving_message
from unbroken.observability.history import ReloadEntry
from unbroken.observability.hub import Observatory
from unbroken.observability.metrics import restart_cause
from unbroken.rollout.backoff import Backoff
from unbroken.rollout.crashloop import STABLE_AFTER, CrashLoop, after_death, settle
from unbroken.rollout.lifecycle import KillReason, WorkerState
from unbroken.rollout.planner import (
    Action,
    BeginWatch,
    CompleteRollout,
    DrainWorker,
    KillWorker,
    ParkWorker,
    PoolView,
    ResumeWorker,
    SpawnWorker,
    WorkerView,
    plan,
)
from unbroken.sockets import (
    AddressError,
    describe_listener,
    listen_queue,
)
from unbroken.worker.spec import WorkerSpec, spec_for

log = logging.getLogger("unbroken.master")

# Settings a reload cannot change: they name the master's own sockets and files.
RESTART_ONLY = ("control", "name", "pid", "master_fifo", "cmd", "app", "chdir",
                "ready_bind", "metrics_bind")
TICK = 0.2  # longest sleep of the loop: bounds how late a deadline is noticed
MAX_BOOT_RETRIES = 5  # consecutive boot failures of the serving generation before giving up
QUICK_STOP_TIMEOUT = 2.0


class Phase(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    RELOADING = "reloading"
    STOPPING = "stopping"


class StartupFailed(ServiceError, RuntimeError):
    """The first generation could not boot; `details` is the worker's traceback."""

    def __init__(self, message: str, details: str) -> None:
        super().__init__(message)
        self.details = details


@dataclass
class Rollout:
    generation: int
    started_at: float
    waiters: list[ControlConnection] = field(default_factory=list)
    started_wall: float = field(default_factory=time.time)  # for the reload history
    cut: int = 0  # requests old workers it drained cut, reported before it completed
    watch_started: float | None = None  # its --reload-stable-for window began


class Master:
    def __init__(self, config: Config, source: ConfigSource | None = None) -> None:
        self.config = config
        self.source = source
        self.pid = os.getpid()
        self.selector = selectors.DefaultSelector()
        self.signals = SignalQueue(self.selector)
        self.control = ControlServer(config.control or default_control_path(config.name),
                                     self.selector, self._on_control)
        self.fifo = (MasterFifo(config.master_fifo, self.selector, self._on_fifo)
                     if config.master_fifo else None)
        self.sockets = ListenerSet(config.backlog)
        self.desired = config.workers
        self.phase = Phase.STARTING
        self.generations: dict[int, Generation] = {}
        self.serving: int | None = None
        self.rollout: Rollout | None = None
        self.queued_waiters: list[ControlConnection] | None = None
        self.workers: dict[int, Worker] = {}
        self.next_worker_id = 1
        self.boot_backoff = Backoff(MAX_BOOT_RETRIES)  # the serving generation's boots
        self.crash_loop = CrashLoop()  # serving workers that die soon after Ready
        self.stop_deadline: float | None = None
        self.stop_waiters: list[ControlConnection] = []
        self.startup_failure: StartupFailed | None = None
        self.touch_mtime = self._touch_mtime()
        self.command = self._command(config)
        self.probes: dict[int, HTTPProbe] = {}
        self.drain_at: float | None = None  # graceful stop: when workers are told to drain
        # Reload entries written while the generation they replaced still drains, by
        # that generation: amended as its workers exit (observability/cuts.py).
        self.replaced: dict[int, ReloadEntry] = {}
        self.systemd = Notifier()
        self.observatory = Observatory(
            self.control.path, self.selector, lambda: self.phase.value,
            lambda: [(w.state.value, w.stats) for w in self.workers.values()],
            ready_bind=config.ready_bind, metrics_bind=config.metrics_bind,
            queues=self._listen_queues)

    def _listen_queues(self) -> list[tuple[str, int, int]]:
        queues = []
        for listener in self.sockets.current:
            depth = listen_queue(listener)
            if depth is not None:
                queues.append((describe_listener(listener), *depth))
        return queues

    @staticmethod
    def _command(config: Config) -> Command | None:
        if not config.cmd:
            return None
        directory = os.path.dirname(default_control_path(config.name))
        return Command(tuple(shlex.split(config.cmd)), directory,
                       signal.Signals[f"SIG{config.drain_signal}"],
                       probes=config.health_path is not None)

    # -- life cycle -------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        with contextlib.ExitStack() as opened:
            self._open(opened)
            self._start_rollout([])
            while self.phase is not Phase.STOPPING or self.workers:
                self._tick()
        log.info("unbroken master %d exited", self.pid)
        if self.startup_failure is not None:
            raise self.startup_failure
        return 0

    def _open(self, opened: contextlib.ExitStack) -> None:
        """Each resource's undo is pushed as it is opened: a failure at any step closes
        what the steps before it opened, in reverse, and leaves no file behind."""
        config = self.config
        if config.umask is not None:
            os.umask(config.umask)  # before binding: it sets unix sockets' modes
        self.control.check()
        self.sockets.open(config.bind)
        opened.callback(self.sockets.close)
        self.sockets.give_to(config.user, config.group)
        self.control.open()
        opened.callback(self.control.close)
        opened.callback(self._answer_stop_waiters)  # before the control socket closes
        self.observatory.open()
        opened.callback(self.observatory.close)
        if self.command is not None:
            os.makedirs(self.command.notify_directory, mode=0o700, exist_ok=True)
        if self.fifo:
            self.fifo.open()
            opened.callback(self.fifo.close)
        self.signals.install()
        opened.callback(self.signals.restore_defaults)
        opened.callback(self.systemd.close)
        if config.pid:
            write_pidfile(config.pid, self.pid)
            opened.callback(remove_pidfile, config.pid, self.pid)
        where = ", ".join(describe_listener(s) for s in self.sockets.current)
        log.info("unbroken master %d listening on %s (control: %s)", self.pid, where,
                 self.control.path)

    def _answer_stop_waiters(self) -> None:
        for waiter in self.stop_waiters:
            waiter.send(result(True, "stopped"))

    def _tick(self) -> None:
        for key, events in self.selector.select(TICK):
            callback: Callable[[int], None] = key.data
            callback(events)
        for signum in self.signals.pop_all():
            self._on_signal(signum)
        self._reap()
        if self.pid == 1:  # a container's init: orphans are ours to wait for
            reap_orphans({w.pid for w in self.workers.values()})
        self._settle_crash_loop()
        self._check_ready_after()
        self._check_touch_file()
        self.observatory.sweep(time.monotonic())
        if self.phase is Phase.STOPPING:
            self._check_drain_delay()
            self._enforce_stop_deadline()
        else:
            for action in plan(self._view()):
                self._perform(action)

    # -- the plan -------------------------------------------------------------------

    @property
    def target(self) -> int:
        if self.rollout is not None:
            return self.rollout.generation
        assert self.serving is not None
        return self.serving

    def _view(self) -> PoolView:
        now = time.monotonic()
        workers = tuple(
            WorkerView(w.id, w.generation, w.state, w.spawned_at,
                       w.last_seen if w.heartbeats else now, w.drain_started, w.retiring,
                       w.parkable)
            for w in self.workers.values() if w.kill_reason is None
        )
        return PoolView(
            desired=self.desired, target=self.target, rolling=self.rollout is not None,
            surge=self.config.reload_surge, workers=workers, now=now,
            spawn_allowed=self._spawn_allowed(now),
            boot_timeout=self.config.boot_timeout, timeout=self.config.timeout,
            graceful_timeout=self.config.graceful_timeout,
            stable_for=self.config.reload_stable_for,
            watch_started=self.rollout.watch_started if self.rollout else None,
        )

    def _spawn_allowed(self, now: float) -> bool:
        """During a reload a failure aborts it, so only steady-state respawns back off."""
        if self.rollout is not None:
            return True
        return self.boot_backoff.allows(now) and self.crash_loop.allows_spawn(now)

    def _perform(self, action: Action) -> None:
        if isinstance(action, SpawnWorker):
            self._spawn(action.generation)
        elif isinstance(action, DrainWorker):
            self._drain(self.workers[action.worker])
        elif isinstance(action, KillWorker):
            worker = self.workers[action.worker]
            log.warning("killing worker %d (generation %d): %s", worker.pid, worker.generation,
                        action.reason)
            worker.kill_reason, worker.kill_why = action.reason, action.why
            worker.signal(signal.SIGKILL)
        elif isinstance(action, ParkWorker):
            self.workers[action.worker].move_to(WorkerState.PARKED)
            self.workers[action.worker].tell(Park())
        elif isinstance(action, ResumeWorker):
            worker = self.workers[action.worker]
            worker.move_to(WorkerState.READY)
            worker.tell(Resume())
            log.info("worker %d (generation %d) accepts again", worker.pid, worker.generation)
        elif isinstance(action, BeginWatch):
            self._begin_watch(action.generation)
        elif isinstance(action, CompleteRollout):
            self._complete_rollout(action.generation)

    def _spawn(self, number: int) -> None:
        generation = self.generations[number]
        worker_id, self.next_worker_id = self.next_worker_id, self.next_worker_id + 1
        try:
            output = OutputTap(self.selector)
            if self.command is not None:
                worker = spawn_command(worker_id, generation, list(generation.listeners),
                                       self.command, time.monotonic(), output)
            else:
                worker = spawn(worker_id, generation, list(generation.listeners),
                               self._worker_spec(), time.monotonic(), output)
        except OSError as error:
            self._on_boot_failure(number, f"cannot start a worker in {generation.directory}: "
                                  f"{error.strerror or error}", "")
            return
        self.workers[worker.id] = worker
        self.selector.register(worker.channel.sock, selectors.EVENT_READ,
                               lambda events, w=worker: self._on_worker_readable(w))
        log.debug("spawned worker %d (generation %d)", worker.pid, number)

    def _worker_spec(self) -> WorkerSpec:
        config = self.config
        max_requests = config.max_requests
        if max_requests and config.max_requests_jitter:
            max_requests += random.randint(0, config.max_requests_jitter)
        return spec_for(config, max_requests)

    def _drain(self, worker: Worker) -> None:
        if worker.state is WorkerState.BOOTING:
            worker.kill_reason, worker.kill_why = "no longer needed", KillReason.NOT_NEEDED
            worker.signal(signal.SIGKILL)
            return
        worker.move_to(WorkerState.DRAINING)
        worker.drain_started = time.monotonic()
        worker.drain(self.config.graceful_timeout)
        log.info("draining worker %d (generation %d)", worker.pid, worker.generation)

    # -- worker events ------------------------------------------------------------------

    def _on_worker_readable(self, worker: Worker) -> None:
        messages = worker.channel.read()
        if messages is None:
            self.selector.unregister(worker.channel.sock)
            return
        worker.last_seen = time.monotonic()
        for message in messages:
            self._on_message(worker, message)

    def _on_message(self, worker: Worker, message: WorkerMessage) -> None:
        if isinstance(message, Heartbeat):
            worker.stats = message
        elif (isinstance(message, Ready) and worker.state is WorkerState.BOOTING
              and worker.probe_path and self.config.health_path):
            self._probe(worker, message)
        elif isinstance(message, Ready) and worker.state is WorkerState.BOOTING:
            worker.move_to(WorkerState.READY)
            worker.ready_at = time.monotonic()
            self._on_ready(worker, message)
        elif isinstance(message, BootFailed):
            worker.boot_failure = message
        elif isinstance(message, Retire) and not worker.retiring:
            log.info("worker %d asks to be replaced: %s", worker.pid, message.reason)
            worker.retiring = True
        elif isinstance(message, HandOver):
            self._rehome(worker, message.count)
        elif isinstance(message, Cut):
            log.warning("worker %d (generation %d) cut %d request(s) at --graceful-timeout: %s",
                        worker.pid, worker.generation, message.count, ", ".join(message.samples))
            worker.cut += message.count
            self.observatory.requests_cut(message.count)

    def _rehome(self, worker: Worker, count: int) -> None:
        """A draining worker's idle connections, at its deadline: to the serving worker
        with the fewest, which reads whatever their clients sent (still in the kernel).
        With none to take them (a stop), closing our copies closes them."""
        assert isinstance(worker.channel, JSONLineChannel)
        fds = worker.channel.take_fds(count)
        takers = [w for w in self.workers.values() if w.state is WorkerState.READY
                  and w.parkable and w.generation == self.serving and w.kill_reason is None]
        taker = min(takers, key=lambda w: w.stats.connections, default=None)
        try:
            if taker is not None and taker.tell(Adopt(len(fds)), fds):
                log.info("worker %d handed %d idle connection(s) to worker %d",
                         worker.pid, len(fds), taker.pid)
                self.observatory.connections_handed_over(len(fds))
            else:
                log.warning("worker %d had %d idle connection(s) at --graceful-timeout and "
                            "no serving worker to take them: closed", worker.pid, len(fds))
        finally:
            for fd in fds:
                os.close(fd)

    def _probe(self, worker: Worker, message: Ready) -> None:
        """A --cmd worker said it is up: ask its private socket for --health-path."""
        if worker.probing:
            return
        worker.probing = True
        assert worker.probe_path is not None and self.config.health_path is not None

        def done(reason: str | None) -> None:
            self.probes.pop(worker.id, None)
            if worker.state is not WorkerState.BOOTING or worker.kill_reason:
                return
            if reason is None:
                worker.move_to(WorkerState.READY)
                worker.ready_at = time.monotonic()
                self._on_ready(worker, Ready(time.monotonic() - worker.spawned_at))
                return
            worker.boot_failure = BootFailed(reason, "")
            worker.kill_reason, worker.kill_why = reason, KillReason.PROBE_FAILED
            worker.signal(signal.SIGKILL)

        self.probes[worker.id] = HTTPProbe(worker.probe_path, self.config.health_path,
                                           self.selector, done)

    def _on_ready(self, worker: Worker, message: Ready) -> None:
        log.info("worker %d (generation %d) ready in %.2fs", worker.pid, worker.generation,
                 message.boot_seconds)
        if worker.generation == self.serving or self.rollout is None:
            self.boot_backoff = self.boot_backoff.reset()
        if self.rollout is not None and worker.generation == self.rollout.generation:
            ready = sum(1 for w in self.workers.values()
                        if w.generation == worker.generation and w.state is WorkerState.READY)
            doing = "starting" if self.serving is None else "reloading"
            self.systemd.status(f"{doing}: generation {worker.generation} "
                                f"{ready}/{self.desired} ready")
            self._notify(progress(f"generation {worker.generation}: {ready}/{self.desired} ready",
                                  generation=worker.generation, ready=ready,
                                  desired=self.desired))

    def _reap(self) -> None:
        for worker in list(self.workers.values()):
            if worker.exit_status() is None:
                continue
            del self.workers[worker.id]
            self._read_last_words(worker)
            try:
                self.selector.unregister(worker.channel.sock)
            except (KeyError, ValueError):
                pass
            worker.channel.close()
            self._forget_probe(worker)
            self.observatory.worker_exited(worker.stats, restart_cause(
                worker.state.value, self.phase is Phase.STOPPING, worker.kill_why))
            self._on_exit(worker, worker.state)
            self._account_cut(worker)
            self._release_sockets()

    def _read_last_words(self, worker: Worker) -> None:
        """Read the `Cut` report a worker sends just before it exits: its exit may be
        seen before the select that would have read it. Only that message: anything
        else unread at exit is ignored, as it always was."""
        for _ in range(16):  # bounded: everything it wrote is already in our buffer
            messages = worker.channel.read()
            if not messages:
                return
            for message in messages:
                if isinstance(message, Cut):
                    self._on_message(worker, message)

    def _account_cut(self, worker: Worker) -> None:
        """Fold an exited worker's cut requests into the reload that drained it."""
        rolling_from = self.serving if self.rollout is not None else None
        owner = cut_owner(worker.generation, self.replaced, rolling_from)
        if owner is CutOwner.ROLLOUT and self.rollout is not None:
            self.rollout.cut += worker.cut
        elif owner is CutOwner.REPLACING_RELOAD:
            entry = self.replaced.pop(worker.generation)
            updated = entry.after_worker_drained(worker.cut)
            self.observatory.reload_amended(entry, updated)
            if updated.draining:
                self.replaced[worker.generation] = updated

    def _release_sockets(self) -> None:
        """Close binds removed by a reload once no worker that listens on them is left."""
        in_use = [sock for worker in self.workers.values()
                  for sock in self.generations[worker.generation].listeners]
        self.sockets.release_unused(in_use)

    def _forget_probe(self, worker: Worker) -> None:
        probe = self.probes.pop(worker.id, None)
        if probe is not None:
            probe.close()
        if worker.probe_path:
            try:
                os.unlink(worker.probe_path)
            except OSError:
                pass

    def _on_exit(self, worker: Worker, state: WorkerState) -> None:
        how = worker.describe_exit()
        if state is WorkerState.DRAINING:
            log.info("worker %d (generation %d) drained, %s", worker.pid, worker.generation, how)
        elif self.phase is Phase.STOPPING:
            pass
        elif state is WorkerState.BOOTING:
            reason = (worker.boot_failure.reason if worker.boot_failure
                      else worker.kill_reason or f"exited before ready ({how})")
            details = worker.boot_failure.details if worker.boot_failure else ""
            if worker.kill_why is not KillReason.NOT_NEEDED:
                self._on_boot_failure(worker.generation, f"worker {worker.pid}: {reason}",
                                      details)
        else:
            log.error("worker %d (generation %d) died: %s", worker.pid, worker.generation,
                      worker.kill_reason or how)
            if self.rollout is not None and worker.generation == self.rollout.generation:
                self._abort_rollout(self._death_reason(worker), worker.last_lines())
            elif worker.generation == self.serving and worker.ready_at is not None:
                self._on_serving_death(worker, time.monotonic())

    @staticmethod
    def _death_reason(worker: Worker) -> str:
        cause = worker.kill_reason or worker.describe_exit()
        if worker.ready_at is None:
            return f"worker {worker.pid} died while rolling out: {cause}"
        return (f"worker {worker.pid} died {time.monotonic() - worker.ready_at:.1f}s after "
                f"Ready: {cause}")

    def _on_serving_death(self, worker: Worker, now: float) -> None:
        """Count a death soon after Ready toward the crash loop's back-off (one line)."""
        assert worker.ready_at is not None
        ready_for = now - worker.ready_at
        self.crash_loop = after_death(self.crash_loop, ready_for, now)
        loop = self.crash_loop
        if loop.deaths == 0:
            return  # it had served long enough: an ordinary crash, replaced at once
        if loop.gave_up:
            log.error("generation %d: %d workers died within %.0fs of Ready in a row; not "
                      "respawning until the next reload or scale (what serves keeps serving)",
                      worker.generation, loop.deaths, STABLE_AFTER)
        else:
            log.error("generation %d: worker died %.1fs after Ready (%d in a row); next "
                      "spawn in %.1fs", worker.generation, ready_for, loop.deaths,
                      loop.backoff())
        self.observatory.crash_loop(loop.deaths, loop.gave_up)

    def _settle_crash_loop(self) -> None:
        if not self.crash_loop.deaths:
            return
        ready = [w.ready_at for w in self.workers.values() if w.ready_at is not None
                 and w.generation == self.serving and w.state is WorkerState.READY]
        self.crash_loop = settle(self.crash_loop, time.monotonic(), min(ready, default=None))
        if not self.crash_loop.deaths:
            log.info("generation %s has served %.0fs without an early death: crash loop over",
                     self.serving, STABLE_AFTER)
            self.observatory.crash_loop(0, False)

    def _on_boot_failure(self, generation: int, reason: str, details: str) -> None:
        if self.rollout is not None and generation == self.rollout.generation:
            self._abort_rollout(reason, details)
            return
        if generation != self.serving:
            return
        self.boot_backoff = backoff = self.boot_backoff.failed(time.monotonic())
        log.error("%s; retrying in %.1fs (%d/%d)\n%s", reason, backoff.wait, backoff.failures,
                  MAX_BOOT_RETRIES, details.rstrip())
        if backoff.gave_up:
            log.error("generation %d cannot boot; not retrying until the next reload or scale",
                      generation)

    # -- reloads ------------------------------------------------------------------

    def reload(self, waiter: ControlConnection | None = None) -> None:
        waiters = [waiter] if waiter else []
        if self.phase is Phase.STOPPING:
            for w in waiters:
                w.send(result(False, "the service is stopping"))
            return
        if self.rollout is None and self.serving is not None:
            problem = self._reread_config()
            if problem is not None:
                log.error("reload refused: %s", problem)
                for w in waiters:
                    w.send(result(False, f"reload refused: {problem}"))
                return
        if self.rollout is not None:
            log.info("reload requested while generation %d rolls out; queued",
                     self.rollout.generation)
            self.queued_waiters = (self.queued_waiters or []) + waiters
            for w in waiters:
                w.send(progress("queued behind the reload in progress"))
            return
        self._start_rollout(waiters)

    def _reread_config(self) -> str | None:
        """Apply the configuration as it is now; the reason it cannot be, or None."""
        if self.source is None:
            return None
        try:
            new = self.source.load()
        except ConfigError as error:
            return f"configuration not valid, nothing changed: {error}"
        fixed = {name: getattr(self.config, name) for name in RESTART_ONLY}
        changed = [name for name, value in fixed.items() if getattr(new, name) != value]
        if changed:
            log.warning("%s changed in the configuration: takes effect at the next restart",
                        ", ".join(changed))
        new = dataclasses.replace(new, **fixed)
        try:
            self.sockets.current = self.sockets.prepare(new.bind)
            self.sockets.give_to(new.user, new.group)
        except AddressError as error:
            return f"nothing changed: {error}"
        if new.workers != self.config.workers:
            self.desired = new.workers
        self.config = new
        return None

    def _start_rollout(self, waiters: list[ControlConnection]) -> None:
        self._reset_crash_loop()
        number = max(self.generations, default=0) + 1
        directory = os.path.realpath(self.config.chdir or os.getcwd())
        self.generations[number] = Generation(number, directory, time.monotonic(),
                                              resolve_python(self.config.python, directory),
                                              self.config.user, self.config.group,
                                              self.sockets.current)
        self.rollout = Rollout(number, time.monotonic(), waiters)
        self.boot_backoff = self.boot_backoff.reset()
        if self.serving is not None:
            self.phase = Phase.RELOADING
        log.info("generation %d: starting %d worker(s) from %s", number, self.desired, directory)
        if self.serving is not None:
            self.systemd.reloading(f"reloading: generation {number} booting")
        self._notify(progress(f"generation {number}: booting {self.desired} worker(s) "
                              f"from {directory}", generation=number))

    def _begin_watch(self, number: int) -> None:
        """Every new worker is ready; the old ones are parked while it proves itself."""
        assert self.rollout is not None
        self.rollout.watch_started = time.monotonic()
        window = self.config.reload_stable_for
        log.info("generation %d ready; the old workers are parked for %gs "
                 "(--reload-stable-for) in case it fails", number, window)
        self.systemd.status(f"reloading: generation {number} ready, watched for {window:g}s")
        self._notify(progress(f"generation {number}: all {self.desired} ready; watching it "
                              f"{window:g}s before the old workers drain", generation=number))

    def _complete_rollout(self, number: int) -> None:
        rollout = self.rollout
        assert rollout is not None
        took = time.monotonic() - rollout.started_at
        previous, self.serving, self.rollout = self.serving, number, None
        self.phase = Phase.SERVING
        self._reset_crash_loop()  # what it counted were the previous generation's deaths
        log.info("generation %d serving (was %s), rolled out in %.2fs", number, previous, took)
        self.systemd.ready(f"generation {number} serving, {self.desired} worker(s)")
        # The old workers start draining in this same tick, so what they cut usually
        # arrives after this reply: the entry is amended then (see _account_cut).
        draining = sum(1 for w in self.workers.values() if w.generation == previous)
        if previous is not None:
            entry = self._record_reload(rollout, "ok", previous, number, "", draining)
            if draining:
                self.replaced[previous] = entry
        for waiter in rollout.waiters:
            waiter.send(result(True, serving_message(number, rollout.cut), generation=number,
                               previous=previous, seconds=round(took, 3), cut=rollout.cut,
                               draining=draining))
        self._forget_unused_generations()
        self._start_queued()

    def _abort_rollout(self, reason: str, details: str) -> None:
        rollout = self.rollout
        assert rollout is not None
        self.rollout = None
        if self.serving is None:
            log.error("startup failed: %s\n%s", reason, details.rstrip())
            self.startup_failure = StartupFailed(reason, details)
            self._begin_stop(graceful=False)
            return
        self.phase = Phase.SERVING
        self.sockets.current = self.generations[self.serving].listeners
        self._release_sockets()
        self.systemd.ready(f"generation {self.serving} serving; reload to "
                           f"{rollout.generation} aborted: {reason}"[:300])
        self._record_reload(rollout, "aborted", self.serving, self.serving, reason)
        log.error("reload to generation %d aborted, generation %d keeps serving: %s\n%s",
                  rollout.generation, self.serving, reason, details.rstrip())
        for waiter in rollout.waiters:
            waiter.send(result(False, f"reload aborted, generation {self.serving} keeps "
                               f"serving: {reason}", details, generation=self.serving,
                               failed_generation=rollout.generation))
        self._start_queued()

    def _record_reload(self, rollout: Rollout, outcome: str, before: int | None,
                       after: int | None, reason: str, draining: int = 0) -> ReloadEntry:
        entry = ReloadEntry(
            rollout.started_wall, round(time.monotonic() - rollout.started_at, 3), outcome,
            before, after, rollout.generation, reason, cut=rollout.cut, draining=draining)
        self.observatory.reload_ended(entry)
        return entry

    def _start_queued(self) -> None:
        if self.queued_waiters is not None and self.phase is not Phase.STOPPING:
            waiters, self.queued_waiters = self.queued_waiters, None
            problem = self._reread_config()
            if problem is not None:
                log.error("queued reload refused: %s", problem)
                for waiter in waiters:
                    waiter.send(result(False, f"reload refused: {problem}"))
                return
            self._start_rollout(waiters)

    def _forget_unused_generations(self) -> None:
        used = {w.generation for w in self.workers.values()} | {self.serving}
        for number in list(self.generations):
            if number not in used:
                del self.generations[number]

    def _notify(self, reply: Reply) -> None:
        if self.rollout is not None:
            for waiter in self.rollout.waiters:
                waiter.send(reply)

    # -- stop ------------------------------------------------------------------

    def _begin_stop(self, graceful: bool) -> None:
        if self.phase is Phase.STOPPING and graceful:
            return
        self.phase = Phase.STOPPING
        self.systemd.stopping()
        for waiters in (self.rollout.waiters if self.rollout else [], self.queued_waiters or []):
            for waiter in waiters:
                waiter.send(result(False, "the service is stopping"))
        if self.rollout is not None and self.serving is not None:
            self._record_reload(self.rollout, "interrupted", self.serving, self.serving,
                                "the service began to stop")
        self.rollout, self.queued_waiters = None, None
        # --ready-bind answers 503 from now on; with --drain-delay the workers keep
        # accepting a while longer, so a load balancer stops sending before they stop.
        delay = self.config.drain_delay if graceful else 0.0
        if delay > 0:
            log.info("stopping: workers drain in %.1fs (--drain-delay)", delay)
            self.drain_at = time.monotonic() + delay
            return
        self.drain_at = None
        self._stop_workers(graceful)

    def _check_drain_delay(self) -> None:
        if self.drain_at is not None and time.monotonic() >= self.drain_at:
            self.drain_at = None
            self._stop_workers(graceful=True)

    def _stop_workers(self, graceful: bool) -> None:
        timeout = self.config.graceful_timeout if graceful else QUICK_STOP_TIMEOUT
        self.stop_deadline = time.monotonic() + timeout + 1.0
        log.info("stopping (%s)", "graceful" if graceful else "quick")
        for worker in self.workers.values():
            if worker.state is WorkerState.BOOTING:
                worker.signal(signal.SIGKILL)
            elif graceful and worker.state in (WorkerState.READY, WorkerState.PARKED):
                worker.move_to(WorkerState.DRAINING)
                worker.drain(self.config.graceful_timeout)
            elif not graceful:
                # Our workers exit at once on QUIT; other programs get their own stop
                # signal and the short quick-stop deadline before SIGKILL.
                worker.signal(signal.SIGQUIT if worker.heartbeats else worker.drain_signal)

    def _enforce_stop_deadline(self) -> None:
        if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
            for worker in self.workers.values():
                worker.signal(signal.SIGKILL)
            self.stop_deadline = None

    # -- inputs: signals, control, fifo, touch file --------------------------------

    def _on_signal(self, signum: signal.Signals) -> None:
        if signum == signal.SIGHUP:
            self.reload()
        elif signum == signal.SIGTERM:
            self._begin_stop(graceful=True)
        elif signum in (signal.SIGINT, signal.SIGQUIT):
            self._begin_stop(graceful=False)
        elif signum == signal.SIGTTIN:
            self.scale(self.desired + 1)
        elif signum == signal.SIGTTOU:
            self.scale(self.desired - 1)
        elif signum == signal.SIGUSR1:
            for worker in self.workers.values():
                worker.signal(signal.SIGUSR1)

    def scale(self, workers: int) -> None:
        if workers < 1:
            log.warning("refusing to scale below 1 worker")
            return
        log.info("scaling from %d to %d worker(s)", self.desired, workers)
        self.desired = workers
        self.boot_backoff = self.boot_backoff.reset()
        self._reset_crash_loop()

    def _reset_crash_loop(self) -> None:
        """A reload or a scale asks again: whatever gave up gets another try."""
        if self.crash_loop.deaths:
            self.crash_loop = CrashLoop()
            self.observatory.crash_loop(0, False)

    def _on_fifo(self, command: str) -> None:
        if command == "reload":
            self.reload()
        elif command in ("stop", "quit"):
            self._begin_stop(graceful=command == "stop")
        else:
            self.scale(self.desired + (1 if command == "scale_up" else -1))

    def _on_control(self, request: Request, connection: ControlConnection) -> None:
        if request.command == "status":
            connection.send(Reply("result", self.phase.value, True, self.status()))
        elif request.command == "history":
            reloads = self.observatory.history.as_json()
            connection.send(result(True, f"{len(reloads)} reload(s)", reloads=reloads))
        elif request.command == "reload":
            self.reload(connection)
        elif request.command == "stop":
            self.stop_waiters.append(connection)
            self._begin_stop(graceful=bool(request.arguments.get("graceful", True)))
        elif request.command == "scale":
            count = request.arguments.get("workers")
            if not isinstance(count, int) or count < 1:
                connection.send(result(False, "scale needs workers >= 1"))
                return
            self.scale(count)
            connection.send(result(True, f"scaling to {count} worker(s)", workers=count))

    def _check_ready_after(self) -> None:
        """--cmd programs that cannot say READY=1 count as ready after --ready-after."""
        delay = self.config.ready_after
        if delay is None:
            return
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if (worker.state is WorkerState.BOOTING and not worker.heartbeats
                    and worker.kill_reason is None and now - worker.spawned_at >= delay):
                self._on_message(worker, Ready(now - worker.spawned_at))

    def _touch_mtime(self) -> float | None:
        path = self.config.reload_on_touch
        try:
            return os.stat(path).st_mtime if path else None
        except OSError:
            return None

    def _check_touch_file(self) -> None:
        if not self.config.reload_on_touch:
            return
        mtime = self._touch_mtime()
        if mtime is not None and mtime != self.touch_mtime:
            self.touch_mtime = mtime
            log.info("%s touched: reloading", self.config.reload_on_touch)
            self.reload()

    # -- status ------------------------------------------------------------------

    def _watch_left(self, now: float) -> float | None:
        """Seconds left in the reload's --reload-stable-for window, if one runs."""
        started = self.rollout.watch_started if self.rollout else None
        if started is None:
            return None
        return round(max(0.0, started + self.config.reload_stable_for - now), 1)

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "master_pid": self.pid,
            "name": self.config.name,
            "phase": self.phase.value,
            "generation": self.serving,
            "target": self.rollout.generation if self.rollout else self.serving,
            "watching": self._watch_left(now),
            "desired": self.desired,
            "binds": [describe_listener(s) for s in self.sockets.current],
            "python": sys.executable,
            "crash_loop": self.crash_loop.describe(now),
            # What each live generation was resolved to: a deploy checks that the one
            # serving is the release it switched to, not merely "a new one".
            "generations": {
                str(number): {"directory": generation.directory, "python": generation.python}
                for number, generation in self.generations.items()
                if any(w.generation == number for w in self.workers.values())
                or number in (self.serving, self.rollout.generation if self.rollout else None)
            },
            "workers": [
                {
                    "pid": w.pid, "generation": w.generation, "state": w.state.value,
                    "age": round(now - w.spawned_at, 1), "requests": w.stats.requests,
                    "in_flight": w.stats.in_flight, "connections": w.stats.connections,
                    "rss_kib": w.stats.rss_kib, "retiring": w.retiring,
                }
                for w in sorted(self.workers.values(), key=lambda w: w.id)
            ],
        }
