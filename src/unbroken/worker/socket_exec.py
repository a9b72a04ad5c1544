"""Start a program the way systemd's socket activation does, then get out of the way.

`python -m unbroken.worker.socket_exec PROGRAM ARGS...` with UNBROKEN_PASS_FDS=a,b,...
(the inherited listening sockets, in order): moves them to fds 3, 4, ..., sets
LISTEN_FDS, LISTEN_PID (our own PID, which the program keeps across exec) and
LISTEN_FDNAMES, asks the kernel to send SIGTERM if the master dies, and execs the
program. Protocol: https://www.freedesktop.org/software/systemd/man/latest/sd_listen_fds.html

Kept tiny and import-light: it runs once per worker spawn.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys

SD_LISTEN_FDS_START = 3
PR_SET_PDEATHSIG = 1


def move_fds(fds: list[int]) -> None:
    """Put `fds` at 3, 4, ... without clobbering one another on the way."""
    floor = SD_LISTEN_FDS_START + len(fds) + max(fds, default=0) + 1
    parked = [fcntl.fcntl(fd, fcntl.F_DUPFD, floor) for fd in fds]
    for fd in fds:
        os.close(fd)
    for index, fd in enumerate(parked):
        os.dup2(fd, SD_LISTEN_FDS_START + index, inheritable=True)
        os.close(fd)


def main() -> None:
    program = sys.argv[1:]
    if not program:
        sys.exit("socket_exec: no program given")
    fds = [int(fd) for fd in os.environ.pop("UNBROKEN_PASS_FDS", "").split(",") if fd]
    move_fds(fds)
    os.environ["LISTEN_FDS"] = str(len(fds))
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDNAMES"] = os.environ.pop("UNBROKEN_FD_NAMES", "") or ":".join(
        ["http"] * len(fds))
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() == 1:
        sys.exit("socket_exec: the master is gone")
    try:
        os.execvp(program[0], program)
    except OSError as error:
        print(f"unbroken: cannot run {program[0]!r}: {error.strerror}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main()
