"""The rollout and respawn policy: a pure function from a snapshot of the pool to actions.

The master loop builds a `PoolView`, calls `plan`, and performs the actions; it
decides nothing itself. That keeps every capacity rule testable with plain data.

The rules, in order:
1. Expiry. A booting worker past --boot-timeout, a ready worker silent past
   --timeout, and a draining worker past --graceful-timeout (plus a margin: the
   worker enforces its own deadline first) are killed.
2. Reconcile toward the *target* generation. During a reload the target is the
   new generation; otherwise (and after an abort) it is the serving one, so an
   abort is nothing more than pointing the target back: the same rules then bring
   the old generation back to full strength and retire the new workers.
   - Spawn target workers until `desired` are booting or ready (while rolling with
     --reload-surge K, at most K boot at once).
   - Retire "stale" ready workers (other generation, or asking to retire) only as
     target workers are ready, so ready capacity never drops below `desired`. In
     whole-generation mode (the default) none is retired until the whole new
     generation is ready, so a failure leaves the old one untouched.
   - Booting workers of another generation, or beyond `desired`, are of no use:
     kill them (they hold no request; rollout/lifecycle.py rule 4).
3. Watch, then completion. When `desired` target workers are ready, the stale
   ready workers are not drained at once: they are *parked* (they stop accepting
   but can resume) and the new generation is watched for --reload-stable-for. A
   target worker that dies in that window makes the master abort (rule 2 then
   resumes the parked workers: rolling back is a re-route, not a reboot); when the
   window has passed, the parked workers drain and the reload completes. Workers
   that cannot park (--cmd programs) keep accepting through the window. A reload
   whose old workers are all gone (crashed) is watched all the same: nothing is
   parked, but a death in the window still aborts it, so whoever asked hears that it
   failed. With no window, or at the first start, it completes at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from unbroken.rollout.lifecycle import BOOTING_STATES, KillReason, WorkerState

# A draining worker enforces --graceful-timeout itself; the master waits this much
# longer before SIGKILL so that the worker's own orderly close wins the race.
DRAIN_KILL_MARGIN = 2.0


@dataclass(frozen=True)
class WorkerView:
    id: int
    generation: int
    state: WorkerState
    spawned_at: float
    last_seen: float
    drain_started: float | None = None
    retiring: bool = False
    parkable: bool = True  # can stop accepting and resume (our workers; not --cmd)


@dataclass(frozen=True)
class PoolView:
    desired: int
    target: int
    rolling: bool
    surge: int
    workers: tuple[WorkerView, ...]
    now: float
    spawn_allowed: bool
    boot_timeout: float
    timeout: float
    graceful_timeout: float
    stable_for: float = 0.0  # --reload-stable-for
    watch_started: float | None = None  # when the new generation's window began
    first_start: bool = False  # no generation serves yet: nothing to watch it against


@dataclass(frozen=True)
class SpawnWorker:
    generation: int


@dataclass(frozen=True)
class DrainWorker:
    worker: int


@dataclass(frozen=True)
class KillWorker:
    worker: int
    why: KillReason
    reason: str  # the sentence for the log


@dataclass(frozen=True)
class ParkWorker:
    worker: int


@dataclass(frozen=True)
class ResumeWorker:
    worker: int


@dataclass(frozen=True)
class BeginWatch:
    """The target generation is whole: start its --reload-stable-for window now."""

    generation: int


@dataclass(frozen=True)
class CompleteRollout:
    generation: int


Action = (SpawnWorker | DrainWorker | KillWorker | ParkWorker | ResumeWorker | BeginWatch
          | CompleteRollout)


def plan(view: PoolView) -> list[Action]:
    expired = _expired(view)
    gone = {action.worker for action in expired}
    live = [w for w in view.workers if w.id not in gone and w.state is not WorkerState.KILLING]
    return [*expired, *_reconcile(view, live)]


def _expired(view: PoolView) -> list[KillWorker]:
    kills = []
    for worker in view.workers:
        kill = None if worker.state is WorkerState.KILLING else _expiry(view, worker)
        if kill is not None:
            kills.append(KillWorker(worker.id, *kill))
    return kills


def _expiry(view: PoolView, worker: WorkerView) -> tuple[KillReason, str] | None:
    age = view.now - worker.spawned_at
    if worker.state in BOOTING_STATES and age > view.boot_timeout:
        return KillReason.BOOT_TIMEOUT, f"not ready within --boot-timeout {view.boot_timeout:g}s"
    if (worker.state in (WorkerState.READY, WorkerState.PARKED)
            and view.now - worker.last_seen > view.timeout):
        return KillReason.SILENT, f"no heartbeat for --timeout {view.timeout:g}s"
    drain_started = worker.drain_started
    if (worker.state is WorkerState.DRAINING and drain_started is not None
            and view.now - drain_started > view.graceful_timeout + DRAIN_KILL_MARGIN):
        return (KillReason.DRAIN_TIMEOUT,
                f"still draining after --graceful-timeout {view.graceful_timeout:g}s")
    return None


def _reconcile(view: PoolView, live: list[WorkerView]) -> list[Action]:
    # Parked workers of the target (after an abort: the serving generation) accept again
    # and count as ready from this very plan, so nothing is spawned in their place.
    parked = [w.id for w in live if w.state is WorkerState.PARKED and w.generation == view.target]
    actions: list[Action] = [ResumeWorker(id) for id in parked]
    live = [replace(w, state=WorkerState.READY) if w.id in parked else w for w in live]
    fresh = [w for w in live if w.generation == view.target and not w.retiring
             and (w.state in BOOTING_STATES or w.state is WorkerState.READY)]
    stale_booting = [w for w in live if w.state in BOOTING_STATES
                     and w.generation != view.target]
    actions += [_not_needed(w) for w in stale_booting]

    surplus = _surplus(fresh, len(fresh) - view.desired)
    actions += [_not_needed(w) if w.state in BOOTING_STATES else DrainWorker(w.id)
                for w in surplus]
    fresh = [w for w in fresh if w not in surplus]
    actions += _spawns(view, fresh)

    ready = [w for w in fresh if w.state is WorkerState.READY]
    stale_ready = sorted(
        (w for w in live if w.state in (WorkerState.READY, WorkerState.PARKED)
         and w not in fresh and w not in surplus),
        key=lambda w: (not w.retiring, w.generation, w.spawned_at),
    )
    whole = view.rolling and len(ready) >= view.desired
    if whole and view.stable_for > 0 and not view.first_start:
        return actions + _watch(view, stale_ready)
    actions += [DrainWorker(w.id) for w in stale_ready[: _stale_to_drain(view, ready, stale_ready)]]
    if whole:
        actions.append(CompleteRollout(view.target))
    return actions


def _watch(view: PoolView, stale: list[WorkerView]) -> list[Action]:
    """Rule 3: park what is stale, wait out the window, then drain it and complete."""
    if view.watch_started is None:
        return [BeginWatch(view.target), *(ParkWorker(w.id) for w in stale
                                            if w.parkable and w.state is WorkerState.READY)]
    if view.now - view.watch_started < view.stable_for:
        return []
    return [*(DrainWorker(w.id) for w in stale), CompleteRollout(view.target)]


def _not_needed(worker: WorkerView) -> KillWorker:
    return KillWorker(worker.id, KillReason.NOT_NEEDED, "no longer needed")


def _surplus(fresh: list[WorkerView], count: int) -> list[WorkerView]:
    """Workers beyond `desired` (scale down): booting ones first, then the oldest."""
    if count <= 0:
        return []
    order = sorted(fresh, key=lambda w: (w.state is WorkerState.READY, w.spawned_at))
    return order[:count]


def _spawns(view: PoolView, fresh: list[WorkerView]) -> list[Action]:
    missing = view.desired - len(fresh)
    if missing <= 0 or not view.spawn_allowed:
        return []
    if view.rolling:
        booting = sum(1 for w in fresh if w.state in BOOTING_STATES)
        missing = min(missing, _surge_limit(view) - booting)
    return [SpawnWorker(view.target) for _ in range(max(0, missing))]


def _surge_limit(view: PoolView) -> int:
    return view.surge if 0 < view.surge < view.desired else view.desired


def _stale_to_drain(view: PoolView, ready: list[WorkerView], stale: list[WorkerView]) -> int:
    if view.rolling and _surge_limit(view) >= view.desired:
        return len(stale) if len(ready) >= view.desired else 0
    return max(0, min(len(stale), len(ready) + len(stale) - view.desired))
