"""A booting worker's nice (worker/priority.py): lowered only when it can be restored."""

from __future__ import annotations

import resource

import pytest

from unbroken.worker.priority import MAX_NICE, boot_nice, can_restore

INFINITY = resource.RLIM_INFINITY


@pytest.mark.parametrize(("current", "rlimit", "capable", "expected"), [
    (0, 0, True, True),  # CAP_SYS_NICE: anything
    (0, 0, False, False),  # the default RLIMIT_NICE of 0 allows no lowering at all
    (0, 19, False, False),  # 20 - 19 = 1: down to nice 1, not 0
    (0, 20, False, True),  # LimitNICE=0 in a unit: down to nice 0
    (5, 15, False, True),  # a master at 5 may go back to 5
    (5, 14, False, False),
    (-5, 25, False, True),
    (0, INFINITY, False, True),
])
def test_can_restore_follows_setpriority_s_rule(current: int, rlimit: int, capable: bool,
                                                expected: bool) -> None:
    assert can_restore(current, rlimit, capable) is expected


def test_boots_requested_levels_lower_when_restorable() -> None:
    assert boot_nice(10, 0, 0, capable=True) == 10
    assert boot_nice(10, 3, 17, capable=False) == 13


def test_off_or_unrestorable_boots_at_the_current_nice() -> None:
    assert boot_nice(0, 0, 0, capable=True) is None
    assert boot_nice(10, 0, 0, capable=False) is None  # unprivileged, no LimitNICE


def test_capped_at_the_lowest_priority_and_no_change_is_none() -> None:
    assert boot_nice(10, 15, 0, capable=True) == MAX_NICE
    assert boot_nice(10, MAX_NICE, 0, capable=True) is None
