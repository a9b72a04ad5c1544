"""The accept loop on a real listening socket: one connection per wake-up, a busy
worker steps back BUSY_ACCEPT_DELAY (or until it has room) so an idle sibling can take
the connection, and each connection comes with the addresses the socket itself would
give."""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from unbroken.engines.core import acceptor as acceptor_module
from unbroken.engines.core.acceptor import BUSY_ACCEPT_DELAY, Acceptor, fixed_local_address

pytestmark = pytest.mark.timeout(10)


def accept_times(busy: bool, clients: int) -> list[float]:
    """Seconds from the clients' connect to each accept, on a fresh loop."""
    loop = asyncio.new_event_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[float] = []
    sockets: list[socket.socket] = []

    def on_accepted(connection: socket.socket, _peer: Any, _local: Any) -> None:
        accepted.append(time.monotonic())
        sockets.append(connection)

    acceptor = Acceptor(loop, listener, on_accepted, lambda: True, lambda: busy)
    acceptor.resume()
    connected = time.monotonic()
    peers = [socket.create_connection(listener.getsockname()) for _ in range(clients)]
    try:
        deadline = time.monotonic() + 2
        while len(accepted) < clients and time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0.001))
        return [moment - connected for moment in accepted]
    finally:
        acceptor.stop()
        for each in peers + sockets:
            each.close()
        listener.close()
        loop.close()


def test_an_idle_worker_accepts_every_pending_connection_one_per_wakeup() -> None:
    assert len(accept_times(busy=False, clients=3)) == 3


def test_a_busy_worker_still_accepts_but_only_after_the_delay() -> None:
    times = accept_times(busy=True, clients=2)
    assert len(times) == 2  # deferred, never starved
    # A timer cannot fire early (1 ms of slack for the loop's clock resolution).
    assert min(times) >= BUSY_ACCEPT_DELAY - 0.001


@dataclass
class Pending:
    """One client waiting at a fresh acceptor on a fresh loop: what the tests below drive."""

    loop: asyncio.AbstractEventLoop
    acceptor: Acceptor
    accepted: list[socket.socket]
    busy: list[bool]

    def run_until(self, done: Callable[[], object], timeout: float = 2) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            self.loop.run_until_complete(asyncio.sleep(0.001))

    def run_for(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))


