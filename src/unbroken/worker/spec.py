"""What the master tells a new worker: one frozen record, passed as JSON in the environment.

The environment (not argv) so that `ps` stays readable and nothing is parsed twice.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

ENV_KEY = "UNBROKEN_WORKER"


@dataclass(frozen=True)
class WorkerSpec:
    app: str
    worker_class: str
    worker: int
    generation: int
    listeners: tuple[int, ...]
    channel: int
    health_path: str | None = None
    graceful_timeout: float = 30.0
    heartbeat_interval: float = 1.0
    max_requests: int = 0
    log_level: str = "info"
    engine: dict[str, Any] = field(default_factory=dict)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> WorkerSpec:
        data = json.loads(text)
        data["listeners"] = tuple(data["listeners"])
        return cls(**data)
