"""A worker process: load the app, prove it works, accept, say Ready, heartbeat, drain.

Started by the master as a fresh interpreter (`python -m unbroken.worker`) in the
generation's directory, so every worker runs what is on disk now, never a copy
of code the master imported (the master imports none).

Readiness is an explicit hand-off: the worker sends `Ready` only after the app
imported, the probe passed and the engine accepts; anything that fails before
that is reported as `BootFailed` with the traceback and a `WorkerExit` code.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, NoReturn, Protocol, cast

from unbroken.engines import Engine, load_engine
from unbroken.engines.core.tls import TLSError
from unbroken.engines.detect import EngineMismatch, choose_engine
from unbroken.errors import BootError
from unbroken.logs import configure_logging
from unbroken.messages import (
    MAX_FDS_PER_LINE,
    Adopt,
    BootFailed,
    Drain,
    HandOver,
    Heartbeat,
    Park,
    Ready,
    Resume,
    Retire,
    WorkerEnd,
    WorkerExit,
)
from unbroken.observability.cuts import CutRequest, cut_log_lines, cut_report
from unbroken.worker.hooks import WorkerHooks
from unbroken.worker.loader import AppNotFound, load_app
from unbroken.worker.priority import BootPriority
from unbroken.worker.request_timeout import RequestTimeout
from unbroken.worker.spec import ENV_KEY, WorkerSpec

log = logging.getLogger("unbroken.worker")

PR_SET_PDEATHSIG = 1
# After the master vanished, in-flight requests get this long before we exit.
ORPHAN_DRAIN_TIMEOUT = 1.0
# The loop not back this long after the drain deadline is stuck in an application
# call (an inline request, with --threads 1): the watchdog thread ends the drain. Well
# inside the master's kill margin (rollout/planner.py DRAIN_KILL_MARGIN).
STUCK_GRACE = 0.5
# Past STUCK_GRACE with the loop outside an application call, the watchdog looks again
# this often: the loop is in our own code and claims the deadline itself, or it enters
# another application call and is stuck there.
STUCK_POLL = 0.05


class InlineCalls(Protocol):
    """What an engine that calls the app on the loop thread shows the watchdog
    (engines/wsgi/engine.py with --threads 1): plain flags, so a request pays two stores."""

    in_app: bool  # the loop thread is inside an application call
    held: bool  # the watchdog is taking over: the loop must not go on when it returns


def inline_calls(engine: Engine) -> InlineCalls | None:
    """The engine's inline-call flags, if it calls the app on the loop thread."""
    return cast(InlineCalls, engine) if getattr(engine, "inline", False) else None


class DeadlineKeeper:
    """Who ends a drain at its deadline: the loop, normally, or the watchdog thread if
    the loop is stuck in an application call (a request served inline holds it).
    Whoever claims first does it; the other stands aside. Without the watchdog the
    master's SIGKILL would reset every client of the worker, even those whose
    requests we never read, because one request was slow (issue 12, item 3).

    With an engine's `InlineCalls`, the watchdog claims only while the loop thread is
    inside an application call, never on time alone: a loop that came back at that
    moment would read requests of the connections being handed over (lost with the
    exit) or abort them under the hand-over. The two sides meet as in Dekker's
    algorithm (the GIL orders the stores and loads): the watchdog raises `held`, then
    looks at `in_app`; the loop, back from the app, lowers `in_app`, then looks at
    `held` and waits while it is raised. If the watchdog saw the loop in the app, it
    keeps `held` raised and exits the process; if not, it lowers it and looks again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: str | None = None
        self._finished = threading.Event()

    def claim(self, who: str) -> bool:
        with self._lock:
            if self._owner is None:
                self._owner = who
            return self._owner == who

    def finished(self) -> None:
        self._finished.set()

    def watch(self, deadline: float, on_stuck: Callable[[], None],
              inline: InlineCalls | None = None) -> None:
        def run() -> None:
            timeout = max(deadline + STUCK_GRACE - time.monotonic(), 0)
            while not self._finished.wait(timeout):
                if inline is None:
                    if self.claim("watchdog"):
                        on_stuck()
                    return
                inline.held = True
                if inline.in_app and self.claim("watchdog"):
                    on_stuck()  # `held` stays raised: the loop never goes on
                    return
                inline.held = False
                if self._owner is not None:
                    return  # the loop ends the drain itself
                timeout = STUCK_POLL

        threading.Thread(target=run, name="unbroken-drain-watchdog", daemon=True).start()


def _exit_now(code: int) -> NoReturn:
    """Exit without waiting for app threads: a stuck request must not hold the process."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _die_with_master(master_pid: int) -> None:
    """Ask Linux to SIGKILL us if the master dies while we are still booting.

    While the app imports we cannot watch the channel, and an import can take a
    minute; once serving, the channel's EOF gives a gentler exit. If the master died
    before the request took effect, we were re-parented already: our parent is no
    longer the master (which may itself be PID 1, in a container).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != master_pid:
        _exit_now(WorkerExit.ORPHANED)


def user_traceback(error: BaseException) -> str:
    """The traceback without unbroken's and importlib's own frames: the user's code only."""
    summary = traceback.TracebackException.from_exception(error)
    own = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    summary.stack = traceback.StackSummary.from_list(
        [frame for frame in summary.stack
         if not frame.filename.startswith(own) and "importlib" not in frame.filename])
    return "".join(summary.format())


