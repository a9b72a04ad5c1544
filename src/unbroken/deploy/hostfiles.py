"""The host's own files, as every host-side step reads and writes them: JSON written
whole or not at all, the host mutex, the history log, and the one error the steps raise.

Kept apart from the agent's entry point so the steps (install, switch, service) and the
agent share one definition of each, imported normally.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from unbroken.deploy.layout import Layout
from unbroken.errors import UnbrokenError


class AgentError(UnbrokenError):
    """A host step failed: the message is the line the user reads, `details` the
    tool's own output (uv's error, the traceback) printed under it."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: str, data: dict[str, Any]) -> None:
    """Written whole or not at all: a temporary file renamed over the old one."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


@contextmanager
def host_lock(layout: Layout, wait: bool = True) -> Iterator[bool]:
    """The host's own mutex for the few steps that change what serves (seconds at most)."""
    os.makedirs(layout.state, exist_ok=True)
    with open(layout.host_lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append_history(layout: Layout, entry: dict[str, Any]) -> None:
    os.makedirs(layout.state, exist_ok=True)
    with open(layout.history, "a") as handle:
        handle.write(json.dumps({"at": time.time(), **entry}) + "\n")


def keep_lease(layout: Layout, deploy_id: str, reason: str, holder: str = "?") -> None:
    """Keep the lease for good, with the reason: this host needs a person."""
    with host_lock(layout):
        raw = read_json(layout.lease) or {"deploy_id": deploy_id, "holder": holder,
                                          "started": time.time(), "ttl": 0}
        raw.update(diverged=reason, heartbeat=time.time())
        write_json(layout.lease, raw)
