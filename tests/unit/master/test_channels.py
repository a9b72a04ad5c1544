"""Descriptors on the worker channel (SCM_RIGHTS): a worker's HandOver reaches the master
with the connections it counts, and the master's Adopt reaches a worker with them."""

from __future__ import annotations

import os
import socket
from typing import NoReturn

from unbroken.messages import Adopt, HandOver, MasterEnd, WorkerEnd


def _never() -> NoReturn:
    raise AssertionError("the master's end closed")


def test_descriptors_travel_with_the_line_that_counts_them_both_ways() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    master = MasterEnd(ours, pid=0)
    worker = WorkerEnd(os.dup(theirs.fileno()), lost=_never)
    theirs.close()
    read_end, write_end = os.pipe()
    try:
        worker.send(HandOver(1), [write_end])
        assert master.read() == [HandOver(1)]
        (received,) = master.take_fds(1)
        os.write(received, b"through the master")  # a working copy of the descriptor
        os.close(received)
        assert os.read(read_end, 100) == b"through the master"

        os.write(write_end, b"back")
        socket.send_fds(ours, [b'{"type":"Adopt","count":1}\n'], [read_end])
        received_by_worker = worker.receive()
        assert received_by_worker is not None
        messages, fds = received_by_worker
        assert messages == [Adopt(1)] and len(fds) == 1
        assert os.read(fds[0], 100) == b"back"
        os.close(fds[0])
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        master.close()
        worker.sock.close()
