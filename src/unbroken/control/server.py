"""The control socket, served inside the master's single-threaded loop.

Security (shared/HTTP-HARDENING.md §6): a file socket in a directory of mode
0700 that is ours and that nobody else can write (control/trust.py: an existing
one that is not is refused), created under umask 077 (no chmod-after-bind window),
a live socket is never stolen, and every peer's uid is checked with SO_PEERCRED:
only our own uid or root may control the service. Mutating commands are logged
with the peer.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
from collections.abc import Callable

from unbroken.control.protocol import (
    MAX_REQUEST_BYTES,
    ProtocolError,
    Reply,
    Request,
    decode_request,
    result,
)
from unbroken.control.trust import directory_problem, path_problem, peer_credentials
from unbroken.sockets import AddressError, remove_stale_unix_socket

log = logging.getLogger("unbroken.control")


class ControlConnection:
    """One client: reads a request line, then the master sends replies on it."""

    def __init__(self, sock: socket.socket, peer: tuple[int, int], server: ControlServer) -> None:
        self.sock = sock
        self.peer_pid, self.peer_uid = peer
        self.server = server
        self.inbox = b""
        self.outbox = b""
        self.closing = False
        self.closed = False

    def send(self, reply: Reply) -> None:
        if self.closed:
            return
        self.outbox += reply.encode()
        self.closing = self.closing or reply.final
        self._flush()

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self.outbox)
            self.outbox = self.outbox[sent:]
        except BlockingIOError:
            pass
        except OSError:
            self.close()
            return
        if self.outbox:
            self.server.watch(self, selectors.EVENT_READ | selectors.EVENT_WRITE)
        elif self.closing:
            self.close()
        else:
            self.server.watch(self, selectors.EVENT_READ)

    def on_event(self, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            self._flush()
        if events & selectors.EVENT_READ and not self.closed:
            self._read()

    def _read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        if self.closing or b"\n" in self.inbox:
            return  # one request per connection; ignore anything after it
        self.inbox += data
        if b"\n" in self.inbox:
            self.server.dispatch(self, self.inbox.partition(b"\n")[0])
        elif len(self.inbox) > MAX_REQUEST_BYTES:
            self.send(result(False, "request too long"))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.forget(self)
            self.sock.close()


class ControlServer:
    def __init__(self, path: str, selector: selectors.BaseSelector,
                 handler: Callable[[Request, ControlConnection], None]) -> None:
        self.path = path
        self.selector = selector
        self.handler = handler
        self.listener: socket.socket | None = None
        self.connections: set[ControlConnection] = set()

    def check(self) -> None:
        """Refuse a directory that is not ours alone, or a non-socket at the path, before
        anything else is opened (so the refusal is the only thing said)."""
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        problem = directory_problem(directory, os.geteuid()) or path_problem(self.path)
        if problem is not None:
            raise AddressError(problem)

    def open(self) -> None:
        self.check()
        try:
            remove_stale_unix_socket(self.path)
        except AddressError:
            raise AddressError(
                f"control socket {self.path} is in use by a running service; "
                "pass another --name or --control") from None
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            listener.bind(self.path)
            os.chmod(self.path, 0o600)  # already 0700 from the umask; no execute bit needed
        except OSError as error:
            listener.close()
            message = f"cannot create control socket {self.path}: {error.strerror}"
            raise AddressError(message) from None
        finally:
            os.umask(old_umask)
        listener.listen(64)
        listener.setblocking(False)
        self.listener = listener
        self.selector.register(listener, selectors.EVENT_READ, self._on_accept)

    def _on_accept(self, events: int) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("control socket: cannot accept (%s)", error.strerror)
                    return
                raise
            self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        pid, uid = peer_credentials(sock)
        if uid not in (os.geteuid(), 0):
            log.warning("control socket: refused pid %d uid %d (not our user or root)", pid, uid)
            sock.close()
            return
        sock.setblocking(False)
        connection = ControlConnection(sock, (pid, uid), self)
        self.connections.add(connection)
        self.selector.register(sock, selectors.EVENT_READ, connection.on_event)

    def dispatch(self, connection: ControlConnection, line: bytes) -> None:
        try:
            request = decode_request(line)
        except ProtocolError as error:
            connection.send(result(False, str(error)))
            return
        if request.command != "status":
            log.info("control: %s %s from pid %d uid %d", request.command,
                     request.arguments or "", connection.peer_pid, connection.peer_uid)
        self.handler(request, connection)

    def watch(self, connection: ControlConnection, events: int) -> None:
        if not connection.closed:
            self.selector.modify(connection.sock, events, connection.on_event)

    def forget(self, connection: ControlConnection) -> None:
        self.connections.discard(connection)
        try:
            self.selector.unregister(connection.sock)
        except (KeyError, ValueError):
            pass

    def close(self) -> None:
        for connection in list(self.connections):
            connection.close()
        if self.listener is not None:
            self.selector.unregister(self.listener)
            self.listener.close()
            self.listener = None
            try:
                os.unlink(self.path)
            except OSError:
                pass
