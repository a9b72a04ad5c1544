"""The service policy with plain data: no processes, no sockets, no clock."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import replace

import pytest

from unbroken.master.events import (
    Action,
    Answer,
    ConfigReread,
    CrashLoopChanged,
    Event,
    GenerationRolledOut,
    GenerationWhole,
    KillAll,
    Log,
    MasterStarted,
    Progress,
    RecordReload,
    ReloadRequested,
    RequestsCut,
    RereadConfig,
    RestoreListeners,
    ScaleRequested,
    SpawnFailed,
    StartGeneration,
    StopRequested,
    StopWorkers,
    Ticked,
    Timings,
    Trigger,
    WorkerExited,
    WorkerReady,
)
from unbroken.master.policy import (
    MAX_BOOT_RETRIES,
    STOP_MOVES,
    Phase,
    Service,
    StopMove,
    decide,
    spawn_allowed,
)
from unbroken.rollout.crashloop import GIVE_UP_AFTER, STABLE_AFTER
from unbroken.rollout.lifecycle import (
    BOOTING_STATES,
    ExitCause,
    KillReason,
    WorkerState,
    classify_exit,
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

TIMINGS = Timings(graceful_timeout=30.0, drain_delay=0.0, stable_for=3.0)
CONTROL = Trigger.CONTROL


def run(service: Service, *events: Event, now: float = 10.0) -> tuple[Service, list[Action]]:
    """Decide each event in turn, answering a RereadConfig with a valid configuration
    (as the shell does, after the actions before it)."""
    actions: list[Action] = []
    pending = deque(events)
    while pending:
        service, more = decide(service, pending.popleft(), now)
        for action in more:
            if isinstance(action, RereadConfig):
                pending.append(ConfigReread(None, service.configured, service.timings))
        actions += more
    return service, actions


def of(kind: type, actions: list[Action]) -> list[object]:
    return [a for a in actions if isinstance(a, kind)]


def serving(generation: int = 1, desired: int = 2) -> Service:
    """A service whose `generation` serves, nothing in progress."""
    return Service(desired, desired, TIMINGS, Phase.SERVING, serving=generation,
                   last_generation=generation)


def test_the_first_generation_starts_without_rereading_the_configuration() -> None:
    service, actions = decide(Service(2, 2, TIMINGS), MasterStarted(), 0.0)
    assert service.phase is Phase.STARTING and service.target == 1
    assert actions == [StartGeneration(1, 2, ())]


def test_a_reload_rereads_the_configuration_then_starts_the_next_generation() -> None:
    service, actions = decide(serving(), ReloadRequested(CONTROL, 7), 10.0)
    assert actions == [RereadConfig()] and service.rollout is None
    service, actions = decide(service, ConfigReread(None, 2, TIMINGS), 10.0)
    assert service.phase is Phase.RELOADING and service.target == 2
    assert service.rollout is not None and service.rollout.waiters == (7,)
    assert service.rollout.trigger is CONTROL
    assert StartGeneration(2, 2, (7,)) in actions


def test_an_invalid_configuration_refuses_the_reload_and_changes_nothing() -> None:
    before = serving()
    service, actions = run(before, ReloadRequested(CONTROL, 7))
    service, actions = decide(replace(before, rereading=((7,), CONTROL)),
                              ConfigReread("configuration not valid: workers = 0"), 10.0)
    assert service == before
    answer, = of(Answer, actions)
    assert answer == Answer((7,), False, "reload refused: configuration not valid: workers = 0")


def test_a_changed_workers_setting_sets_the_count_but_an_unchanged_one_keeps_a_scale() -> None:
    scaled = replace(serving(), desired=5)  # scaled by a signal; the config still says 2
    service, _ = decide(replace(scaled, rereading=((), CONTROL)),
                        ConfigReread(None, 2, TIMINGS), 10.0)
    assert service.desired == 5
    service, _ = decide(replace(scaled, rereading=((), CONTROL)),
                        ConfigReread(None, 3, TIMINGS), 10.0)
    assert service.desired == 3 and service.configured == 3


def test_reloads_asked_while_one_rolls_are_coalesced_into_one_queued_reload() -> None:
    service, _ = run(serving(), ReloadRequested(CONTROL, 1))
    service, actions = run(service, ReloadRequested(Trigger.SIGNAL),
                           ReloadRequested(CONTROL, 2), ReloadRequested(CONTROL, 3))
    assert service.queued == ((2, 3), Trigger.SIGNAL)
    assert of(Progress, actions) == [Progress((), "queued behind the reload in progress"),
                                     Progress((2,), "queued behind the reload in progress"),
                                     Progress((3,), "queued behind the reload in progress")]
    service, actions = run(service, GenerationRolledOut(2, draining=2), now=20.0)
    assert of(Answer, actions)[0].to == (1,) and of(Answer, actions)[0].ok
    assert service.target == 3 and service.rollout is not None
    assert service.rollout.waiters == (2, 3) and service.queued is None


def test_a_reload_while_stopping_is_refused() -> None:
    service, _ = run(serving(), StopRequested(graceful=True))
    _, actions = run(service, ReloadRequested(CONTROL, 4))
    assert actions == [Answer((4,), False, "the service is stopping")]


def test_a_boot_failure_of_the_new_generation_aborts_and_the_target_points_back() -> None:
    service, _ = run(serving(), ReloadRequested(CONTROL, 1))
    failed = WorkerExited(99, 2, ExitCause.BOOT_FAILED, "exited before ready (exit code 4)",
                          boot_reason="ImportError: no module named app",
                          details="Traceback ...")
    service, actions = run(service, failed, now=12.0)
    assert service.phase is Phase.SERVING and service.target == 1 and service.rollout is None
    answer, = of(Answer, actions)
    assert not answer.ok and answer.to == (1,) and answer.details == "Traceback ..."
    assert "worker 99: ImportError: no module named app" in answer.message
    assert RestoreListeners(1) in actions
    record, = of(RecordReload, actions)
    assert (record.outcome, record.before, record.after, record.generation) == \
        ("aborted", 1, 1, 2)
    assert service.boot_backoff.failures == 0  # a reload's failure aborts; it backs off nothing


def test_boot_failures_of_the_serving_generation_back_off_then_give_up() -> None:
    service = serving()
    for attempt in range(1, MAX_BOOT_RETRIES + 1):
        now = 100.0 * attempt
        service, actions = run(service, SpawnFailed(1, "cannot start a worker"), now=now)
        assert service.boot_backoff.failures == attempt
        assert not spawn_allowed(service, now)
        assert f"({attempt}/{MAX_BOOT_RETRIES})" in of(Log, actions)[0].text  # type: ignore[attr-defined]
    assert service.boot_backoff.gave_up and not spawn_allowed(service, 10_000.0)
    service, _ = run(service, ScaleRequested(3))  # asking again: another try
    assert spawn_allowed(service, 10_000.0)


def test_the_back_off_waits_then_allows_and_a_ready_worker_resets_it() -> None:
    service, _ = run(serving(), SpawnFailed(1, "boom"), now=100.0)
    assert not spawn_allowed(service, 100.4) and spawn_allowed(service, 100.5)
    service, _ = run(service, WorkerReady(1, 2), now=101.0)
    assert service.boot_backoff.failures == 0


def test_a_new_worker_dying_after_ready_inside_the_window_aborts_with_its_last_lines() -> None:
    service, _ = run(serving(), ReloadRequested(CONTROL, 1), GenerationWhole(2))
    death = WorkerExited(77, 2, ExitCause.CRASHED, "exit code 1", ready_for=1.04,
                         details="RuntimeError: lost the database")
    service, actions = run(service, death, now=12.0)
    answer, = of(Answer, actions)
    assert answer.message == ("reload aborted, generation 1 keeps serving: worker 77 died "
                              "1.0s after Ready: exit code 1")
    assert answer.details == "RuntimeError: lost the database"
    assert answer.fields == {"generation": 1, "failed_generation": 2}
    assert service.target == 1


def test_a_serving_worker_dying_soon_after_ready_counts_toward_the_crash_loop() -> None:
    service = serving()
    early = WorkerExited(5, 1, ExitCause.CRASHED, "exit code 1", ready_for=1.0)
    for death in range(1, GIVE_UP_AFTER + 1):
        service, actions = run(service, early, now=100.0 * death)
        assert service.crash_loop.deaths == death
        assert of(CrashLoopChanged, actions) == [CrashLoopChanged(death,
                                                                  death == GIVE_UP_AFTER)]
    assert not spawn_allowed(service, 10_000.0)
    late = replace(early, ready_for=STABLE_AFTER + 1)
    service, actions = run(service, late, now=20_000.0)
    assert service.crash_loop.deaths == 0  # it had served long enough: an ordinary crash


def test_the_crash_loop_settles_once_a_worker_has_served_long_enough() -> None:
    service, _ = run(serving(), WorkerExited(5, 1, ExitCause.CRASHED, "exit code 1",
                                             ready_for=1.0), now=100.0)
    service, actions = run(service, Ticked(ready_since=101.0), now=105.0)
    assert service.crash_loop.deaths == 1 and actions == []
    service, actions = run(service, Ticked(ready_since=101.0), now=101.0 + STABLE_AFTER)
    assert service.crash_loop.deaths == 0 and CrashLoopChanged(0, False) in actions


def test_planned_exits_decide_nothing() -> None:
    service = serving()
    for cause in (ExitCause.STOPPED, ExitCause.NOT_NEEDED):
        assert run(service, WorkerExited(5, 1, cause, "killed by SIGKILL")) == (service, [])
    assert run(service, WorkerExited(5, 1, ExitCause.DRAINED, "exit code 0"))[1] == [
        Log(20, "worker 5 (generation 1) drained, exit code 0")]


def test_startup_failure_stops_at_once_with_the_traceback() -> None:
    service, _ = run(Service(2, 2, replace(TIMINGS, drain_delay=5.0)), MasterStarted())
    failed = WorkerExited(3, 1, ExitCause.BOOT_FAILED, "exited before ready (exit code 4)",
                          boot_reason="SyntaxError", details="Traceback (most recent call last)")
    service, actions = run(service, failed, now=11.0)
    assert service.phase is Phase.STOPPING and service.drain_at is None  # no drain delay
    assert service.startup_failure == ("worker 3: SyntaxError",
                                       "Traceback (most recent call last)")
    assert StopWorkers(False, 2.0) in actions


def test_a_graceful_stop_answers_waiters_records_the_interrupted_reload_then_drains() -> None:
    base = replace(serving(), timings=replace(TIMINGS, drain_delay=5.0))
    service, _ = run(base, ReloadRequested(CONTROL, 1))
    service, _ = run(service, ReloadRequested(CONTROL, 2))  # queued
    service, actions = run(service, StopRequested(graceful=True), now=20.0)
    assert Answer((1, 2), False, "the service is stopping") in actions
    record, = of(RecordReload, actions)
    assert record.outcome == "interrupted" and record.after == 1
    assert service.phase is Phase.STOPPING and service.drain_at == 25.0
    assert of(StopWorkers, actions) == []  # --drain-delay: readiness says 503 first
    service, actions = run(service, Ticked(None), now=24.9)
    assert of(StopWorkers, actions) == []
    service, actions = run(service, Ticked(None), now=25.0)
    assert of(StopWorkers, actions) == [StopWorkers(True, 30.0)]
    assert service.stop_deadline == 25.0 + 30.0 + 1.0
    service, actions = run(service, Ticked(None), now=56.5)
    assert actions == [KillAll()] and service.stop_deadline is None


def test_a_second_graceful_stop_changes_nothing_but_a_quick_one_overrides() -> None:
    service, _ = run(serving(), StopRequested(graceful=True), now=10.0)
    assert run(service, StopRequested(graceful=True), now=11.0) == (service, [])
    service, actions = run(service, StopRequested(graceful=False), now=12.0)
    assert StopWorkers(False, 2.0) in actions and service.stop_deadline == 15.0


def test_scale_below_one_is_refused_and_a_scale_is_answered() -> None:
    service, actions = run(serving(), ScaleRequested(0, 9))
    assert service == serving() and Answer((9,), False, "scale needs workers >= 1") in actions
    service, actions = run(serving(), ScaleRequested(4, 9))
    assert service.desired == 4
    assert Answer((9,), True, "scaling to 4 worker(s)", fields={"workers": 4}) in actions


def test_a_completed_reload_answers_with_what_its_drains_cut_and_is_recorded() -> None:
    service, _ = run(serving(), ReloadRequested(Trigger.FIFO, 1), now=10.0)
    service, _ = run(service, RequestsCut(3), now=11.0)
    service, actions = run(service, GenerationRolledOut(2, draining=2), now=12.5)
    answer, = of(Answer, actions)
    assert answer.ok and "3 request(s) of the old generation cut" in answer.message
    assert answer.fields == {"generation": 2, "previous": 1, "seconds": 2.5, "cut": 3,
                             "draining": 2}
    record, = of(RecordReload, actions)
    assert (record.outcome, record.before, record.after, record.trigger, record.draining) == \
        ("ok", 1, 2, Trigger.FIFO, 2)
    assert service.phase is Phase.SERVING and service.serving == 2


def test_every_pair_of_stop_and_state_has_a_move() -> None:
    assert set(STOP_MOVES) == {(g, s) for g in (True, False) for s in WorkerState}
    assert all(STOP_MOVES[g, s] is StopMove.KILL for g in (True, False) for s in BOOTING_STATES)


# -- the service policy and the planner together ------------------------------------------

class World:
    """The master's loop with plain data: `decide` for the service, `plan` for capacity,
    and workers that boot in one step, fail as their generation is fated to, and crash
    when the walk says so."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.now = 0.0
        self.service = Service(2, 2, Timings(graceful_timeout=30.0, stable_for=1.0))
        self.workers: dict[int, WorkerView] = {}
        self.ready_at: dict[int, float] = {}
        self.fates: dict[int, str] = {1: "good"}
        self.answers: dict[int, list[Answer]] = {}
        self.next_id = 1
        self.handle(MasterStarted())

    def handle(self, event: Event) -> None:
        pending: deque[Event] = deque([event])
        while pending:
            self.service, actions = decide(self.service, pending.popleft(), self.now)
            for action in actions:
                if isinstance(action, RereadConfig):
                    pending.append(ConfigReread(None, self.service.configured,
                                                self.service.timings))
                elif isinstance(action, StartGeneration) and action.number not in self.fates:
                    self.fates[action.number] = self.rng.choice(
                        ["good", "good", "boot fails", "dies after ready"])
                elif isinstance(action, Answer):
                    for token in action.to:
                        self.answers.setdefault(token, []).append(action)

    def accepting(self) -> int:
        return sum(1 for w in self.workers.values() if w.state is WorkerState.READY)

    def plan(self) -> list[object]:
        service = self.service
        assert service.target is not None
        actions = plan(PoolView(
            desired=service.desired, target=service.target,
            rolling=service.rollout is not None, surge=0, workers=tuple(self.workers.values()),
            now=self.now, spawn_allowed=spawn_allowed(service, self.now), boot_timeout=60,
            timeout=30, graceful_timeout=30, stable_for=service.timings.stable_for,
            watch_started=service.rollout.watch_started if service.rollout else None,
            first_start=service.serving is None))
        for action in actions:
            if isinstance(action, SpawnWorker):
                self.workers[self.next_id] = WorkerView(self.next_id, action.generation,
                                                        WorkerState.BOOTING, self.now, self.now)
                self.next_id += 1
            elif isinstance(action, (DrainWorker, ParkWorker, ResumeWorker, KillWorker)):
                state = {DrainWorker: WorkerState.DRAINING, ParkWorker: WorkerState.PARKED,
                         ResumeWorker: WorkerState.READY,
                         KillWorker: WorkerState.KILLING}[type(action)]
                self.workers[action.worker] = replace(self.workers[action.worker], state=state)
            elif isinstance(action, BeginWatch):
                self.handle(GenerationWhole(action.generation))
            elif isinstance(action, CompleteRollout):
                draining = sum(1 for w in self.workers.values()
                               if w.generation == self.service.serving)
                self.handle(GenerationRolledOut(action.generation, draining))
        return actions

    def exit(self, worker: WorkerView, killed: KillReason | None = None) -> None:
        del self.workers[worker.id]
        stopping = self.service.phase is Phase.STOPPING
        cause = classify_exit(worker.state, stopping, killed, worker.state)
        ready_at = self.ready_at.pop(worker.id, None)
        self.handle(WorkerExited(worker.id, worker.generation, cause, "exit code 1",
                                 None if ready_at is None else self.now - ready_at))

    def step(self) -> None:
        """Half a second passes: boots finish (or fail), drains and kills end, and a
        worker whose generation is fated to dies half a second after Ready."""
        self.now += 0.5
        for worker in list(self.workers.values()):
            fate = self.fates[worker.generation]
            if worker.state in (WorkerState.DRAINING, WorkerState.KILLING):
                self.exit(worker, KillReason.NOT_NEEDED if worker.state is
                          WorkerState.KILLING else None)
            elif worker.state is WorkerState.BOOTING and fate == "boot fails":
                self.exit(worker)
            elif worker.state is WorkerState.BOOTING:
                self.workers[worker.id] = replace(worker, state=WorkerState.READY)
                self.ready_at[worker.id] = self.now
                ready = sum(1 for w in self.workers.values()
                            if w.generation == worker.generation and w.state is WorkerState.READY)
                self.handle(WorkerReady(worker.generation, ready))
            elif (worker.state is WorkerState.READY and fate == "dies after ready"
                  and self.now - self.ready_at[worker.id] >= 0.5):
                self.exit(worker)
        self.workers = {i: replace(w, last_seen=self.now) for i, w in self.workers.items()}
        self.handle(Ticked(None))


