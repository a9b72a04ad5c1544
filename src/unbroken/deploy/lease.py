"""The deploy lock: a lease on every host, so a dropped deploy cannot leave it behind.

A lease names its holder and deploy and carries a heartbeat the deploy renews; one
whose heartbeat is older than its TTL is stale and may be taken over (logged). A
process-held flock would not do: a remote process outlives a dropped SSH session
without a PTY (measured, ../shared/DEPLOY.md §0), so a lock held by a process could
outlive its deploy, and one freed by the session's end could free it too early.

The decision is pure (`decide`); the file is read and written under a short flock by
the host agent.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Lease:
    deploy_id: str
    holder: str  # user@machine of whoever runs the deploy
    started: float  # host clock, seconds since the epoch
    heartbeat: float  # host clock
    ttl: float
    diverged: str | None = None  # a host that could not be rolled back: never stale

    def age(self, now: float) -> float:
        return round(now - self.heartbeat, 1)

    def stale(self, now: float) -> bool:
        return self.diverged is None and now - self.heartbeat > self.ttl

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lease:
        return cls(**{key: data.get(key) for key in cls.__dataclass_fields__})  # type: ignore[arg-type]


class Decision(enum.Enum):
    TAKEN = "taken"  # nobody held it
    RENEWED = "renewed"  # we held it already
    TAKEN_OVER = "taken over"  # a stale lease of another deploy
    HELD = "held"  # another deploy holds it


def decide(existing: Lease | None, deploy_id: str, now: float) -> Decision:
    if existing is None:
        return Decision.TAKEN
    if existing.deploy_id == deploy_id:
        return Decision.RENEWED
    if existing.stale(now):
        return Decision.TAKEN_OVER
    return Decision.HELD
