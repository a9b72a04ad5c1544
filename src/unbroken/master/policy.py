"""The service's lifecycle as one pure function: `decide(service, event, now)`.

    STARTING ──first generation rolled out──> SERVING <──rolled out / aborted── RELOADING
       │                                          └──────reload (config valid)────────┘
       └──startup failed──> STOPPING <──stop, from any phase

The master's shell turns what it sees (a signal, a FIFO line, a control request, a
worker's exit, the passing of time) into *events*, facts in the past tense; `decide`
returns the new `Service` and the *actions* the shell performs, imperatives it
carries out without judging. Capacity (which worker to spawn, drain, park or kill) is
the rollout planner's (rollout/planner.py); this is everything around it. Plain data
in and out: every rule below has a unit test (tests/unit/master/test_policy.py).

Rules:
1. Reload requests all become `ReloadRequested`, whatever asked (signal, FIFO, touch
   file, control socket; the trigger is kept for the history). While stopping, one is
   refused. While a reload rolls, it is queued, and every request meanwhile joins that
   one queued reload (coalesced): one more rollout, when the current one ends,
   answers them all.
2. Before any reload but the first generation, the configuration is read again
   (`RereadConfig`, answered by `ConfigReread`): if it is not valid the reload is
   refused and nothing changes; a changed `workers` sets the worker count.
3. A boot failure of the target generation aborts the reload: the target points back
   at the serving generation and the planner restores it. A boot failure of the
   serving generation (a respawn) backs off, 0.5 s doubling, and gives up after
   `MAX_BOOT_RETRIES` in a row until a reload or a scale asks again. During a
   reload nothing backs off: a failure aborts it.
4. A target worker that dies after Ready while the reload is still open (its
   --reload-stable-for window) aborts it too. A serving worker that dies soon after
   Ready counts toward the crash loop (rollout/crashloop.py).
5. If the first generation cannot boot, the service stops at once and the master
   exits with that worker's traceback (`Service.startup_failure`).
6. Stop: the reloads waiting are answered "stopping" and an open one is recorded as
   interrupted; a graceful stop waits --drain-delay (readiness already says 503) and
   then drains the workers; whatever is left after the deadline is killed.
7. Scale below 1 is refused; a scale resets both back-offs, as a reload does.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from unbroken.master.events import (
    Action,
    Answer,
    ConfigReread,
    CrashLoopChanged,
    Event,
    ForgetGenerations,
    GenerationRolledOut,
    GenerationWhole,
    KillAll,
    Log,
    MasterStarted,
    Progress,
    RecordReload,
    ReloadRequested,
    Requester,
    RequestsCut,
    RereadConfig,
    RestoreListeners,
    ScaleRequested,
    SpawnFailed,
    StartGeneration,
    StopRequested,
    StopWorkers,
    Systemd,
    Ticked,
    Timings,
    Trigger,
    WorkerExited,
    WorkerReady,
)
from unbroken.observability.cuts import serving_message
from unbroken.rollout.backoff import Backoff
from unbroken.rollout.crashloop import STABLE_AFTER, CrashLoop, after_death, settle
from unbroken.rollout.lifecycle import ExitCause, WorkerState

MAX_BOOT_RETRIES = 5  # consecutive boot failures of the serving generation before giving up
QUICK_STOP_TIMEOUT = 2.0
STOP_MARGIN = 1.0  # past the workers' own deadline before the master kills what is left

class Phase(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    RELOADING = "reloading"
    STOPPING = "stopping"


@dataclass(frozen=True)
class Rollout:
    generation: int
    started_at: float
    trigger: Trigger | None
    waiters: tuple[Requester, ...] = ()
    cut: int = 0  # requests the old workers it drained cut, known before it completed
    watch_started: float | None = None  # its --reload-stable-for window began


@dataclass(frozen=True)
class Service:
    desired: int
    configured: int  # `workers` as the configuration last said (a scale overrides it)
    timings: Timings = field(default_factory=Timings)
    phase: Phase = Phase.STARTING
    serving: int | None = None
    rollout: Rollout | None = None
    last_generation: int = 0
    queued: tuple[tuple[Requester, ...], Trigger] | None = None  # a coalesced reload
    rereading: tuple[tuple[Requester, ...], Trigger] | None = None  # waits for ConfigReread
    boot_backoff: Backoff = field(default_factory=lambda: Backoff(MAX_BOOT_RETRIES))
    crash_loop: CrashLoop = field(default_factory=CrashLoop)
    drain_at: float | None = None  # a graceful stop drains the workers then
    stop_deadline: float | None = None  # then kills whatever is left
    startup_failure: tuple[str, str] | None = None  # (reason, traceback)

    @property
    def target(self) -> int | None:
        """The generation the planner reconciles toward."""
        return self.rollout.generation if self.rollout is not None else self.serving


def spawn_allowed(service: Service, now: float) -> bool:
    """During a reload a failure aborts it, so only steady-state respawns back off."""
    if service.rollout is not None:
        return True
    return service.boot_backoff.allows(now) and service.crash_loop.allows_spawn(now)


class StopMove(enum.Enum):
    KILL = "kill"  # booting: holds no request
    DRAIN = "drain"  # serving or parked: finish what it holds
    QUIT = "quit"  # a quick stop: exit now (a --cmd program gets its own stop signal)
    NONE = "none"  # already on its way out


W = WorkerState
STOP_MOVES: dict[tuple[bool, WorkerState], StopMove] = {  # (graceful, state)
    **{(graceful, state): StopMove.KILL for graceful in (True, False)
       for state in (W.BOOTING, W.PROBING)},
    **{(True, state): StopMove.DRAIN for state in (W.READY, W.PARKED)},
    **{(False, state): StopMove.QUIT for state in (W.READY, W.PARKED, W.DRAINING)},
    (True, W.DRAINING): StopMove.NONE,
    (True, W.KILLING): StopMove.NONE,
    (False, W.KILLING): StopMove.NONE,
}
del W


Decision = tuple[Service, list[Action]]
INFO, WARNING, ERROR = logging.INFO, logging.WARNING, logging.ERROR


def decide(service: Service, event: Event, now: float) -> Decision:
    handler: Callable[[Service, Any, float], Decision] = HANDLERS[type(event)]
    return handler(service, event, now)


def _started(service: Service, event: MasterStarted, now: float) -> Decision:
    return _start_rollout(service, (), None, now)


def _reload_requested(service: Service, event: ReloadRequested, now: float) -> Decision:
    to = () if event.requester is None else (event.requester,)
    if service.phase is Phase.STOPPING:
        return service, [Answer(to, False, "the service is stopping")]
    if service.rollout is not None:
        waiting, trigger = service.queued or ((), event.trigger)
        return replace(service, queued=(waiting + to, trigger)), [
            Log(INFO, f"reload requested while generation {service.rollout.generation} "
                      "rolls out; queued"),
            Progress(to, "queued behind the reload in progress")]
    return replace(service, rereading=(to, event.trigger)), [RereadConfig()]


def _config_reread(service: Service, event: ConfigReread, now: float) -> Decision:
    waiting, trigger = service.rereading or ((), Trigger.SIGNAL)
    service = replace(service, rereading=None)
    if event.problem is not None:
        return service, [Log(ERROR, f"reload refused: {event.problem}"),
                         Answer(waiting, False, f"reload refused: {event.problem}")]
    if event.workers != service.configured:
        service = replace(service, desired=event.workers, configured=event.workers)
    return _start_rollout(replace(service, timings=event.timings), waiting, trigger, now)


def _start_rollout(service: Service, waiting: tuple[Requester, ...], trigger: Trigger | None,
                   now: float) -> Decision:
    service, actions = _reset_crash_loop(service)
    number = service.last_generation + 1
    phase = Phase.STARTING if service.serving is None else Phase.RELOADING
    service = replace(service, last_generation=number, phase=phase,
                      rollout=Rollout(number, now, trigger, waiting),
                      boot_backoff=service.boot_backoff.reset())
    actions.append(StartGeneration(number, service.desired, waiting))
    if service.serving is not None:
        actions.append(Systemd("reloading", f"reloading: generation {number} booting"))
    return service, actions


def _stop_requested(service: Service, event: StopRequested, now: float) -> Decision:
    return _begin_stop(service, event.graceful, now)


def _begin_stop(service: Service, graceful: bool, now: float) -> Decision:
    if service.phase is Phase.STOPPING and graceful:
        return service, []
    actions: list[Action] = [Systemd("stopping")]
    waiting = (service.rollout.waiters if service.rollout else ()) + \
        (service.queued[0] if service.queued else ())
    if waiting:
        actions.append(Answer(waiting, False, "the service is stopping"))
    if service.rollout is not None and service.serving is not None:
        actions.append(_record(service, service.rollout, "interrupted", service.serving, now,
                               "the service began to stop"))
    service = replace(service, phase=Phase.STOPPING, rollout=None, queued=None)
    # --ready-bind answers 503 from now on; with --drain-delay the workers keep
    # accepting a while longer, so a load balancer stops sending before they stop.
    delay = service.timings.drain_delay if graceful else 0.0
    if delay > 0:
        actions.append(Log(INFO, f"stopping: workers drain in {delay:.1f}s (--drain-delay)"))
        return replace(service, drain_at=now + delay), actions
    service, stopping = _stop_workers(replace(service, drain_at=None), graceful, now)
    return service, actions + stopping


def _stop_workers(service: Service, graceful: bool, now: float) -> Decision:
    timeout = service.timings.graceful_timeout if graceful else QUICK_STOP_TIMEOUT
    return replace(service, stop_deadline=now + timeout + STOP_MARGIN), [
        Log(INFO, f"stopping ({'graceful' if graceful else 'quick'})"),
        StopWorkers(graceful, timeout)]


def _ticked(service: Service, event: Ticked, now: float) -> Decision:
    actions: list[Action] = []
    if service.crash_loop.deaths:
        calmer = settle(service.crash_loop, now, event.ready_since)
        if not calmer.deaths:
            service = replace(service, crash_loop=calmer)
            actions += [Log(INFO, f"generation {service.serving} has served "
                                  f"{STABLE_AFTER:.0f}s without an early death: crash loop over"),
                        CrashLoopChanged(0, False)]
    if service.phase is not Phase.STOPPING:
        return service, actions
    if service.drain_at is not None and now >= service.drain_at:
        service, stopping = _stop_workers(replace(service, drain_at=None), True, now)
        actions += stopping
    if service.stop_deadline is not None and now > service.stop_deadline:
        service = replace(service, stop_deadline=None)
        actions.append(KillAll())
    return service, actions


def _scale_requested(service: Service, event: ScaleRequested, now: float) -> Decision:
    to = () if event.requester is None else (event.requester,)
    if event.workers < 1:
        return service, [Log(WARNING, "refusing to scale below 1 worker"),
                         Answer(to, False, "scale needs workers >= 1")]
    actions: list[Action] = [
        Log(INFO, f"scaling from {service.desired} to {event.workers} worker(s)")]
    service = replace(service, desired=event.workers, boot_backoff=service.boot_backoff.reset())
    service, reset = _reset_crash_loop(service)
    return service, [*actions, *reset, Answer(to, True, f"scaling to {event.workers} worker(s)",
                                              fields={"workers": event.workers})]


def _reset_crash_loop(service: Service) -> Decision:
    """A reload or a scale asks again: whatever gave up gets another try."""
    if not service.crash_loop.deaths:
        return service, []
    return replace(service, crash_loop=CrashLoop()), [CrashLoopChanged(0, False)]


def _worker_ready(service: Service, event: WorkerReady, now: float) -> Decision:
    if event.generation == service.serving or service.rollout is None:
        service = replace(service, boot_backoff=service.boot_backoff.reset())
    rollout = service.rollout
    if rollout is None or event.generation != rollout.generation:
        return service, []
    doing = "starting" if service.serving is None else "reloading"
    counted = f"{event.ready}/{service.desired} ready"
    return service, [
        Systemd("status", f"{doing}: generation {event.generation} {counted}"),
        Progress(rollout.waiters, f"generation {event.generation}: {counted}",
                 {"generation": event.generation, "ready": event.ready,
                  "desired": service.desired})]


def _spawn_failed(service: Service, event: SpawnFailed, now: float) -> Decision:
    return _boot_failed(service, event.generation, event.reason, "", now)


def _worker_exited(service: Service, event: WorkerExited, now: float) -> Decision:
    who = f"worker {event.pid} (generation {event.generation})"
    if event.cause is ExitCause.DRAINED:
        return service, [Log(INFO, f"{who} drained, {event.how}")]
    if event.cause.planned:
        return service, []
    if event.cause is ExitCause.BOOT_FAILED:
        reason = event.boot_reason or event.how
        return _boot_failed(service, event.generation, f"worker {event.pid}: {reason}",
                            event.details, now)
    actions: list[Action] = [Log(ERROR, f"{who} died: {event.how}")]
    if service.rollout is not None and event.generation == service.rollout.generation:
        when = ("while rolling out" if event.ready_for is None
                else f"{event.ready_for:.1f}s after Ready")
        service, more = _abort(service, f"worker {event.pid} died {when}: {event.how}",
                               event.details, now)
        return service, actions + more
    if event.generation == service.serving and event.ready_for is not None:
        service, more = _early_death(service, event.generation, event.ready_for, now)
        actions += more
    return service, actions


def _early_death(service: Service, generation: int, ready_for: float, now: float) -> Decision:
    """A serving worker's death soon after Ready counts toward the crash loop."""
    loop = after_death(service.crash_loop, ready_for, now)
    service = replace(service, crash_loop=loop)
    if loop.deaths == 0:
        return service, []  # it had served long enough: an ordinary crash, replaced at once
    if loop.gave_up:
        text = (f"generation {generation}: {loop.deaths} workers died within "
                f"{STABLE_AFTER:.0f}s of Ready in a row; not respawning until the next "
                "reload or scale (what serves keeps serving)")
    else:
        text = (f"generation {generation}: worker died {ready_for:.1f}s after Ready "
                f"({loop.deaths} in a row); next spawn in {loop.backoff():.1f}s")
    return service, [Log(ERROR, text), CrashLoopChanged(loop.deaths, loop.gave_up)]


