"""The tests' one way to wait for something another thread or process makes true.

A readiness sleep guesses how long "ready" takes: too short on a loaded machine (a
flaky test), too long everywhere else (a slow one). `wait_until` polls the condition
itself instead, within a bound, and says what it was waiting for when it gives up.
Sleeps that give load time to accumulate, or bytes time to trickle in, are another
matter: they are the test's input, not a wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.01,
               message: str = "condition") -> T:
    """Call `predicate` every `interval` seconds until it returns something truthy, and
    return that; after `timeout` seconds, raise AssertionError with `message` and the
    last value. The predicate is always called once more at the deadline, so a wait
    that ends in a failure has looked at the condition as late as it was allowed to."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{message}: not met within {timeout:g} s "
                                 f"(last value: {value!r})")
        time.sleep(min(interval, left))
