"""Accepting connections on inherited listening sockets, with back-pressure.

Why our own accept loop instead of `loop.create_server(sock=...)`:
- Stopping (drain, or max_connections reached) must not close the listening
  socket: the master and the next generation of workers share it. Here stopping
  is only `remove_reader`; the fd stays open and the kernel keeps queueing.
- Running out of descriptors (EMFILE/ENFILE) or kernel memory (ENOBUFS/ENOMEM)
  is back-pressure, not a crash: log, stop watching for ~0.5 s, retry. The
  pending connection stays in the backlog for us or a sibling worker.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

error_log = logging.getLogger("unbroken.error")

# errno values that mean "the process or the kernel is out of a resource".
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
RESOURCE_BACKOFF_TIMEOUT = 0.5
# Connections taken per readiness event. One: every idle sibling is woken by the
# same event, so taking one and going back to the loop lets a burst of new
# connections spread over the workers instead of all landing on the first awake
# (which matters for keep-alive connections, e.g. from nginx, that live long).
ACCEPTS_PER_WAKEUP = 1
# A worker with requests waiting for its threads waits this long before taking a
# connection, so an idle sibling, woken by the same event, takes it first; if every
# worker is busy, the connection is still taken (by the first to come back), only a
# little later. Without it, long keep-alive connections pile onto whichever worker
# woke first and sit behind its busy threads while a sibling's threads idle.
# The wait ends early when the worker has room again (`room`, a request ended): a lone
# worker, or one whose siblings are as busy, then takes connections as fast as its
# threads free up, and the connection still goes to an idle sibling if there is one.
# Waiting out the whole delay for each connection capped a busy worker at one accept
# per delay: connection per request (nginx's default upstream) from 2 workers with
# --threads 4 gave 4,500-4,900 req/s, against 11,300-11,900 with one thread; now
# 11,900-12,400, and kept-alive connections spread over the workers as evenly.
BUSY_ACCEPT_DELAY = 0.005
# Addresses that accept on every local address: a connection's own local address
# is then whichever the client dialled, so it must be asked of the connection.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


def fixed_local_address(sockname: Any) -> Any | None:
    """The local address every connection accepted on a listener bound to `sockname`
    has (the listener's own), or None when each must be asked (a wildcard bind).

    Why: asking costs a getsockname() per connection, one of the 14 syscalls a
    connection-per-request client pays for; a concrete bind, the usual case behind
    nginx, answers it once. A Unix socket's connections carry its path."""
    if isinstance(sockname, tuple) and sockname and sockname[0] in WILDCARD_HOSTS:
        return None
    return sockname


class Acceptor:
    """Watches one listening socket and hands each accepted socket to `on_accepted`,
    with the peer's address (as accept() gave it) and the local one (None: ask the
    socket; see `fixed_local_address`)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: socket.socket,
        on_accepted: Callable[[socket.socket, Any, Any | None], None],
        may_accept: Callable[[], bool],
        busy: Callable[[], bool] = lambda: False,
        refused: Callable[[], None] = lambda: None,
    ) -> None:
        self._loop = loop
        self._listener = listener
        self._on_accepted = on_accepted
        self._may_accept = may_accept
        self._busy = busy
        # Told when a client waits and `may_accept` says no: the server may make room.
        self._refused = refused
        self._deferred = False  # this wake-up already waited BUSY_ACCEPT_DELAY
        self._busy_wait: asyncio.TimerHandle | None = None
        self._watching = False
        self._held = False  # paused by the server: only `resume` watches again
        self._stopped = False
        self._backoff: asyncio.TimerHandle | None = None
        # Non-blocking is a flag on the shared open file description; the master
        # never calls accept(), and siblings want it non-blocking too.
        listener.setblocking(False)
        # socket.accept() converts family and type to enums for every connection;
        # _accept() and these plain ints make the same socket object for less.
        self._family = int(listener.family)
        self._type = int(listener.type)
        self._local = fixed_local_address(listener.getsockname())

    def resume(self) -> None:
        """Watch the socket again, or once a wait under way (back-off, busy) ends;
        never once stopped for good."""
        self._held = False
        self._watch()

    def pause(self) -> None:
        """Stop watching until `resume`: no wait under way ends it by itself."""
        self._held = True
        self._unwatch()

    def stop(self) -> None:
        """Stop for good (drain). The listening socket itself is left open."""
        self._stopped = True
        self.pause()
        if self._backoff is not None:
            self._backoff.cancel()
            self._backoff = None
        if self._busy_wait is not None:
            self._busy_wait.cancel()
            self._busy_wait = None

    def _watch(self) -> None:
        if (self._watching or self._stopped or self._held or self._backoff is not None
                or self._busy_wait is not None):
            return
        self._loop.add_reader(self._listener.fileno(), self._accept_ready)
        self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._listener.fileno())
            self._watching = False

    def room(self) -> None:
        """The worker is no longer busy: a connection waiting out the busy delay is
        taken now, by this worker or whichever sibling is first."""
        if self._busy_wait is not None:
            self._busy_wait.cancel()
            self._busy_wait = None
            self._watch()

    def _accept_ready(self) -> None:
        if self._busy() and not self._deferred:
            self._unwatch()
            self._busy_wait = self._loop.call_later(BUSY_ACCEPT_DELAY, self._end_delay)
            return
        self._deferred = False
        for _ in range(ACCEPTS_PER_WAKEUP):
            if not self._may_accept():
                self.pause()
                self._refused()
                return
            try:
                fd, peer = self._listener._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return  # a sibling worker won the race
            except OSError as exc:
                self._accept_failed(exc)
                return
            # Not made non-blocking here: connect_accepted_socket does that (asyncio
            # and uvloop alike), and a second ioctl per connection buys nothing.
            connection = socket.socket(self._family, self._type, 0, fd)
            self._on_accepted(connection, peer, self._local)

    def _accept_failed(self, exc: OSError) -> None:
        if exc.errno in RESOURCE_ERRNOS:
            error_log.warning(
                "accept() failed (%s); pausing %.1fs", exc.strerror, RESOURCE_BACKOFF_TIMEOUT
            )
            self._unwatch()
            self._backoff = self._loop.call_later(RESOURCE_BACKOFF_TIMEOUT, self._end_backoff)
        elif exc.errno not in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
            error_log.error("accept() failed: %s", exc)
            # Unknown errors are retried too; a tight loop is avoided by the backoff.
            self._unwatch()
            self._backoff = self._loop.call_later(RESOURCE_BACKOFF_TIMEOUT, self._end_backoff)

    def _end_backoff(self) -> None:
        self._backoff = None
        self._watch()

    def _end_delay(self) -> None:
        self._busy_wait = None
        self._deferred = True  # the next wake-up accepts, busy or not
        self._watch()