def _boot_failed(service: Service, generation: int, reason: str, details: str,
                 now: float) -> Decision:
    if service.rollout is not None and generation == service.rollout.generation:
        return _abort(service, reason, details, now)
    if generation != service.serving:
        return service, []
    backoff = service.boot_backoff.failed(now)
    service = replace(service, boot_backoff=backoff)
    actions: list[Action] = [Log(ERROR, f"{reason}; retrying in {backoff.wait:.1f}s "
                                        f"({backoff.failures}/{MAX_BOOT_RETRIES})\n"
                                        f"{details.rstrip()}")]
    if backoff.gave_up:
        actions.append(Log(ERROR, f"generation {generation} cannot boot; not retrying until "
                                  "the next reload or scale"))
    return service, actions


def _abort(service: Service, reason: str, details: str, now: float) -> Decision:
    rollout = service.rollout
    assert rollout is not None
    service = replace(service, rollout=None)
    if service.serving is None:
        service = replace(service, startup_failure=(reason, details))
        service, stopping = _begin_stop(service, False, now)
        return service, [Log(ERROR, f"startup failed: {reason}\n{details.rstrip()}"), *stopping]
    serving = service.serving
    service = replace(service, phase=Phase.SERVING)
    actions: list[Action] = [
        RestoreListeners(serving),
        Systemd("ready", f"generation {serving} serving; reload to {rollout.generation} "
                         f"aborted: {reason}"[:300]),
        _record(service, rollout, "aborted", serving, now, reason),
        Log(ERROR, f"reload to generation {rollout.generation} aborted, generation {serving} "
                   f"keeps serving: {reason}\n{details.rstrip()}"),
        Answer(rollout.waiters, False, f"reload aborted, generation {serving} keeps serving: "
               f"{reason}", details, {"generation": serving,
                                      "failed_generation": rollout.generation}),
    ]
    service, queued = _start_queued(service)
    return service, actions + queued


