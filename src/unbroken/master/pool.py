"""Worker processes as the master sees them: spawn, message, signal, reap.

Workers are fresh interpreters (fork+exec of `python -m unbroken.worker`), never
forks of the master, so each one imports the release on disk and the master stays
free of user code. Each gets the listening sockets at the same fd numbers and one
end of a socketpair: its message channel and its lifeline.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field

from unbroken.messages import BootFailed, Heartbeat, WorkerMessage, decode
from unbroken.rollout.lifecycle import WorkerState, transition
from unbroken.worker.spec import ENV_KEY, WorkerSpec

log = logging.getLogger("unbroken.master")

MAX_MESSAGE_BUFFER = 1 << 20


@dataclass(frozen=True)
class Generation:
    """One release: a number and the directory it was resolved to when it was made."""

    number: int
    directory: str
    created_at: float


@dataclass
class Worker:
    id: int
    generation: int
    process: subprocess.Popen[bytes]
    channel: socket.socket
    spawned_at: float
    last_seen: float
    state: WorkerState = WorkerState.BOOTING
    ready_at: float | None = None
    drain_started: float | None = None
    retiring: bool = False
    kill_reason: str | None = None
    boot_failure: BootFailed | None = None
    stats: Heartbeat = field(default_factory=lambda: Heartbeat(0, 0, 0, 0))
    inbox: bytes = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def move_to(self, state: WorkerState) -> None:
        self.state = transition(self.state, state)

    def read_messages(self) -> list[WorkerMessage] | None:
        """Messages received so far; None when the channel closed (the worker is exiting)."""
        try:
            data = self.channel.recv(65536)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        if not data:
            return None
        self.inbox += data
        *lines, self.inbox = self.inbox.split(b"\n")
        if len(self.inbox) > MAX_MESSAGE_BUFFER:
            log.error("worker %d sent an over-long message; ignoring it", self.pid)
            self.inbox = b""
        messages = []
        for line in lines:
            try:
                messages.append(decode(line))
            except ValueError as error:
                log.error("worker %d: %s", self.pid, error)
        return messages

    def signal(self, signum: signal.Signals) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def exit_status(self) -> int | None:
        return self.process.poll()

    def describe_exit(self) -> str:
        code = self.process.returncode
        if code is None:
            return "running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"


def spawn(worker_id: int, generation: Generation, listeners: list[socket.socket],
          spec: WorkerSpec, now: float) -> Worker:
    """Start one worker of `generation`; it reports back over the returned channel."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fds = tuple(sock.fileno() for sock in listeners)
    spec = WorkerSpec(**{**spec.__dict__, "listeners": fds, "channel": theirs.fileno(),
                         "worker": worker_id, "generation": generation.number})
    environment = {**os.environ, ENV_KEY: spec.to_env()}
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "unbroken.worker"],
            cwd=generation.directory,
            env=environment,
            pass_fds=(*fds, theirs.fileno()),
            stdin=subprocess.DEVNULL,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    ours.setblocking(False)
    return Worker(worker_id, generation.number, process, ours, spawned_at=now, last_seen=now)
