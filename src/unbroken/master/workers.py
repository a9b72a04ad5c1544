"""The master's workers and generations: their messages in, their exits out, as events.

The shell's half for processes: it reads each worker's channel, moves the worker
through its lifecycle table (rollout/lifecycle.py) as messages arrive, probes --cmd
programs, passes a draining worker's idle connections on, and reaps exits. What a
fact means for the service (a Ready counts toward the rollout, an exit aborts it or
backs off) is the policy's (master/policy.py): the hub reports `WorkerReady` and
`WorkerExited` and decides nothing about them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import selectors
import shlex
import signal
import socket
import time
from collections.abc import Callable

from unbroken.config import Config
from unbroken.control.paths import default_control_path
from unbroken.master import events, policy
from unbroken.master.hooks import MasterHooks
from unbroken.master.listeners import ListenerSet
from unbroken.master.output import OutputTap
from unbroken.master.pool import Command, Generation, Worker, resolve_python, spawn, spawn_command
from unbroken.master.probe import HTTPProbe
from unbroken.messages import Adopt, BootFailed, Cut, HandOver, Heartbeat, MasterEnd, Ready, Retire
from unbroken.observability.cuts import CutOwner, cut_owner
from unbroken.observability.history import ReloadEntry
from unbroken.observability.hub import Observatory
from unbroken.observability.metrics import restart_cause
from unbroken.rollout.lifecycle import (
    ExitCause,
    KillReason,
    WorkerEvent,
    WorkerState,
    classify_exit,
)
from unbroken.worker.spec import spec_for

log = logging.getLogger("unbroken.master")

Handle = Callable[[events.Event], None]


class WorkerHub:
    def __init__(self, config: Config, selector: selectors.BaseSelector,
                 sockets: ListenerSet, observatory: Observatory, handle: Handle,
                 service: Callable[[], policy.Service], hooks: MasterHooks) -> None:
        self.config = config
        self.hooks = hooks
        self.service = service  # the policy's state as it is now
        self.selector = selector
        self.sockets = sockets
        self.observatory = observatory
        self.handle = handle
        self.workers: dict[int, Worker] = {}
        self.generations: dict[int, Generation] = {}
        self.probes: dict[int, HTTPProbe] = {}
        self.command = _command(config)
        self._next_id = 1
        # Reload entries written while the generation they replaced still drains, by
        # that generation: amended as its workers exit (observability/cuts.py).
        self.replaced: dict[int, ReloadEntry] = {}

    def open(self) -> None:
        if self.command is not None:
            os.makedirs(self.command.notify_directory, mode=0o700, exist_ok=True)

    def configure(self, config: Config) -> None:
        """A reload's configuration: what later spawns, probes and stops read."""
        self.config = config

    # -- generations ------------------------------------------------------------------

    def new_generation(self, number: int, listeners: tuple[socket.socket, ...]) -> Generation:
        """`current` (or --chdir) resolved now: each generation runs what is on disk."""
        config = self.config
        directory = os.path.realpath(config.chdir or os.getcwd())
        generation = Generation(number, directory, time.monotonic(),
                                resolve_python(config.python, directory), config.user,
                                config.group, listeners)
        self.generations[number] = generation
        return generation

    def directory_of(self, number: int) -> str:
        generation = self.generations.get(number)
        return generation.directory if generation is not None else ""

    def forget_generations(self, serving: int | None) -> None:
        used = {w.generation for w in self.workers.values()} | {serving}
        for number in [n for n in self.generations if n not in used]:
            del self.generations[number]

    def release_sockets(self) -> None:
        """Close binds removed by a reload once no worker that listens on them is left."""
        in_use = [sock for worker in self.workers.values()
                  for sock in self.generations[worker.generation].listeners]
        self.sockets.release_unused(in_use)

    # -- workers ----------------------------------------------------------------------

    def next_id(self) -> int:
        number, self._next_id = self._next_id, self._next_id + 1
        return number

    def spawn(self, number: int) -> None:
        """A fresh interpreter (or the --cmd program) for generation `number`."""
        generation = self.generations[number]
        self.hooks.forking(self._next_id, number)
        try:
            output = OutputTap(self.selector)
            if self.command is not None:
                worker = spawn_command(self.next_id(), generation, list(generation.listeners),
                                       self.command, time.monotonic(), output)
            else:
                spec = spec_for(self.config, self._max_requests(), self.hooks.hooks)
                if not any(w.state is WorkerState.READY for w in self.workers.values()):
                    # --boot-nice protects serving workers' CPU from a booting one; with
                    # none serving (the first start, or all crashed) it would only slow
                    # the boot that everyone waits for.
                    spec = dataclasses.replace(spec, boot_nice=0)
                worker = spawn(self.next_id(), generation, list(generation.listeners), spec,
                               time.monotonic(), output)
        except OSError as error:
            self.handle(events.SpawnFailed(number, f"cannot start a worker in "
                                           f"{generation.directory}: {error.strerror or error}"))
            return
        self.add(worker)

    def _max_requests(self) -> int:
        limit, jitter = self.config.max_requests, self.config.max_requests_jitter
        return limit + random.randint(0, jitter) if limit and jitter else limit

    def add(self, worker: Worker) -> None:
        self.workers[worker.id] = worker
        self.selector.register(worker.channel.sock, selectors.EVENT_READ,
                               lambda events, w=worker: self._on_readable(w))
        log.debug("spawned worker %d (generation %d)", worker.pid, worker.generation)

    def ready_since(self, serving: int | None) -> float | None:
        """When the longest-serving ready worker of `serving` became ready."""
        return min((w.ready_at for w in self.workers.values() if w.ready_at is not None
                    and w.generation == serving and w.state is WorkerState.READY), default=None)

    def stop(self, graceful: bool) -> None:
        for worker in self.workers.values():
            move = policy.STOP_MOVES[graceful, worker.state]
            if move is policy.StopMove.KILL:
                worker.kill(KillReason.STOPPING, "the service is stopping")
            elif move is policy.StopMove.DRAIN:
                worker.begin_drain(self.config.graceful_timeout)
            elif move is policy.StopMove.QUIT:
                # Our workers exit at once on QUIT; other programs get their own stop
                # signal and the short quick-stop deadline before SIGKILL.
                worker.signal(signal.SIGQUIT if worker.heartbeats else worker.drain_signal)

    def check_ready_after(self, delay: float | None) -> None:
        """--cmd programs that cannot say READY=1 count as ready after --ready-after."""
        if delay is None:
            return
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if (worker.state is WorkerState.BOOTING and not worker.heartbeats
                    and now - worker.spawned_at >= delay):
                self._on_message(worker, Ready(now - worker.spawned_at))

    # -- messages ---------------------------------------------------------------------

    def _on_readable(self, worker: Worker) -> None:
        messages = worker.channel.read()
        if messages is None:
            self.selector.unregister(worker.channel.sock)
            return
        worker.last_seen = time.monotonic()
        for message in messages:
            self._on_message(worker, message)

    def _on_message(self, worker: Worker, message: object) -> None:
        if isinstance(message, Heartbeat):
            worker.stats = message
        elif isinstance(message, Ready) and worker.state is WorkerState.BOOTING:
            if worker.probe_path and self.config.health_path:
                worker.move(WorkerEvent.PROBE_BEGAN)
                self._probe(worker, worker.probe_path, self.config.health_path)
            else:
                worker.move(WorkerEvent.SAID_READY)
                self._became_ready(worker, message.boot_seconds)
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

    def _became_ready(self, worker: Worker, boot_seconds: float) -> None:
        worker.ready_at = time.monotonic()
        log.info("worker %d (generation %d) ready in %.2fs", worker.pid, worker.generation,
                 boot_seconds)
        ready = sum(1 for w in self.workers.values()
                    if w.generation == worker.generation and w.state is WorkerState.READY)
        self.handle(events.WorkerReady(worker.generation, ready))

    def _probe(self, worker: Worker, path: str, health_path: str) -> None:
        """A --cmd worker said it is up: ask its private socket for --health-path."""
        def done(reason: str | None) -> None:
            self.probes.pop(worker.id, None)
            if worker.state is not WorkerState.PROBING:
                return  # killed meanwhile (--boot-timeout, a stop)
            if reason is None:
                worker.move(WorkerEvent.PROBE_PASSED)
                self._became_ready(worker, time.monotonic() - worker.spawned_at)
                return
            worker.boot_failure = BootFailed(reason, "")
            worker.kill(KillReason.PROBE_FAILED, reason)

        self.probes[worker.id] = HTTPProbe(path, health_path, self.selector, done)

    def _rehome(self, worker: Worker, count: int) -> None:
        """A draining worker's idle connections, at its deadline: to the serving worker
        with the fewest, which reads whatever their clients sent (still in the kernel).
        With none to take them (a stop), closing our copies closes them."""
        assert isinstance(worker.channel, MasterEnd)
        fds = worker.channel.take_fds(count)
        serving = self.service().serving
        takers = [w for w in self.workers.values() if w.state is WorkerState.READY
                  and w.parkable and w.generation == serving]
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

    # -- exits ------------------------------------------------------------------------

    def reap(self) -> None:
        for worker in [w for w in self.workers.values() if w.exit_status() is not None]:
            del self.workers[worker.id]
            self._read_last_words(worker)
            try:
                self.selector.unregister(worker.channel.sock)
            except (KeyError, ValueError):
                pass
            worker.channel.close()
            self._forget_probe(worker)
            stopping = self.service().phase is policy.Phase.STOPPING
            cause = classify_exit(worker.state, stopping, worker.kill_why, worker.killed_in)
            self.observatory.worker_exited(worker.stats, restart_cause(cause), worker.generation)
            self._account_cut(worker, self.service())
            self.hooks.child_exited(worker.pid, worker.id, worker.generation)
            self.handle(_exited(worker, cause))
            self.release_sockets()

    def _read_last_words(self, worker: Worker) -> None:
        """Read what a worker says just before it exits: why it could not boot
        (`BootFailed`, so the reload's answer names the cause, not only the exit code),
        its `Cut` report and its last `Heartbeat` (what it served since the one before,
        counted in the metrics). Its exit may be seen before the select that would have
        read them. Only those: anything else unread at exit is ignored."""
        for _ in range(64):  # bounded: everything it wrote is already in our buffer
            messages = worker.channel.read()
            if not messages:
                return
            for message in messages:
                if isinstance(message, (BootFailed, Cut, Heartbeat)):
                    self._on_message(worker, message)

    def _account_cut(self, worker: Worker, service: policy.Service) -> None:
        """Fold an exited worker's cut requests into the reload that drained it."""
        rolling_from = service.serving if service.rollout is not None else None
        owner = cut_owner(worker.generation, self.replaced, rolling_from)
        if owner is CutOwner.ROLLOUT and worker.cut:
            self.handle(events.RequestsCut(worker.cut))
        elif owner is CutOwner.REPLACING_RELOAD:
            entry = self.replaced.pop(worker.generation)
            updated = entry.after_worker_drained(worker.cut)
            self.observatory.reload_amended(entry, updated)
            if updated.draining:
                self.replaced[worker.generation] = updated

    def _forget_probe(self, worker: Worker) -> None:
        probe = self.probes.pop(worker.id, None)
        if probe is not None:
            probe.close()
        if worker.probe_path:
            try:
                os.unlink(worker.probe_path)
            except OSError:
                pass


def _exited(worker: Worker, cause: ExitCause) -> events.WorkerExited:
    how = worker.kill_reason or worker.describe_exit()
    if cause is ExitCause.BOOT_FAILED and worker.kill_reason is None:
        how = f"exited before ready ({how})"
    failure = worker.boot_failure  # our workers' traceback; else its last lines of stderr
    details = failure.details if failure and failure.details else worker.last_lines()
    ready_for = None if worker.ready_at is None else time.monotonic() - worker.ready_at
    return events.WorkerExited(worker.pid, worker.generation, cause, how, ready_for,
                               failure.reason if failure else None, details)


def _command(config: Config) -> Command | None:
    if not config.cmd:
        return None
    directory = os.path.dirname(default_control_path(config.name))
    return Command(tuple(shlex.split(config.cmd)), directory,
                   signal.Signals[f"SIG{config.drain_signal}"],
                   probes=config.health_path is not None)
