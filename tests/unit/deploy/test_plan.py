"""The deploy's pure decisions: batches, the failure threshold, the exit code."""

from __future__ import annotations

import pytest

from unbroken.deploy.plan import Verdict, batches, exit_code, share_of, too_many_failures

HOSTS = ["h1", "h2", "h3", "h4", "h5"]


def test_canary_then_half_of_the_fleet_per_batch() -> None:
    assert batches(HOSTS, [1, "50%"]) == [["h1"], ["h2", "h3"], ["h4", "h5"]]


def test_the_last_size_repeats_and_the_last_batch_takes_the_rest() -> None:
    assert batches(HOSTS, [2]) == [["h1", "h2"], ["h3", "h4"], ["h5"]]
    assert batches(HOSTS, ["100%"]) == [HOSTS]
    assert batches(HOSTS, [1, 10]) == [["h1"], ["h2", "h3", "h4", "h5"]]


def test_a_percentage_is_floored_but_never_below_one_host() -> None:
    assert share_of("50%", 3) == 1
    assert share_of("10%", 3) == 1
    assert share_of("34%", 3) == 1
    assert share_of("67%", 3) == 2
    assert batches(["a", "b", "c"], [1, "50%"]) == [["a"], ["b"], ["c"]]


def test_every_host_is_in_exactly_one_batch_in_order() -> None:
    for sizes in ([1], [3, "25%"], ["1%"], [1, 2, 3], ["100%", 1]):
        for count in range(0, 12):
            hosts = list(range(count))
            flat = [h for batch in batches(hosts, sizes) for h in batch]
            assert flat == hosts, (sizes, count)


def test_max_fail_must_be_exceeded_as_in_ansible() -> None:
    assert not too_many_failures(0, 4, 0)
    assert too_many_failures(1, 4, 0)
    assert not too_many_failures(1, 4, 1)
    assert too_many_failures(2, 4, 1)
    assert not too_many_failures(1, 4, "25%")
    assert too_many_failures(2, 4, "25%")
    assert too_many_failures(1, 3, "25%")  # 25% of 3 hosts allows none


@pytest.mark.parametrize(("verdict", "code"), [
    (Verdict(failed=False, switched=3), 0),
    (Verdict(failed=True, switched=0), 1),
    (Verdict(failed=True, switched=2), 3),
    (Verdict(failed=True, switched=2, rollback_failed=("h2",)), 4),
    (Verdict(failed=True, switched=0, interrupted=True), 130),
    (Verdict(failed=True, switched=1, rollback_failed=("h1",), interrupted=True), 4),
])
def test_exit_codes_of_the_contract(verdict: Verdict, code: int) -> None:
    assert exit_code(verdict) == code
