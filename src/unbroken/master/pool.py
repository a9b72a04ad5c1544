"""Worker processes as the master sees them: spawn, message, signal, reap.

Workers are fresh interpreters (fork+exec of `python -m unbroken.worker`), never
forks of the master, so each one imports the release on disk and the master stays
free of user code. Each gets the listening sockets at the same fd numbers and one
end of a socketpair: its message channel and its lifeline.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from unbroken.master.channels import Channel, NotifyChannel
from unbroken.master.output import OutputTap
from unbroken.messages import (
    BootFailed,
    Drain,
    Heartbeat,
    MasterEnd,
    MasterMessage,
    Park,
    Resume,
    WorkerExit,
)
from unbroken.rollout.lifecycle import KillReason, WorkerEvent, WorkerState, transition
from unbroken.worker.priority import nice_started, planned_boot_nice
from unbroken.worker.spec import ENV_KEY, WorkerSpec

log = logging.getLogger("unbroken.master")


@dataclass(frozen=True)
class Generation:
    """One release: a number and the directory it was resolved to when it was made."""

    number: int
    directory: str
    created_at: float
    python: str = sys.executable  # what its Python workers are exec'd with (--python)
    user: str | None = None  # workers drop to this identity (--user/--group)
    group: str | None = None
    listeners: tuple[socket.socket, ...] = ()  # what its workers accept on


@dataclass
class Worker:
    id: int
    generation: int
    process: subprocess.Popen[bytes]
    channel: Channel
    spawned_at: float
    last_seen: float
    state: WorkerState = WorkerState.BOOTING
    ready_at: float | None = None
    drain_started: float | None = None
    retiring: bool = False
    kill_reason: str | None = None  # the sentence, when the master killed it
    kill_why: KillReason | None = None  # and the name of the reason
    killed_in: WorkerState | None = None  # what it was doing when killed: what its exit means
    boot_failure: BootFailed | None = None
    cut: int = 0  # requests it reported cut at --graceful-timeout (a `Cut` message)
    stats: Heartbeat = field(default_factory=lambda: Heartbeat(0, 0, 0, 0))
    # Programs started with --cmd: drained with their own signal, no heartbeats, and
    # maybe a private socket for the master's HTTP probe (master/probe.py).
    drain_signal: signal.Signals = signal.SIGTERM
    heartbeats: bool = True
    probe_path: str | None = None
    output: OutputTap | None = None  # its stderr, through the master (master/output.py)

    @property
    def parkable(self) -> bool:
        """Our own workers can stop accepting and resume; a --cmd program cannot."""
        return isinstance(self.channel, MasterEnd)

    def tell(self, message: MasterMessage, fds: list[int] | None = None) -> bool:
        """Best effort: a worker that is gone is reaped and dealt with as such."""
        if not isinstance(self.channel, MasterEnd):
            return False
        return self.channel.send(message, fds)

    def drain(self, timeout: float) -> None:
        """Ours hear it on the channel, which no busy request can hold up (see
        messages.Drain); a --cmd program gets its drain signal."""
        if not self.tell(Drain(timeout)):
            self.signal(self.drain_signal)

    def last_lines(self) -> str:
        if self.output is None:
            return ""
        self.output.read()  # it has exited: whatever it wrote is in the pipe
        return self.output.last_lines()

    @property
    def pid(self) -> int:
        return self.process.pid

    def move(self, event: WorkerEvent) -> None:
        self.state = transition(self.state, event)

    def begin_drain(self, timeout: float) -> None:
        self.move(WorkerEvent.DRAINED)
        self.drain_started = time.monotonic()
        self.drain(timeout)
        log.info("draining worker %d (generation %d)", self.pid, self.generation)

    def park(self) -> None:
        self.move(WorkerEvent.PARKED)
        self.tell(Park())

    def resume(self) -> None:
        self.move(WorkerEvent.RESUMED)
        self.tell(Resume())
        log.info("worker %d (generation %d) accepts again", self.pid, self.generation)

    def kill(self, why: KillReason, sentence: str) -> None:
        """SIGKILL, once: the first reason is the one its exit is read by."""
        if self.state is not WorkerState.KILLING:
            self.kill_reason, self.kill_why, self.killed_in = sentence, why, self.state
            self.move(WorkerEvent.KILLED)
        self.signal(signal.SIGKILL)

    def signal(self, signum: signal.Signals) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def exit_status(self) -> int | None:
        return self.process.poll()

    def describe_exit(self) -> str:
        return describe_exit(self.process.returncode, ours=self.heartbeats)


def spawn(worker_id: int, generation: Generation, listeners: list[socket.socket],
          spec: WorkerSpec, now: float, output: OutputTap | None = None) -> Worker:
    """Start one Python worker of `generation`; it reports back over a socketpair."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fds = tuple(sock.fileno() for sock in listeners)
    # A worker keeping the master's identity is niced from its first instruction
    # (worker/priority.py rule 4); one dropped to --user nices itself.
    keeps_identity = generation.user is None and generation.group is None
    plan = planned_boot_nice(spec.boot_nice) if keeps_identity else None
    spec = dataclasses.replace(
        spec, listeners=fds, channel=theirs.fileno(), worker=worker_id,
        generation=generation.number, master_pid=os.getpid(),
        niced_from=None if plan is None else plan.restore_to)
    try:
        process = _popen([generation.python, "-m", "unbroken.worker"], generation,
                         {ENV_KEY: spec.to_env()}, (*fds, theirs.fileno()), output)
        if plan is not None:
            nice_started(process.pid, plan)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    ours.setblocking(False)
    return Worker(worker_id, generation.number, process, MasterEnd(ours, process.pid),
                  spawned_at=now, last_seen=now, output=output)


