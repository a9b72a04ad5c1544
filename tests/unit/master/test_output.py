"""A worker's stderr through the master (master/output.py): whole lines passed on in
order, the last KEEP_LINES kept, EOF closes the tap; real pipes, no processes."""

from __future__ import annotations

import os
import selectors

from unbroken.master.output import KEEP_LINES, OutputTap


def _tap() -> tuple[OutputTap, int, selectors.BaseSelector]:
    selector = selectors.DefaultSelector()
    into, out = os.pipe()
    os.set_blocking(into, False)
    return OutputTap(selector, forward_to=out), into, selector


def _forwarded(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""


def test_whole_lines_are_passed_on_and_a_partial_one_waits_for_its_end() -> None:
    tap, forwarded, _selector = _tap()
    os.write(tap.write_fd, b"first line\nsecond ha")
    tap.read()
    assert _forwarded(forwarded) == b"first line\n"
    os.write(tap.write_fd, b"lf\n")
    tap.read()
    assert _forwarded(forwarded) == b"second half\n"
    assert tap.last_lines() == "first line\nsecond half\n"


def test_only_the_last_lines_are_kept_and_eof_flushes_and_closes() -> None:
    tap, forwarded, selector = _tap()
    os.write(tap.write_fd, b"".join(b"line %d\n" % i for i in range(KEEP_LINES + 5)))
    os.write(tap.write_fd, b"Traceback: no newline at the end")
    tap.child_started()  # the only writer left is gone: EOF after the data
    tap.read()
    kept = tap.last_lines().splitlines()
    assert len(kept) == KEEP_LINES and kept[-1] == "Traceback: no newline at the end"
    assert kept[0] == "line 6"
    assert _forwarded(forwarded).endswith(b"line 24\nTraceback: no newline at the end")
    assert tap.read_fd == -1 and not selector.get_map()