@contextmanager
def one_pending(busy: bool, listener: socket.socket | None = None,
                waits: list[asyncio.TimerHandle] | None = None) -> Iterator[Pending]:
    """`waits` collects the busy waits the acceptor schedules."""
    loop = asyncio.new_event_loop()
    if waits is not None:
        call_later = loop.call_later

        def noting(delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
            handle = call_later(delay, callback, *args)
            if delay == BUSY_ACCEPT_DELAY:
                waits.append(handle)
            return handle

        loop.call_later = noting  # type: ignore[method-assign]
    listener = listener or socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    state = [busy]
    acceptor = Acceptor(loop, listener, lambda connection, *_: accepted.append(connection),
                        lambda: True, lambda: state[0])
    acceptor.resume()
    peer = socket.create_connection(listener.getsockname())
    try:
        yield Pending(loop, acceptor, accepted, state)
    finally:
        acceptor.stop()
        for each in [peer, *accepted]:
            each.close()
        listener.close()
        loop.close()


def test_room_ends_the_busy_wait_at_once() -> None:
    """A busy worker waiting out the delay takes the connection as soon as it is told
    it has room, not when the delay ends (waiting it out for every connection capped a
    busy worker at one accept per BUSY_ACCEPT_DELAY)."""
    waits: list[asyncio.TimerHandle] = []
    with one_pending(busy=True, waits=waits) as pending:
        pending.run_until(lambda: waits)
        assert len(waits) == 1 and not pending.accepted
        pending.busy[0] = False
        pending.acceptor.room()
        pending.run_until(lambda: pending.accepted)
        assert len(pending.accepted) == 1
        assert waits[0].cancelled()  # taken on room, not when the delay ran out


def test_a_paused_acceptor_does_not_come_back_when_its_busy_wait_ends() -> None:
    """Parking pauses the acceptor; a busy wait under way must not resume it."""
    with one_pending(busy=True) as pending:
        pending.run_for(0.001)  # the busy wait begins
        pending.acceptor.pause()
        pending.run_for(BUSY_ACCEPT_DELAY * 4)
        assert not pending.accepted
        pending.acceptor.resume()
        pending.run_until(lambda: pending.accepted)
        assert len(pending.accepted) == 1


class OutOfDescriptorsOnce(socket.socket):
    """A listener whose first accept() fails as a process out of descriptors would."""

    failed = False

    def _accept(self) -> Any:
        if not OutOfDescriptorsOnce.failed:
            OutOfDescriptorsOnce.failed = True
            raise OSError(errno.EMFILE, "Too many open files")
        return super()._accept()  # type: ignore[misc]


def test_a_paused_acceptor_does_not_come_back_when_its_back_off_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Out of descriptors, the acceptor backs off; parked meanwhile, the back-off's end
    must not resume it; resumed, it accepts once the back-off is over."""
    monkeypatch.setattr(acceptor_module, "RESOURCE_BACKOFF_TIMEOUT", 0.02)
    with one_pending(busy=False, listener=OutOfDescriptorsOnce()) as pending:
        pending.run_until(lambda: OutOfDescriptorsOnce.failed)
        assert OutOfDescriptorsOnce.failed and not pending.accepted
        pending.acceptor.pause()
        pending.run_for(0.1)  # the back-off ends meanwhile
        assert not pending.accepted
        pending.acceptor.resume()
        pending.run_until(lambda: pending.accepted)
        assert len(pending.accepted) == 1


def accepted_addresses(family: socket.AddressFamily, bind: Any) -> tuple[Any, Any, Any, Any]:
    """What the acceptor hands over for one connection (peer, local), and what the
    accepted socket itself answers (getpeername, getsockname)."""
    loop = asyncio.new_event_loop()
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind(bind)
    listener.listen(4)
    handed: list[tuple[socket.socket, Any, Any]] = []
    acceptor = Acceptor(loop, listener, lambda sock, peer, local: handed.append(
        (sock, peer, local)), lambda: True)
    acceptor.resume()
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    target = listener.getsockname() if family == socket.AF_UNIX else (
        host, listener.getsockname()[1])
    client = socket.socket(family, socket.SOCK_STREAM)
    client.connect(target)
    try:
        deadline = time.monotonic() + 2
        while not handed and time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0.001))
        sock, peer, local = handed[0]
        try:
            return peer, local, sock.getpeername(), sock.getsockname()
        finally:
            sock.close()
    finally:
        acceptor.stop()
        client.close()
        listener.close()
        loop.close()


@pytest.mark.parametrize("family, bind", [
    (socket.AF_INET, ("127.0.0.1", 0)), (socket.AF_INET6, ("::1", 0)),
    (socket.AF_UNIX, "\0unbroken-test-acceptor-addresses")])
def test_a_concrete_bind_hands_over_the_addresses_the_socket_gives(
        family: socket.AddressFamily, bind: Any) -> None:
    peer, local, real_peer, real_local = accepted_addresses(family, bind)
    assert peer == real_peer
    assert local == real_local


@pytest.mark.parametrize("family, bind", [
    (socket.AF_INET, ("0.0.0.0", 0)), (socket.AF_INET6, ("::", 0))])
def test_a_wildcard_bind_leaves_the_local_address_to_be_asked(
        family: socket.AddressFamily, bind: Any) -> None:
    peer, local, real_peer, _real_local = accepted_addresses(family, bind)
    assert peer == real_peer
    assert local is None  # which local address the client dialled is the socket's to say


def test_fixed_local_address_is_the_listener_s_own_unless_a_wildcard() -> None:
    assert fixed_local_address(("127.0.0.1", 8000)) == ("127.0.0.1", 8000)
    assert fixed_local_address(("::1", 8000, 0, 0)) == ("::1", 8000, 0, 0)
    assert fixed_local_address("/run/app.sock") == "/run/app.sock"
    assert fixed_local_address(("0.0.0.0", 8000)) is None
    assert fixed_local_address(("::", 8000, 0, 0)) is None
