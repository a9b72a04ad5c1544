"""The master: one PID for the life of the service, the sockets, and one loop.

    run() ── loop: select(signals, worker channels, control, fifo)
              ├─ inputs become events       (master/requests.py; handlers only queue)
              ├─ reap exited workers        (each exit is an event)
              ├─ decide(service, event)     (master/policy.py: the service's lifecycle)
              └─ perform plan(view)         (rollout/planner.py: spawn / drain / park / kill)

This module is the shell: it holds the I/O handles and performs what the two pure
functions decide. It never decides itself; where it seems to (a Ready message leads
to a probe or to READY), the rule is a transition of the worker's lifecycle table
(rollout/lifecycle.py). The master never imports the application and never closes
the listening sockets before it exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from unbroken.config import Config
from unbroken.config.hooks import Hooks
from unbroken.config.source import ConfigSource
from unbroken.control.paths import default_control_path
from unbroken.control.protocol import Reply, Request, progress, result
from unbroken.control.server import ControlConnection, ControlServer
from unbroken.errors import ServiceError
from unbroken.master import events, policy
from unbroken.master.fifo import MasterFifo
from unbroken.master.hooks import MasterHooks
from unbroken.master.listeners import ListenerSet
from unbroken.master.orphans import reap_orphans
from unbroken.master.pidfile import remove_pidfile, write_pidfile
from unbroken.master.requests import from_control, from_fifo, from_signal
from unbroken.master.reread import reread
from unbroken.master.signals import SignalQueue
from unbroken.master.status import service_status
from unbroken.master.systemd import Notifier
from unbroken.master.touch import TouchFile
from unbroken.master.workers import WorkerHub
from unbroken.observability.history import ReloadEntry
from unbroken.observability.hub import Observatory
from unbroken.rollout.lifecycle import KillReason
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
from unbroken.sockets import describe_listener, listen_queue

log = logging.getLogger("unbroken.master")

TICK = 0.2  # longest sleep of the loop: bounds how late a deadline is noticed


class StartupFailed(ServiceError, RuntimeError):
    """The first generation could not boot; `details` is the worker's traceback."""

    def __init__(self, message: str, details: str) -> None:
        super().__init__(message)
        self.details = details


