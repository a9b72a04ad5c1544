"""The client side of the control protocol, used by the CLI (and by deploy scripts)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

from unbroken.control.paths import control_path_problem
from unbroken.control.protocol import Reply, Request, decode_reply
from unbroken.control.trust import peer_credentials, server_problem
from unbroken.errors import ServiceError
from unbroken.sockets import AddressError


class ControlUnavailable(ServiceError, ConnectionError):
    """No service answers on that control socket."""


class NoService(ControlUnavailable):
    """Nothing listens at the path (no socket, or a leftover one): `path` says where."""

    def __init__(self, path: str) -> None:
        super().__init__(f"no unbroken service at {path}")
        self.path = path


def replies(path: str, command: str, timeout: float | None = None,
            **arguments: Any) -> Iterator[Reply]:
    """Send one request and yield replies until the final one (or the master closes)."""
    problem = control_path_problem(path, named=False)
    if problem is not None:
        raise AddressError(problem)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise NoService(path) from None
    problem = server_problem(path, peer_credentials(sock)[1], os.geteuid())
    if problem is not None:  # an impostor's "ok" must never reach the caller
        sock.close()
        raise ControlUnavailable(problem)
    with sock, sock.makefile("rb") as stream:
        sock.sendall(Request(command, arguments).encode())
        for line in stream:
            reply = decode_reply(line)
            yield reply
            if reply.final:
                return


def call(path: str, command: str, on_progress: Callable[[Reply], None] | None = None,
         timeout: float | None = None, **arguments: Any) -> Reply:
    """Send a request and return its result; a master that exits mid-way yields a failure."""
    for reply in replies(path, command, timeout, **arguments):
        if reply.final:
            return reply
        if on_progress is not None:
            on_progress(reply)
    return Reply("result", "the master closed the connection without a result", ok=False)