def _fail(channel: WorkerEnd, reason: str, code: WorkerExit) -> NoReturn:
    """Report a boot failure; the master logs the traceback, the worker one line."""
    error = sys.exc_info()[1]
    details = user_traceback(error) if error is not None else ""
    log.error("worker %d failed to boot: %s", os.getpid(), reason)
    channel.send(BootFailed(reason, details))
    _exit_now(code)


def _hooks(spec: WorkerSpec, channel: WorkerEnd) -> WorkerHooks | None:
    """The configuration file's worker hooks, and `post_fork`: before the app import."""
    if not spec.hooks:
        return None
    try:
        hooks = WorkerHooks(spec.hooks, spec.worker, spec.generation, spec.master_pid, spec)
        hooks.forked()
    except BaseException as error:
        _fail(channel, f"gunicorn hooks failed: {error!r}", WorkerExit.APP_LOAD_ERROR)
    return hooks


def _load(spec: WorkerSpec, channel: WorkerEnd) -> Any:
    try:
        return load_app(spec.app)
    except AppNotFound as error:
        # A mistake in the app spec, not a bug in the app: one line, no traceback.
        log.error("worker %d failed to boot: %s", os.getpid(), error)
        channel.send(BootFailed(str(error), ""))
        _exit_now(WorkerExit.APP_LOAD_ERROR)
    except BaseException as error:
        _fail(channel, f"app {spec.app!r} failed to load: {error!r}", WorkerExit.APP_LOAD_ERROR)


def _rss_kib() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return 0


