"""The crash-loop policy for workers that die soon after Ready."""

from __future__ import annotations

from unbroken.rollout.backoff import MAX_DELAY, Backoff
from unbroken.rollout.crashloop import (
    GIVE_UP_AFTER,
    STABLE_AFTER,
    CrashLoop,
    after_death,
    settle,
)


def test_an_early_death_backs_off_and_each_one_doubles_the_wait() -> None:
    loop = CrashLoop()
    waits = []
    for now in range(GIVE_UP_AFTER - 1):
        loop = after_death(loop, ready_for=1.0, now=float(now))
        waits.append(loop.retry_at - now)
        assert not loop.allows_spawn(float(now))
        assert loop.allows_spawn(loop.retry_at)
    assert waits[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(waits) <= MAX_DELAY


def test_the_loop_gives_up_and_stays_given_up() -> None:
    loop = CrashLoop()
    for _ in range(GIVE_UP_AFTER):
        loop = after_death(loop, ready_for=0.5, now=0.0)
    assert loop.gave_up
    assert not loop.allows_spawn(10_000.0)
    assert loop.describe(0.0)["gave_up"] is True


def test_a_death_after_a_long_life_is_an_ordinary_crash() -> None:
    loop = after_death(CrashLoop(3, 50.0, 39.0), ready_for=STABLE_AFTER, now=40.0)
    assert loop == CrashLoop()
    assert loop.allows_spawn(40.0)


def test_serving_with_no_early_death_for_a_while_ends_the_loop() -> None:
    loop = after_death(after_death(CrashLoop(), 1.0, 100.0), 1.0, 101.0)
    long_lived = 50.0  # a worker ready since before the deaths
    assert settle(loop, 101.0 + STABLE_AFTER - 0.1, long_lived) == loop
    assert settle(loop, 101.0 + STABLE_AFTER, None) == loop  # nobody serving
    assert settle(loop, 101.0 + STABLE_AFTER, long_lived) == CrashLoop()
    # a respawn after a long back-off must serve the whole window itself first
    assert settle(loop, 130.0, 125.0) == loop
    assert settle(loop, 135.0, 125.0) == CrashLoop()
    assert settle(CrashLoop(), 0.0, 0.0) == CrashLoop()


def test_capacity_never_grows_past_what_is_allowed_while_looping() -> None:
    """A simulation: two workers that die 1 s after Ready, respawned only when allowed,
    for 30 s of steady time: the respawns are bounded by the back-off, not by speed."""
    loop, now, spawns = CrashLoop(), 0.0, 0
    alive: list[float | None] = [0.0, 0.0]  # when each worker became ready
    step = 0.05
    while now < 30.0:
        for index, ready_at in enumerate(alive):
            if ready_at is not None and now - ready_at >= 1.0:  # it dies
                loop = after_death(loop, now - ready_at, now)
                alive[index] = None
        for index, ready_at in enumerate(alive):
            if ready_at is None and loop.allows_spawn(now):
                alive[index] = now
                spawns += 1
        ready = [r for r in alive if r is not None]
        loop = settle(loop, now, min(ready) if ready else None)
        now += step
    assert spawns <= GIVE_UP_AFTER + 2  # not 60, as at full speed
    assert loop.gave_up


def test_boot_backoff_doubles_gives_up_at_its_limit_and_resets() -> None:
    backoff = Backoff(limit=5)
    waits = []
    for failure in range(5):
        assert backoff.allows(100.0 + 60 * failure)
        backoff = backoff.failed(100.0 + 60 * failure)
        waits.append(backoff.wait)
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert backoff.gave_up and not backoff.allows(10_000.0)
    assert backoff.reset() == Backoff(limit=5) and backoff.reset().allows(0.0)
    assert not Backoff(limit=5).failed(100.0).allows(100.4)  # still waiting its 0.5 s
