"""The deploy lock's decision: free, ours, stale (taken over), or held."""

from __future__ import annotations

from unbroken.deploy.lease import Decision, Lease, decide


def lease(deploy_id: str = "d1", heartbeat: float = 100.0, ttl: float = 30.0,
          diverged: str | None = None) -> Lease:
    return Lease(deploy_id, "ann@laptop", 90.0, heartbeat, ttl, diverged)


def test_free_lock_is_taken() -> None:
    assert decide(None, "d2", 100.0) is Decision.TAKEN


def test_our_own_lease_is_renewed() -> None:
    assert decide(lease("d2"), "d2", 1000.0) is Decision.RENEWED


def test_a_live_lease_of_another_deploy_is_held() -> None:
    assert decide(lease(), "d2", 130.0) is Decision.HELD


def test_a_lease_silent_for_longer_than_its_ttl_is_taken_over() -> None:
    assert decide(lease(), "d2", 130.1) is Decision.TAKEN_OVER


def test_a_diverged_host_is_never_taken_over() -> None:
    assert decide(lease(diverged="could not roll back"), "d2", 10_000.0) is Decision.HELD


def test_round_trip_through_the_lease_file_form() -> None:
    original = lease(diverged="x")
    assert Lease.from_dict(original.to_dict()) == original
    assert original.age(112.34) == 12.3