class WorkerRuntime:
    """Drives one engine: signals, heartbeats, the lifeline to the master, drain."""

    def __init__(self, spec: WorkerSpec, channel: WorkerEnd, engine: Engine,
                 loop: asyncio.AbstractEventLoop, hooks: WorkerHooks | None = None,
                 priority: BootPriority | None = None) -> None:
        self.spec = spec
        self.priority = priority  # niced for the boot: restored before accepting
        self.hooks = hooks
        self.channel = channel
        self.engine = engine
        self.loop = loop
        self.stop_requested = asyncio.Event()
        self.drain_timeout = spec.graceful_timeout
        self.exit_code = WorkerExit.OK
        self.drain_deadline: float | None = None  # set when the drain was asked for
        self.deadline = DeadlineKeeper()
        self.request_timeout: RequestTimeout | None = None

    async def boot(self) -> None:
        """Startup hooks, then the probe: failures here are boot failures."""
        try:
            await self.engine.startup()
        except BaseException as error:
            _fail(self.channel, f"app startup failed: {error!r}", WorkerExit.APP_LOAD_ERROR)
        if self.spec.health_path:
            try:
                await self.engine.probe(self.spec.health_path)
            except BaseException as error:
                _fail(self.channel, f"health probe failed: {error}", WorkerExit.PROBE_FAILED)
        if self.hooks is not None:
            try:
                self.hooks.initialised()
            except BaseException as error:
                _fail(self.channel, f"hook post_worker_init raised {error!r}",
                      WorkerExit.APP_LOAD_ERROR)

    async def run(self, started: float) -> None:
        await self.boot()
        if self.priority is not None:
            # Before accepting, not after Ready: from its first accept it serves.
            self.priority.restore()
        listeners = [socket.socket(fileno=fd) for fd in self.spec.listeners]
        await self.engine.start(listeners)
        self._install_signals()
        threading.Thread(target=self._listen_to_master, name="unbroken-master-link",
                         daemon=True).start()
        self.channel.send(Ready(boot_seconds=time.monotonic() - started))
        if self.spec.request_timeout > 0:
            self.request_timeout = RequestTimeout(
                self.spec.request_timeout, self.engine, self.loop,
                lambda reason: self.channel.send(Retire(reason)))
            self.request_timeout.start()
        stop_beating = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(stop_beating,),
                                     name="unbroken-heartbeat", daemon=True)
        heartbeat.start()
        await self.stop_requested.wait()
        deadline = self.drain_deadline or time.monotonic() + self.drain_timeout
        await self.engine.drain(deadline, self._hand_over)  # still heartbeating: counted
        stop_beating.set()
        self.deadline.finished()
        self._report_cut(self.engine.cut_requests)
        self._beat()  # last words: what it served since the last heartbeat
        if self.hooks is not None:
            self.hooks.exiting()

    def _hand_over(self, fds: list[int]) -> bool:
        """(the loop, at the drain deadline) Give the master the connections that are
        between requests, for a serving sibling; False if the watchdog already did."""
        if not self.deadline.claim("loop"):
            return False
        return self._send_connections(fds)

    def _send_connections(self, fds: list[int]) -> bool:
        if not fds or self.exit_code is WorkerExit.ORPHANED:
            return False
        log.info("worker %d: handing %d idle connection(s) to a serving sibling at "
                 "--graceful-timeout", os.getpid(), len(fds))
        for start in range(0, len(fds), MAX_FDS_PER_LINE):
            batch = fds[start:start + MAX_FDS_PER_LINE]
            self.channel.send(HandOver(len(batch)), batch)
        return True

    def _end_stuck_drain(self) -> None:
        """(the watchdog thread) The loop is stuck past the deadline: do its part, from
        the state as it is (the loop thread runs application code, not ours), and exit."""
        log.warning("worker %d: still busy in a request at the drain deadline; ending it",
                    os.getpid())
        self._send_connections(self.engine.handover_fds())
        self._report_cut(self.engine.running_requests())
        _exit_now(self.exit_code)

    def _listen_to_master(self) -> None:
        """(the link thread) The master's messages, read whatever the loop is doing, so
        a drain's deadline is kept even while an inline request holds the loop."""
        while True:
            received = self.channel.receive()
            if received is None:
                self._call(self._orphaned)
                self.deadline.watch(time.monotonic() + ORPHAN_DRAIN_TIMEOUT,
                                    lambda: _exit_now(WorkerExit.ORPHANED))
                return
            messages, fds = received
            for message in messages:
                if isinstance(message, Adopt):
                    taken, fds = fds[:message.count], fds[message.count:]
                    self._call(self._adopt, taken)
                elif isinstance(message, Drain):
                    if self.drain_deadline is None:
                        # A loop stuck in a timed-out request can finish nothing: at once.
                        stuck = self.request_timeout is not None and self.request_timeout.stuck
                        self.drain_deadline = time.monotonic() + (0 if stuck else message.timeout)
                        self.deadline.watch(self.drain_deadline, self._end_stuck_drain,
                                            inline_calls(self.engine))
                    self._call(self._drain, message.timeout)
                else:
                    self._call(self._park, message)
            for fd in fds:  # descriptors no message accounted for
                os.close(fd)

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the loop is closed: we are exiting

    def _adopt(self, fds: list[int]) -> None:
        if self.stop_requested.is_set():
            for fd in fds:
                os.close(fd)  # the master's copies are gone: the client sees a close
            return
        self.engine.adopt([socket.socket(fileno=fd) for fd in fds])

    def _park(self, message: Park | Resume) -> None:
        if self.stop_requested.is_set():
            return  # draining for good: nothing to park or resume
        if isinstance(message, Park):
            self.engine.pause_accepting()
        else:
            self.engine.resume_accepting()

    def _orphaned(self) -> None:
        log.warning("worker %d: master is gone; exiting", os.getpid())
        self.exit_code = WorkerExit.ORPHANED
        self._drain(ORPHAN_DRAIN_TIMEOUT)

    def _report_cut(self, requests: list[CutRequest]) -> None:
        """Say what the graceful deadline cut, in our log and to the master, before we
        exit: otherwise a client's empty reply would be its only trace (issue 12)."""
        spec = self.spec
        for line in cut_log_lines(requests, os.getpid(), spec.worker, spec.generation):
            log.warning("%s", line)
        report = cut_report(requests)
        if report is not None and self.exit_code is not WorkerExit.ORPHANED:
            self.channel.send(report)

    def _quit(self) -> None:
        if self.hooks is not None:
            self.hooks.interrupted()
        _exit_now(WorkerExit.OK)

    def _install_signals(self) -> None:
        self.loop.add_signal_handler(signal.SIGTERM, self._drain, self.spec.graceful_timeout)
        for quick in (signal.SIGINT, signal.SIGQUIT):
            self.loop.add_signal_handler(quick, self._quit)
        self.loop.add_signal_handler(signal.SIGUSR1, self.engine.reopen_logs)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _drain(self, timeout: float) -> None:
        if not self.stop_requested.is_set():
            self.drain_timeout = timeout
            self.stop_requested.set()

    def _beat(self) -> None:
        engine = self.engine
        stats = engine.response_stats
        self.channel.send(Heartbeat(engine.requests_served, engine.in_flight,
                                    engine.connections, _rss_kib(),
                                    **(stats.heartbeat_fields() if stats else {})))

    def _heartbeat(self, stop: threading.Event) -> None:
        """A thread, not a task: a WSGI request served inline holds the loop (see
        engines/wsgi/engine.py), and a long one must not look like a hung worker. The
        counters it reads are plain ints and copies made under the GIL."""
        retired = False
        while not stop.is_set():
            self._beat()
            engine, limit = self.engine, self.spec.max_requests
            if limit and not retired and engine.requests_served >= limit:
                retired = True
                self.channel.send(Retire(f"served --max-requests {limit}"))
            stop.wait(self.spec.heartbeat_interval)


