"""Who ends a drain at its deadline (worker/main.py DeadlineKeeper): the first to claim."""

from __future__ import annotations

import threading
import time

from unbroken.worker.main import STUCK_GRACE, DeadlineKeeper


def test_the_loop_claims_first_and_the_watchdog_stands_aside() -> None:
    keeper = DeadlineKeeper()
    fired = threading.Event()
    assert keeper.claim("loop")  # the loop reached the deadline itself
    keeper.watch(time.monotonic() - STUCK_GRACE, fired.set)  # long past: wakes at once
    assert not fired.wait(0.3)
    assert keeper.claim("loop")  # still the loop's


def test_a_stuck_loop_leaves_the_deadline_to_the_watchdog() -> None:
    keeper = DeadlineKeeper()
    fired = threading.Event()
    keeper.watch(time.monotonic() + 0.05, fired.set)
    assert fired.wait(2)
    assert not keeper.claim("loop")  # the loop, back late, does nothing


def test_a_drain_that_finished_in_time_stops_the_watchdog() -> None:
    keeper = DeadlineKeeper()
    fired = threading.Event()
    keeper.watch(time.monotonic() + 0.05, fired.set)
    keeper.claim("loop")
    keeper.finished()
    assert not fired.wait(STUCK_GRACE + 0.3)
