"""A drill on the user's own app: its labels, and which version answered when the app
does not say (the master's request counters, by worker generation)."""

from __future__ import annotations

from unbroken.drill.analysis import (
    ReloadRecord,
    Snapshot,
    analyse,
    served_by_generation,
    text_report,
)
from unbroken.drill.run import DrillOptions, describe_target, plan_steps
from unbroken.loadgen import Sample


def _hello(start: float) -> Sample:
    return Sample(start, 0.002, 200, None, b"hello\n")


SNAPSHOTS = [
    Snapshot(100.0, {11: (1, 40), 12: (1, 2)}),    # before the load: not counted
    Snapshot(100.6, {11: (1, 43), 12: (1, 4)}),    # 5 by generation 1 in second 0
    Snapshot(101.3, {11: (1, 44), 12: (1, 4), 21: (2, 3)}),  # a new worker: all its 3
    Snapshot(101.8, {21: (2, 6), 22: (2, 1)}),     # generation 1 gone
]


def test_requests_by_generation_from_the_workers_counters() -> None:
    totals, per_second = served_by_generation(SNAPSHOTS, origin=100.0)
    assert totals == {"generation 1": 6, "generation 2": 7}
    assert per_second == {0: {"generation 1": 5},
                          1: {"generation 1": 1, "generation 2": 7}}


def test_an_app_that_does_not_say_is_reported_by_generation() -> None:
    samples = [_hello(100.1 + i / 10) for i in range(15)]
    reload = ReloadRecord("#1", True, 100.9, 101.2, True, "generation 2 serving")
    result = analyse(samples, [reload], origin=100.0, snapshots=SNAPSHOTS)
    assert result.versions_from == "master"
    assert [s.versions for s in result.timeline] == [
        {"generation 1": 5}, {"generation 1": 1, "generation 2": 7}]
    assert text_report(result)[-2] == (
        "answered by version (the app does not say; the master's request counters by worker "
        "generation): generation 1 6, generation 2 7; 2 not counted yet when their worker "
        "exited")


def test_an_app_that_says_its_version_keeps_it() -> None:
    sample = Sample(100.1, 0.002, 200, None, b'{"release": "v3"}')
    result = analyse([sample], [], origin=100.0, snapshots=SNAPSHOTS)
    assert (result.versions, result.versions_from) == ({"v3": 1}, "app")
    assert text_report(result)[-2] == "answered by version: v3 1"


def test_the_user_s_app_is_never_called_the_bundled_example() -> None:
    assert describe_target(DrillOptions()) == "the bundled example app"
    assert describe_target(DrillOptions(app="shop.wsgi:app")) == "shop.wsgi:app"
    attached = DrillOptions(control="/run/shop.sock", target=("127.0.0.1", 80))
    assert describe_target(attached) == "the service at /run/shop.sock"
    assert [s.label for s in plan_steps(2, broken=False, bundled=True)] == [
        "v2 (1 s import)", "v3 (0 s import)"]
    assert [s.label for s in plan_steps(2, broken=False, bundled=False)] == ["#1", "#2"]