def new_loop(worker_class: str, choice: str = "auto") -> asyncio.AbstractEventLoop:
    """--loop: uvloop where installed (auto), unless told otherwise. Never for gevent:
    gevent's hub runs only while the loop waits in gevent's patched selector, and
    uvloop's C loop would block in epoll and starve every greenlet."""
    if worker_class == "gevent" or choice == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise BootError("--loop uvloop: uvloop is not installed here "
                            "(pip install 'unbroken[uvloop]')") from None
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def main(priority: BootPriority | None) -> NoReturn:
    """Run the worker; `priority` is the boot nice __main__ set before any import."""
    spec = WorkerSpec.from_env(os.environ.pop(ENV_KEY))
    started = time.monotonic()
    _die_with_master(spec.master_pid)
    configure_logging(spec.log_level)
    channel = WorkerEnd(spec.channel, lambda: _exit_now(WorkerExit.ORPHANED))
    hooks = _hooks(spec, channel)
    app = _load(spec, channel)
    try:
        worker_class = choose_engine(spec.worker_class, app, spec.app)
    except EngineMismatch as error:
        log.error("worker %d failed to boot: %s", os.getpid(), error)
        channel.send(BootFailed(str(error), ""))
        _exit_now(WorkerExit.APP_LOAD_ERROR)
    loop = new_loop(worker_class, spec.loop)
    asyncio.set_event_loop(loop)
    try:
        engine_class = load_engine(worker_class)
        engine = engine_class(app, spec.engine, loop)
        if hooks is not None and hooks.around_requests:
            engine.request_hooks = hooks  # pre_request, post_request
        runtime = WorkerRuntime(spec, channel, engine, loop, hooks, priority)
        # Serving now: the master's death is noticed through the channel instead.
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0)
        loop.run_until_complete(runtime.run(started))
    except TLSError as error:
        # A certificate or key that cannot be used: one line, no traceback. At a
        # reload this aborts the rollout and the old generation keeps serving.
        log.error("worker %d failed to boot: TLS: %s", os.getpid(), error)
        channel.send(BootFailed(f"TLS: {error}", ""))
        _exit_now(WorkerExit.BOOT_ERROR)
    except BaseException as error:
        _fail(channel, f"worker error: {error!r}", WorkerExit.BOOT_ERROR)
    _exit_now(runtime.exit_code)
