"""The readiness answer for load balancers (`--ready-bind`): pure.

200 while the service serves (a reload in progress still serves: the old generation
answers until the new one is ready); 503 before the first generation is ready and
from the moment a stop begins, so a load balancer polling it stops sending new
connections during `--drain-delay`, before any worker stops accepting.
"""

from __future__ import annotations

SERVING_PHASES = frozenset({"serving", "reloading"})


def readiness(phase: str) -> tuple[int, bytes]:
    if phase in SERVING_PHASES:
        return 200, b"ready\n"
    return 503, f"not ready: {phase}\n".encode()