def _requests_cut(service: Service, event: RequestsCut, now: float) -> Decision:
    if service.rollout is None:
        return service, []
    return replace(service, rollout=replace(service.rollout,
                                            cut=service.rollout.cut + event.count)), []


def _generation_whole(service: Service, event: GenerationWhole, now: float) -> Decision:
    """Every new worker is ready; the old ones are parked while it proves itself."""
    rollout = service.rollout
    if rollout is None or rollout.generation != event.generation:
        return service, []
    window = service.timings.stable_for
    number = event.generation
    return replace(service, rollout=replace(rollout, watch_started=now)), [
        Log(INFO, f"generation {number} ready; the old workers are parked for {window:g}s "
                  "(--reload-stable-for) in case it fails"),
        Systemd("status", f"reloading: generation {number} ready, watched for {window:g}s"),
        Progress(rollout.waiters, f"generation {number}: all {service.desired} ready; "
                 f"watching it {window:g}s before the old workers drain",
                 {"generation": number})]


def _rolled_out(service: Service, event: GenerationRolledOut, now: float) -> Decision:
    rollout = service.rollout
    if rollout is None or rollout.generation != event.generation:
        return service, []
    number, previous, took = event.generation, service.serving, now - rollout.started_at
    service = replace(service, serving=number, rollout=None, phase=Phase.SERVING)
    service, actions = _reset_crash_loop(service)  # it counted the previous generation's deaths
    actions += [Log(INFO, f"generation {number} serving (was {previous}), rolled out in "
                          f"{took:.2f}s"),
                Systemd("ready", f"generation {number} serving, {service.desired} worker(s)")]
    # The old workers start draining in this same tick, so what they cut usually
    # arrives after this reply: the shell amends the entry then (observability/cuts.py).
    if previous is not None:
        watched = (f", watched {service.timings.stable_for:g}s (--reload-stable-for)"
                   if rollout.watch_started is not None else "")
        actions.append(_record(service, rollout, "ok", number, now,
                               f"{service.desired} worker(s) ready{watched}", previous,
                               event.draining))
    actions += [Answer(rollout.waiters, True, serving_message(number, rollout.cut),
                       fields={"generation": number, "previous": previous,
                               "seconds": round(took, 3), "cut": rollout.cut,
                               "draining": event.draining}),
                ForgetGenerations()]
    service, queued = _start_queued(service)
    return service, actions + queued


def _start_queued(service: Service) -> Decision:
    if service.queued is None or service.phase is Phase.STOPPING:
        return service, []
    return replace(service, queued=None, rereading=service.queued), [RereadConfig()]


def _record(service: Service, rollout: Rollout, outcome: Literal["ok", "aborted", "interrupted"],
            after: int, now: float, reason: str, before: int | None = None,
            draining: int = 0) -> RecordReload:
    return RecordReload(outcome, service.serving if before is None else before, after,
                        rollout.generation, rollout.started_at,
                        round(now - rollout.started_at, 3), rollout.trigger, reason,
                        rollout.cut, draining)


HANDLERS: dict[type, Callable[[Service, Any, float], Decision]] = {
    MasterStarted: _started,
    ReloadRequested: _reload_requested,
    ConfigReread: _config_reread,
    StopRequested: _stop_requested,
    ScaleRequested: _scale_requested,
    WorkerReady: _worker_ready,
    SpawnFailed: _spawn_failed,
    WorkerExited: _worker_exited,
    RequestsCut: _requests_cut,
    GenerationWhole: _generation_whole,
    GenerationRolledOut: _rolled_out,
    Ticked: _ticked,
}
