"""The accept loop on a real listening socket: one connection per wake-up, and a busy
worker steps back BUSY_ACCEPT_DELAY so an idle sibling can take the connection."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from unbroken.engines.core.acceptor import BUSY_ACCEPT_DELAY, Acceptor

pytestmark = pytest.mark.timeout(10)


def accept_times(busy: bool, clients: int) -> list[float]:
    """Seconds from the clients' connect to each accept, on a fresh loop."""
    loop = asyncio.new_event_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[float] = []
    sockets: list[socket.socket] = []

    def on_accepted(connection: socket.socket) -> None:
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