class Master:
    def __init__(self, config: Config, source: ConfigSource | None = None,
                 hooks: Hooks | None = None) -> None:
        self.config = config
        self.source = source
        self.hooks = MasterHooks(hooks or Hooks(), config)
        self.pid = os.getpid()
        self.selector = selectors.DefaultSelector()
        self.signals = SignalQueue(self.selector)
        self.control = ControlServer(config.control or default_control_path(config.name),
                                     self.selector, self._on_control)
        self.fifo = (MasterFifo(config.master_fifo, self.selector, self._on_fifo)
                     if config.master_fifo else None)
        self.sockets = ListenerSet(config.backlog)
        self.service = policy.Service(config.workers, config.workers, _timings(config))
        self.requesters: dict[int, ControlConnection] = {}
        self.stop_waiters: list[ControlConnection] = []
        self.touch = TouchFile(config.reload_on_touch)
        self.systemd = Notifier()
        self.observatory = Observatory(
            self.control.path, self.selector, lambda: self.service.phase.value,
            lambda: [(w.state.value, w.generation, w.stats) for w in self.pool.workers.values()],
            ready_bind=config.ready_bind, metrics_bind=config.metrics_bind,
            queues=self._listen_queues)
        self.pool = WorkerHub(config, self.selector, self.sockets, self.observatory,
                              self._handle, lambda: self.service, self.hooks)

    def _listen_queues(self) -> list[tuple[str, int, int]]:
        depths = ((describe_listener(s), listen_queue(s)) for s in self.sockets.current)
        return [(where, *depth) for where, depth in depths if depth is not None]

    # -- life cycle -------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        self.hooks.starting()
        with contextlib.ExitStack() as opened:
            self._open(opened)
            self.hooks.ready()
            self._handle(events.MasterStarted())
            while self.service.phase is not policy.Phase.STOPPING or self.pool.workers:
                self._tick()
        log.info("unbroken master %d exited", self.pid)
        self.hooks.exiting()
        if self.service.startup_failure is not None:
            raise StartupFailed(*self.service.startup_failure)
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
        self.pool.open()
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
        for key, mask in self.selector.select(TICK):
            callback: Callable[[int], None] = key.data
            callback(mask)
        for signum in self.signals.pop_all():
            self._on_signal(signum)
        self.pool.reap()
        if self.pid == 1:  # a container's init: orphans are ours to wait for
            reap_orphans({w.pid for w in self.pool.workers.values()})
        self.pool.check_ready_after(self.config.ready_after)
        if self.touch.touched():
            log.info("%s touched: reloading", self.config.reload_on_touch)
            self._handle(events.ReloadRequested(events.Trigger.TOUCH))
        self.observatory.sweep(time.monotonic())
        self._handle(events.Ticked(self.pool.ready_since(self.service.serving)))
        if self.service.phase is not policy.Phase.STOPPING:
            for action in plan(self._view()):
                self._perform(action)

    # -- the service policy -----------------------------------------------------------

    def _handle(self, event: events.Event) -> None:
        """Decide, perform; an action that asks the world something (RereadConfig)
        answers with an event, decided after the actions before it are done."""
        pending: deque[events.Event] = deque([event])
        while pending:
            wanted = self.service.desired
            self.service, actions = policy.decide(self.service, pending.popleft(),
                                                  time.monotonic())
            if self.service.desired != wanted:  # before the answer: the hook has run
                self.hooks.workers_changed(self.service.desired, wanted)
            for action in actions:
                follow = self._do(action)
                if follow is not None:
                    pending.append(follow)

    def _do(self, action: events.Action) -> events.Event | None:
        if isinstance(action, events.Log):
            log.log(action.level, "%s", action.text)
        elif isinstance(action, events.Answer):
            self._send(action.to, result(action.ok, action.message, action.details,
                                         **action.fields), final=True)
        elif isinstance(action, events.Progress):
            self._send(action.to, progress(action.message, **action.fields))
        elif isinstance(action, events.Systemd):
            self._tell_systemd(action)
        elif isinstance(action, events.RereadConfig):
            return self._reread()
        elif isinstance(action, events.StartGeneration):
            return self._start_generation(action)
        elif isinstance(action, events.RestoreListeners):
            self.sockets.current = self.pool.generations[action.generation].listeners
            self.pool.release_sockets()
        elif isinstance(action, events.RecordReload):
            self._record(action)
        elif isinstance(action, events.ForgetGenerations):
            self.pool.forget_generations(self.service.serving)
        elif isinstance(action, events.StopWorkers):
            self.pool.stop(action.graceful)
        elif isinstance(action, events.KillAll):
            for worker in self.pool.workers.values():
                worker.kill(KillReason.STOPPING, "still running at the stop deadline")
        elif isinstance(action, events.CrashLoopChanged):
            self.observatory.crash_loop(action.deaths, action.gave_up)
        return None

    def _send(self, to: tuple[int, ...], reply: Reply, final: bool = False) -> None:
        for token in to:
            connection = self.requesters.pop(token) if final else self.requesters.get(token)
            if connection is not None:
                connection.send(reply)

    def _tell_systemd(self, action: events.Systemd) -> None:
        if action.kind == "stopping":
            self.systemd.stopping()
        else:
            getattr(self.systemd, action.kind)(action.text)

    def _reread(self) -> events.Event:
        """Apply the configuration as it is now (the policy refuses on a problem)."""
        new, hooks, problem = reread(self.source, self.config, self.hooks.hooks, self.sockets)
        if new is None:
            return events.ConfigReread(problem)
        self.config = new
        self.hooks.update(hooks, new, self.service.desired)
        self.touch = self.touch.renamed(new.reload_on_touch)
        self.pool.configure(new)
        return events.ConfigReread(None, new.workers, _timings(new))

    def _start_generation(self, action: events.StartGeneration) -> events.Event | None:
        if action.number > 1:
            self.hooks.reloading()
        generation = self.pool.new_generation(action.number, self.sockets.current)
        log.info("generation %d: starting %d worker(s) from %s", action.number, action.workers,
                 generation.directory)
        self._send(action.to, progress(f"generation {action.number}: booting {action.workers} "
                                       f"worker(s) from {generation.directory}",
                                       generation=action.number))
        return None

    def _record(self, action: events.RecordReload) -> None:
        entry = ReloadEntry(time.time() - action.seconds, action.seconds, action.outcome,
                            action.before, action.after, action.generation, action.reason,
                            cut=action.cut, draining=action.draining,
                            trigger=action.trigger.value if action.trigger else "",
                            directory=self.pool.directory_of(action.generation))
        self.observatory.reload_ended(entry)
        if action.outcome == "ok" and action.draining and action.before is not None:
            self.pool.replaced[action.before] = entry

    # -- the capacity plan ------------------------------------------------------------

    def _view(self) -> PoolView:
        now, service, config = time.monotonic(), self.service, self.config
        assert service.target is not None
        workers = tuple(
            WorkerView(w.id, w.generation, w.state, w.spawned_at,
                       w.last_seen if w.heartbeats else now, w.drain_started, w.retiring,
                       w.parkable)
            for w in self.pool.workers.values())
        return PoolView(
            desired=service.desired, target=service.target,
            rolling=service.rollout is not None, surge=config.reload_surge, workers=workers,
            now=now, spawn_allowed=policy.spawn_allowed(service, now),
            boot_timeout=config.boot_timeout, timeout=config.timeout,
            graceful_timeout=config.graceful_timeout, stable_for=config.reload_stable_for,
            watch_started=service.rollout.watch_started if service.rollout else None,
            first_start=service.serving is None)

    def _perform(self, action: Action) -> None:
        workers = self.pool.workers
        if isinstance(action, SpawnWorker):
            self.pool.spawn(action.generation)
        elif isinstance(action, DrainWorker):
            workers[action.worker].begin_drain(self.config.graceful_timeout)
        elif isinstance(action, KillWorker):
            worker = workers[action.worker]
            if action.why is not KillReason.NOT_NEEDED:
                log.warning("killing worker %d (generation %d): %s", worker.pid,
                            worker.generation, action.reason)
            worker.kill(action.why, action.reason)
        elif isinstance(action, ParkWorker):
            workers[action.worker].park()
        elif isinstance(action, ResumeWorker):
            workers[action.worker].resume()
        elif isinstance(action, BeginWatch):
            self._handle(events.GenerationWhole(action.generation))
        elif isinstance(action, CompleteRollout):
            draining = sum(1 for w in workers.values() if w.generation == self.service.serving)
            self._handle(events.GenerationRolledOut(action.generation, draining))

    # -- inputs: signals, control, fifo -------------------------------------------------

    def _on_signal(self, signum: signal.Signals) -> None:
        if signum == signal.SIGUSR1:
            for worker in self.pool.workers.values():
                worker.signal(signal.SIGUSR1)
        event = from_signal(signum, self.service.desired)
        if event is not None:
            self._handle(event)

    def _on_fifo(self, command: str) -> None:
        self._handle(from_fifo(command, self.service.desired))

    def _on_control(self, request: Request, connection: ControlConnection) -> None:
        if request.command == "status":
            connection.send(Reply("result", self.service.phase.value, True, self.status()))
        elif request.command == "history":
            reloads = self.observatory.history.as_json()
            connection.send(result(True, f"{len(reloads)} reload(s)", reloads=reloads))
        else:
            if request.command == "stop":
                self.stop_waiters.append(connection)  # answered once stopped
            event = from_control(request.command, request.arguments, id(connection))
            if event is not None:
                if isinstance(event, (events.ReloadRequested, events.ScaleRequested)):
                    self.requesters[id(connection)] = connection
                self._handle(event)

    def status(self) -> dict[str, Any]:
        return service_status(self.service, self.config, self.pid, self.sockets.current,
                              self.pool, time.monotonic())


def _timings(config: Config) -> events.Timings:
    return events.Timings(config.graceful_timeout, config.drain_delay, config.reload_stable_for)