@pytest.mark.parametrize("seed", range(60))
def test_capacity_never_drops_through_reloads_aborts_crashes_and_scaling(seed: int) -> None:
    """A random walk: reloads asked by several requesters (some of the new generations
    fail to boot, some die after Ready, inside their window), serving workers that
    crash, scale changes; then quiet. No plan ever takes the accepting workers below
    `desired` (nor below what there was, if fewer); every requester gets exactly one
    final answer, which is a success only for a generation that is good; and once quiet
    the service serves a good generation at full strength with nothing left over."""
    rng = random.Random(seed)
    world = World(rng)
    requester = 0
    for step in range(240):
        roll = rng.random() if step < 180 else 1.0  # the last 30 s are quiet
        if roll < 0.06:
            requester += 1
            world.handle(ReloadRequested(CONTROL, requester))
        elif roll < 0.10 and world.service.phase is not Phase.STARTING:  # that stops it
            ready = [w for w in world.workers.values() if w.state is WorkerState.READY]
            if ready:
                world.exit(rng.choice(ready))
        elif roll < 0.13:
            world.handle(ScaleRequested(rng.choice([1, 2, 3])))
        before = world.accepting()
        actions = world.plan()
        if world.service.phase is not Phase.STARTING:
            assert world.accepting() >= min(world.service.desired, before), (seed, step, actions)
        world.step()
    service = world.service
    assert service.phase is Phase.SERVING and service.rollout is None and service.queued is None
    assert world.fates[service.serving or 0] == "good"
    assert sorted((w.generation, w.state) for w in world.workers.values()) == \
        [(service.serving, WorkerState.READY)] * service.desired
    assert sorted(world.answers) == list(range(1, requester + 1))
    for token, answers in world.answers.items():
        assert len(answers) == 1, (token, answers)
        if answers[0].ok:
            assert world.fates[answers[0].fields["generation"]] == "good"
