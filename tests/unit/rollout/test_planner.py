"""The rollout policy with plain data: no processes, no clock."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from unbroken.rollout.lifecycle import (
    TRANSITIONS,
    ExitCause,
    IllegalTransition,
    KillReason,
    WorkerEvent,
    WorkerState,
    classify_exit,
    transition,
)
from unbroken.rollout.planner import (
    BeginWatch,
    CompleteRollout,
    DrainWorker,
    KillWorker,
    ParkWorker,
    PoolView,
    ResumeWorker,
    SpawnWorker,
    WorkerView,
    plan,
)

B, R, D = WorkerState.BOOTING, WorkerState.READY, WorkerState.DRAINING
P = WorkerState.PARKED
NOW = 100.0


def worker(id: int, generation: int, state: WorkerState, **kw: object) -> WorkerView:
    fields: dict[str, object] = {"spawned_at": NOW - 1, "last_seen": NOW}
    fields.update(kw)
    return WorkerView(id, generation, state, **fields)  # type: ignore[arg-type]


def view(*workers: WorkerView, desired: int = 2, target: int = 1, rolling: bool = False,
         surge: int = 0, **kw: object) -> PoolView:
    base = PoolView(desired=desired, target=target, rolling=rolling, surge=surge,
                    workers=workers, now=NOW, spawn_allowed=True, boot_timeout=60,
                    timeout=30, graceful_timeout=30)
    return replace(base, **kw)  # type: ignore[arg-type]


def kinds(actions: list[object]) -> list[str]:
    return [type(a).__name__ for a in actions]


def test_initial_boot_spawns_the_whole_generation_then_completes() -> None:
    assert plan(view(rolling=True)) == [SpawnWorker(1), SpawnWorker(1)]
    assert plan(view(worker(1, 1, B), worker(2, 1, R), rolling=True)) == []
    assert plan(view(worker(1, 1, R), worker(2, 1, R), rolling=True)) == [CompleteRollout(1)]


def test_steady_state_does_nothing() -> None:
    assert plan(view(worker(1, 1, R), worker(2, 1, R))) == []


def test_crashed_worker_is_replaced() -> None:
    assert plan(view(worker(1, 1, R))) == [SpawnWorker(1)]


def test_no_spawn_while_backing_off() -> None:
    assert plan(view(worker(1, 1, R), spawn_allowed=False)) == []


def test_whole_generation_reload_keeps_old_until_all_new_ready() -> None:
    old = (worker(1, 1, R), worker(2, 1, R))
    assert plan(view(*old, target=2, rolling=True)) == [SpawnWorker(2), SpawnWorker(2)]
    half = view(*old, worker(3, 2, R), worker(4, 2, B), target=2, rolling=True)
    assert plan(half) == []  # one new ready: still nobody drained
    full = view(*old, worker(3, 2, R), worker(4, 2, R), target=2, rolling=True)
    assert plan(full) == [DrainWorker(1), DrainWorker(2), CompleteRollout(2)]


def test_surge_rolls_k_at_a_time_and_never_drops_capacity() -> None:
    old = (worker(1, 1, R), worker(2, 1, R), worker(3, 1, R))
    assert plan(view(*old, desired=3, target=2, rolling=True, surge=1)) == [SpawnWorker(2)]
    booting = view(*old, worker(4, 2, B), desired=3, target=2, rolling=True, surge=1)
    assert plan(booting) == []
    one_ready = view(*old, worker(4, 2, R), desired=3, target=2, rolling=True, surge=1)
    assert plan(one_ready) == [SpawnWorker(2), DrainWorker(1)]


def test_abort_is_a_target_switch_back_and_restores_old_generation() -> None:
    # surge roll aborted after one old worker was replaced: target points back at 1
    state = view(worker(2, 1, R), worker(3, 1, R), worker(4, 2, R), desired=3, target=1)
    assert plan(state) == [SpawnWorker(1)]  # new worker 4 keeps serving meanwhile
    restored = view(worker(2, 1, R), worker(3, 1, R), worker(5, 1, R), worker(4, 2, R),
                    desired=3, target=1)
    assert plan(restored) == [DrainWorker(4)]


NOT_NEEDED = "no longer needed"


def test_booting_workers_of_an_aborted_generation_are_killed_not_drained() -> None:
    state = view(worker(1, 1, R), worker(2, 1, R), worker(3, 2, B), target=1)
    assert plan(state) == [KillWorker(3, KillReason.NOT_NEEDED, NOT_NEEDED)]
    probing = view(worker(1, 1, R), worker(2, 1, R), worker(3, 2, WorkerState.PROBING),
                   target=1)
    assert plan(probing) == [KillWorker(3, KillReason.NOT_NEEDED, NOT_NEEDED)]


def test_workers_being_killed_count_for_nothing() -> None:
    dying = view(worker(1, 1, R), worker(2, 1, WorkerState.KILLING))
    assert plan(dying) == [SpawnWorker(1)]


def test_a_probing_worker_counts_as_booting_and_has_the_boot_timeout() -> None:
    probing = worker(2, 1, WorkerState.PROBING)
    assert plan(view(worker(1, 1, R), probing)) == []
    late = replace(probing, spawned_at=NOW - 61)
    assert kinds(plan(view(worker(1, 1, R), late))) == ["KillWorker", "SpawnWorker"]


def test_retiring_worker_is_replaced_before_it_is_drained() -> None:
    state = view(worker(1, 1, R, retiring=True), worker(2, 1, R))
    assert plan(state) == [SpawnWorker(1)]
    replaced = view(worker(1, 1, R, retiring=True), worker(2, 1, R), worker(3, 1, R))
    assert plan(replaced) == [DrainWorker(1)]


def test_scale_down_drains_booting_first_then_oldest() -> None:
    state = view(worker(1, 1, R, spawned_at=1), worker(2, 1, R, spawned_at=2),
                 worker(3, 1, B), desired=1)
    assert plan(state) == [KillWorker(3, KillReason.NOT_NEEDED, NOT_NEEDED), DrainWorker(1)]


def test_expiry_kills_and_replaces() -> None:
    late_boot = worker(1, 2, B, spawned_at=NOW - 61)
    silent = worker(2, 1, R, last_seen=NOW - 31)
    stuck = worker(3, 1, D, drain_started=NOW - 33)
    actions = plan(view(late_boot, silent, stuck, worker(4, 1, R), target=1))
    killed = [a for a in actions if isinstance(a, KillWorker)]
    assert [k.worker for k in killed] == [1, 2, 3]
    assert "boot-timeout" in killed[0].reason
    assert SpawnWorker(1) in actions


@pytest.mark.parametrize("desired", [1, 2, 3, 5])
@pytest.mark.parametrize("surge", [0, 1, 2])
def test_ready_capacity_never_drops_below_desired_during_a_roll(desired: int, surge: int) -> None:
    """Simulate a whole roll: new workers become ready one per step."""
    workers = {i: worker(i, 1, R) for i in range(1, desired + 1)}
    next_id = desired + 1
    for _ in range(10 * desired + 10):
        current = view(*workers.values(), desired=desired, target=2, rolling=True, surge=surge)
        actions = plan(current)
        for action in actions:
            if isinstance(action, SpawnWorker):
                workers[next_id] = worker(next_id, 2, B)
                next_id += 1
            elif isinstance(action, DrainWorker):
                workers[action.worker] = replace(workers[action.worker], state=D)
        ready = [w for w in workers.values() if w.state is R]
        assert len(ready) >= desired
        if any(isinstance(a, CompleteRollout) for a in actions):
            break
        booting = [w for w in workers.values() if w.state is B]
        if booting:  # one boot completes per step
            workers[booting[0].id] = replace(booting[0], state=R)
        workers = {i: w for i, w in workers.items() if w.state is not D}
    else:
        pytest.fail("roll never completed")
    assert sum(1 for w in workers.values() if w.generation == 2 and w.state is R) == desired


def test_whole_new_generation_parks_the_old_one_and_is_watched_before_it_drains() -> None:
    new = (worker(3, 2, R), worker(4, 2, R))
    whole = view(worker(1, 1, R), worker(2, 1, R), *new, target=2, rolling=True, stable_for=3)
    assert plan(whole) == [BeginWatch(2), ParkWorker(1), ParkWorker(2)]
    parked = (worker(1, 1, P), worker(2, 1, P))
    watching = replace(whole, workers=(*parked, *new), watch_started=NOW - 2.9)
    assert plan(watching) == []  # parked workers are neither drained nor resumed yet
    assert plan(replace(watching, watch_started=NOW - 3)) == [
        DrainWorker(1), DrainWorker(2), CompleteRollout(2)]


def test_a_death_in_the_window_resumes_the_parked_generation_and_retires_the_new() -> None:
    # The master aborted: the target points back at 1 and the rollout is over.
    aborted = view(worker(1, 1, P), worker(2, 1, P), worker(4, 2, R), target=1)
    assert plan(aborted) == [ResumeWorker(1), ResumeWorker(2), DrainWorker(4)]


def test_a_parked_worker_that_stops_heartbeating_is_killed() -> None:
    state = view(worker(1, 1, P, last_seen=NOW - 31), worker(2, 1, P), worker(3, 2, R),
                 worker(4, 2, R), target=2, rolling=True, stable_for=3, watch_started=NOW - 1)
    assert plan(state) == [KillWorker(1, KillReason.SILENT, "no heartbeat for --timeout 30s")]


def test_workers_that_cannot_park_keep_accepting_through_the_window() -> None:
    cmd = (worker(1, 1, R, parkable=False), worker(2, 1, R, parkable=False))
    whole = view(*cmd, worker(3, 2, R), worker(4, 2, R), target=2, rolling=True, stable_for=3)
    assert plan(whole) == [BeginWatch(2)]
    assert plan(replace(whole, watch_started=NOW - 1)) == []


def test_no_window_at_the_first_start_or_with_stable_for_zero() -> None:
    first = view(worker(1, 1, R), worker(2, 1, R), rolling=True, stable_for=3,
                 first_start=True)
    assert plan(first) == [CompleteRollout(1)]
    unwatched = view(worker(1, 1, R), worker(2, 1, R), worker(3, 2, R), worker(4, 2, R),
                     target=2, rolling=True, stable_for=0)
    assert plan(unwatched) == [DrainWorker(1), DrainWorker(2), CompleteRollout(2)]


def test_a_reload_with_no_old_worker_left_is_still_watched() -> None:
    """The old workers all crashed: nothing to park, but a death in the window must
    still abort the reload, so that whoever asked is told it failed."""
    alone = view(worker(3, 2, R), worker(4, 2, R), target=2, rolling=True, stable_for=3)
    assert plan(alone) == [BeginWatch(2)]
    assert plan(replace(alone, watch_started=NOW - 1)) == []
    assert plan(replace(alone, watch_started=NOW - 3)) == [CompleteRollout(2)]


def test_surge_drains_as_it_rolls_and_parks_only_the_last_old_workers() -> None:
    state = view(worker(3, 1, R), worker(4, 2, R), worker(5, 2, R), worker(6, 2, R),
                 desired=3, target=2, rolling=True, surge=1, stable_for=3)
    assert plan(state) == [BeginWatch(2), ParkWorker(3)]


@pytest.mark.parametrize("seed", range(40))
def test_accepting_capacity_never_drops_through_windows_aborts_crashes_and_scaling(
        seed: int) -> None:
    """A random walk of the master's loop in 0.5 s steps: reloads with a 2 s window, new
    workers dying in it (the master aborts), old ones crashing, scale changes; then
    quiet. No plan ever takes the accepting (READY) workers below `desired` (nor below
    what there was, if fewer); outside a reload nothing stays parked; and once quiet
    the pool settles on `desired` accepting workers of one generation."""
    rng = random.Random(seed)
    desired, serving, target, now = 2, 1, 1, 0.0
    watch: float | None = None
    workers = {i: worker(i, 1, R, spawned_at=0.0) for i in (1, 2)}
    next_id = 3
    for step in range(300):
        now += 0.5
        event = rng.random() if step < 240 else 1.0  # the last 30 s are quiet
        accepting = [w for w in workers.values() if w.state is R]
        if event < 0.05 and target == serving:
            target, watch = max(w.generation for w in workers.values()) + 1, None
        elif event < 0.15 and accepting:
            victim = rng.choice(accepting)
            del workers[victim.id]
            if target != serving and victim.generation == target:
                target, watch = serving, None  # a death while rolling out aborts it
        elif event < 0.18:
            desired = rng.choice([1, 2, 3])
        before = sum(1 for w in workers.values() if w.state is R)
        actions = plan(PoolView(
            desired=desired, target=target, rolling=target != serving, surge=0,
            workers=tuple(replace(w, last_seen=now) for w in workers.values()), now=now,
            spawn_allowed=True, boot_timeout=60, timeout=30, graceful_timeout=30,
            stable_for=2.0, watch_started=watch))
        for action in actions:
            if isinstance(action, SpawnWorker):
                workers[next_id] = worker(next_id, action.generation, B, spawned_at=now)
                next_id += 1
            elif isinstance(action, (DrainWorker, ParkWorker, ResumeWorker)):
                state = {DrainWorker: D, ParkWorker: P, ResumeWorker: R}[type(action)]
                workers[action.worker] = replace(workers[action.worker], state=state)
            elif isinstance(action, KillWorker):
                del workers[action.worker]  # booting ones no longer needed
            elif isinstance(action, BeginWatch):
                watch = now
            elif isinstance(action, CompleteRollout):
                serving, watch = action.generation, None
        after = sum(1 for w in workers.values() if w.state is R)
        assert after >= min(desired, before), (seed, step, actions)
        if target == serving:  # rolled back: a re-route, in the very plan of the abort
            assert all(w.state is not P for w in workers.values()), (seed, step, actions)
        booting = [w for w in workers.values() if w.state is B]
        if booting:  # one boot completes per step; drained workers leave
            workers[booting[0].id] = replace(booting[0], state=R)
        workers = {i: w for i, w in workers.items() if w.state is not D}
    assert serving == target
    assert sorted((w.generation, w.state) for w in workers.values()) == [(serving, R)] * desired


def test_lifecycle_rejects_illegal_transitions() -> None:
    assert transition(B, WorkerEvent.SAID_READY) is R
    assert transition(B, WorkerEvent.PROBE_BEGAN) is WorkerState.PROBING
    with pytest.raises(IllegalTransition):
        transition(D, WorkerEvent.RESUMED)
    with pytest.raises(IllegalTransition):
        transition(B, WorkerEvent.DRAINED)  # a booting worker holds nothing: it is killed
    with pytest.raises(IllegalTransition):
        transition(WorkerState.KILLING, WorkerEvent.KILLED)


def test_every_state_but_killing_can_be_killed_and_killing_is_the_end() -> None:
    for state in WorkerState:
        if state is WorkerState.KILLING:
            assert TRANSITIONS[state] == {}
        else:
            assert transition(state, WorkerEvent.KILLED) is WorkerState.KILLING


@pytest.mark.parametrize(("state", "stopping", "killed", "killed_in", "cause"), [
    (D, False, None, None, ExitCause.DRAINED),
    (R, True, None, None, ExitCause.STOPPED),
    (WorkerState.KILLING, False, KillReason.STOPPING, B, ExitCause.STOPPED),
    (WorkerState.KILLING, False, KillReason.NOT_NEEDED, B, ExitCause.NOT_NEEDED),
    (B, False, None, None, ExitCause.BOOT_FAILED),
    (WorkerState.KILLING, False, KillReason.BOOT_TIMEOUT, B, ExitCause.BOOT_FAILED),
    (WorkerState.KILLING, False, KillReason.PROBE_FAILED, WorkerState.PROBING,
     ExitCause.BOOT_FAILED),
    (WorkerState.KILLING, False, KillReason.SILENT, R, ExitCause.SILENT),
    (WorkerState.KILLING, False, KillReason.SILENT, P, ExitCause.SILENT),
    (WorkerState.KILLING, False, KillReason.DRAIN_TIMEOUT, D, ExitCause.DRAINED),
    (R, False, None, None, ExitCause.CRASHED),
    (P, False, None, None, ExitCause.CRASHED),
])
def test_an_exit_is_read_by_the_state_the_worker_was_in(
        state: WorkerState, stopping: bool, killed: KillReason | None,
        killed_in: WorkerState | None, cause: ExitCause) -> None:
    assert classify_exit(state, stopping, killed, killed_in) is cause


def test_the_states_docs_reloads_md_shows_are_the_tables() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "reloads.md").read_text()
    section = doc.split("## A worker's states")[1].split("\n## ")[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| `")]
    documented = {row[1].strip().strip("`"): row[3] for row in rows}
    assert set(documented) == {state.value for state in WorkerState}
    for state, moves in TRANSITIONS.items():  # every move the table allows is named
        for target in moves.values():
            name = "rolled back" if (state, target) == (P, R) else target.value
            assert target.value in documented[state.value] or name in documented[state.value]
