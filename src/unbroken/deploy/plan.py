"""The pure decisions of a deploy: batches, the failure threshold, the final verdict.

Plain data in, plain data out, so every rule has a unit test that runs in microseconds
(tests/unit/deploy/test_plan.py), the way `rollout/planner.py` keeps the master's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from unbroken.deploy.errors import (
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_NOT_SWITCHED,
    EXIT_OK,
    EXIT_ROLLED_BACK,
)

T = TypeVar("T")


def share_of(share: int | str, total: int) -> int:
    """A number of hosts, or a percentage of `total` rounded down and never below 1
    (Kamal and Ansible both floor a percentage to at least one host)."""
    if isinstance(share, str):
        return max(1, math.floor(total * int(share.rstrip("%")) / 100))
    return share


def batches(hosts: Sequence[T], sizes: Sequence[int | str]) -> list[list[T]]:
    """Split hosts in order into batches; the last size repeats, as Ansible's `serial`.

    `[1, "50%"]` over 5 hosts: [h1], [h2, h3], [h4, h5].
    """
    result: list[list[T]] = []
    index, position = 0, 0
    while position < len(hosts):
        size = max(1, share_of(sizes[min(index, len(sizes) - 1)], len(hosts)))
        result.append(list(hosts[position:position + size]))
        position += size
        index += 1
    return result


def too_many_failures(failed: int, total: int, max_fail: int | str) -> bool:
    """More hosts failed than allowed. Like Ansible, the allowance must be *exceeded*:
    `max_fail = 1` lets one host fail, `"25%"` of 4 hosts lets one fail."""
    if isinstance(max_fail, str):
        allowed = math.floor(total * int(max_fail.rstrip("%")) / 100)
    else:
        allowed = max_fail
    return failed > allowed


@dataclass(frozen=True)
class Verdict:
    """How a deploy ended, which decides its exit code and its last line."""

    failed: bool  # something went wrong at all
    switched: int  # hosts that began serving the new release at some point
    rollback_failed: tuple[str, ...] = ()  # hosts left on a release they should not be on
    interrupted: bool = False


def exit_code(verdict: Verdict) -> int:
    if verdict.rollback_failed:
        return EXIT_DIVERGED
    if verdict.interrupted:
        return EXIT_INTERRUPTED
    if not verdict.failed:
        return EXIT_OK
    return EXIT_ROLLED_BACK if verdict.switched else EXIT_NOT_SWITCHED