def describe_exit(code: int | None, *, ours: bool) -> str:
    """How a worker ended, for logs and replies; our own workers' codes are named."""
    if code is None:
        return "running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    if ours and code in WorkerExit.__members__.values() and code != WorkerExit.OK:
        return f"exit code {code}: {WorkerExit(code).meaning}"
    return f"exit code {code}"


@dataclass(frozen=True)
class Command:
    """A worker that is any program taking its sockets as systemd passes them."""

    argv: tuple[str, ...]
    notify_directory: str
    drain_signal: signal.Signals
    probes: bool = False  # give each worker a private socket for the master's HTTP probe


def spawn_command(worker_id: int, generation: Generation, listeners: list[socket.socket],
                  command: Command, now: float, output: OutputTap | None = None) -> Worker:
    """Start PROGRAM with LISTEN_FDS sockets at fd 3.. and NOTIFY_SOCKET for READY=1."""
    prefix = os.path.join(command.notify_directory, f"{os.getpid()}-{worker_id}")
    channel = NotifyChannel(f"{prefix}.notify", now)
    probe = _probe_listener(f"{prefix}.probe") if command.probes else None
    sockets = [*listeners, *([probe] if probe else [])]
    fds = tuple(sock.fileno() for sock in sockets)
    names = ["http"] * len(listeners) + (["probe"] if probe else [])
    environment = {"NOTIFY_SOCKET": channel.path, "UNBROKEN_PASS_FDS": ",".join(map(str, fds)),
                   "UNBROKEN_FD_NAMES": ":".join(names)}
    try:
        process = _popen([sys.executable, "-m", "unbroken.worker.socket_exec", *command.argv],
                         generation, environment, fds, output)
    except BaseException:
        channel.close()
        raise
    finally:
        if probe is not None:
            probe.close()  # the worker holds it now; the master connects by path
    return Worker(worker_id, generation.number, process, channel, spawned_at=now,
                  last_seen=now, drain_signal=command.drain_signal, heartbeats=False,
                  probe_path=f"{prefix}.probe" if probe else None, output=output)


def resolve_python(python: str | None, directory: str) -> str:
    """The worker interpreter of a generation made in `directory` (already resolved).

    Only the folder is resolved: a venv's `bin/python` is itself a symlink to the base
    interpreter, and following it would leave the venv (and its packages) behind.
    """
    if not python:
        return sys.executable
    path = os.path.join(directory, os.path.expanduser(python))
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _probe_listener(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)
    try:
        if os.path.exists(path):
            os.unlink(path)
        sock.bind(path)
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    return sock


def _popen(argv: list[str], generation: Generation, extra_environment: dict[str, str],
           fds: tuple[int, ...], output: OutputTap | None = None) -> subprocess.Popen[bytes]:
    identity = _identity(generation)
    home = identity.pop("home", None)
    try:
        return subprocess.Popen(
            argv,
            cwd=generation.directory,
            env={**os.environ, **extra_environment, **({"HOME": home} if home else {})},
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
            stderr=output.write_fd if output is not None else None,
            **identity,
        )
    finally:
        if output is not None:
            output.child_started()


def _identity(generation: Generation) -> dict[str, Any]:
    """Popen arguments that drop the worker to --user/--group, supplementary groups too
    (setuid alone would leave it in root's groups)."""
    if generation.user is None and generation.group is None:
        return {}
    arguments: dict[str, Any] = {"group": generation.group, "extra_groups": []}
    if generation.user is not None:
        entry = pwd.getpwnam(generation.user)
        arguments.update(user=generation.user, home=entry.pw_dir)
        if generation.group is None:
            arguments["group"] = entry.pw_gid
    return arguments
