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


class Inline:
    """An engine's InlineCalls: the flags engines/wsgi/engine.py keeps for --threads 1."""

    def __init__(self, in_app: bool = False) -> None:
        self.in_app = in_app
        self.held = False

    def leave_app(self) -> None:
        """What WSGIRequest.run_inline does when the app returns."""
        self.in_app = False
        while self.held:
            time.sleep(0.005)


def test_with_inline_calls_a_loop_stuck_in_one_leaves_the_deadline_to_the_watchdog() -> None:
    keeper, inline, fired = DeadlineKeeper(), Inline(in_app=True), threading.Event()
    keeper.watch(time.monotonic() + 0.05, fired.set, inline)
    assert fired.wait(2)
    assert not keeper.claim("loop") and inline.held  # the loop, back, will wait


def test_a_loop_back_from_the_application_waits_while_the_watchdog_hands_over() -> None:
    keeper, inline, fired = DeadlineKeeper(), Inline(in_app=True), threading.Event()
    returned = threading.Event()
    keeper.watch(time.monotonic() - STUCK_GRACE, fired.set, inline)
    assert fired.wait(2)

    def loop() -> None:
        inline.leave_app()  # no socket of ours may be read any more
        returned.set()

    threading.Thread(target=loop, daemon=True).start()
    assert not returned.wait(0.3)  # held until the watchdog's exit


def test_a_late_loop_outside_the_application_is_not_taken_for_stuck() -> None:
    """Past the grace but in our own code (back from the app an instant before): the
    watchdog must not hand over connections the loop may be reading; the loop claims."""
    keeper, inline, fired = DeadlineKeeper(), Inline(in_app=False), threading.Event()
    keeper.watch(time.monotonic() - STUCK_GRACE, fired.set, inline)
    assert not fired.wait(0.3)
    assert not inline.held
    assert keeper.claim("loop")
    assert not fired.wait(0.2)


def test_stuck_again_in_a_later_inline_call_the_watchdog_takes_it() -> None:
    keeper, inline, fired = DeadlineKeeper(), Inline(in_app=False), threading.Event()
    keeper.watch(time.monotonic() - STUCK_GRACE, fired.set, inline)
    assert not fired.wait(0.2)
    inline.in_app = True
    assert fired.wait(2)
