"""Reload history: the last reloads, kept in memory and in a small JSON file.

Rules this module keeps:

1. Bounded: at most MAX_RECORDS records, in memory and on disk; the oldest go first.
2. The file (`<control>.history.json`) is written atomically (a temporary file in the
   same directory, fsync'd, renamed over the old one), so a crash mid-write leaves the
   previous history, never a torn one.
3. A missing or unreadable file is an empty history, logged, never a startup failure:
   history is an aid, not something the service depends on.

The write happens in the master's loop, once per reload and once more per old worker
as it finishes draining (`replace`, see observability/cuts.py); the file is a few KiB
at most, so it costs far less than the reload itself.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Any

log = logging.getLogger("unbroken.history")

MAX_RECORDS = 100


@dataclass(frozen=True)
class ReloadEntry:
    started_at: float  # wall clock (time.time()), for people and other machines
    seconds: float
    outcome: str  # "ok", "aborted" or "interrupted" (a stop began mid-reload)
    generation_before: int | None
    generation_after: int | None  # the generation serving afterwards
    target: int  # the generation the reload tried to roll out
    reason: str = ""
    # Requests of the old generation still running at --graceful-timeout, cut. Final
    # once `draining` is 0: the old workers still to finish draining when last written.
    cut: int = 0
    draining: int = 0
    trigger: str = ""  # what asked for it: signal, fifo, touch, control
    directory: str = ""  # the release the target generation was resolved to

    def after_worker_drained(self, cut: int) -> ReloadEntry:
        """This entry once one more old worker has exited, having cut `cut` requests."""
        return replace(self, cut=self.cut + cut, draining=max(self.draining - 1, 0))


def history_path(control_path: str) -> str:
    return f"{control_path}.history.json"


class ReloadHistory:
    def __init__(self, path: str | None, limit: int = MAX_RECORDS) -> None:
        self.path = path
        self.entries: deque[ReloadEntry] = deque(maxlen=limit)

    def load(self) -> None:
        if self.path is None or not os.path.exists(self.path):
            return
        try:
            with open(self.path, encoding="utf-8") as stream:
                payload = json.load(stream)
            self.entries.extend(ReloadEntry(**item) for item in payload["reloads"])
        except (OSError, ValueError, TypeError, KeyError) as error:
            log.warning("ignoring unreadable reload history %s: %s", self.path, error)

    def add(self, entry: ReloadEntry) -> None:
        self.entries.append(entry)
        self._save()

    def replace(self, old: ReloadEntry, new: ReloadEntry) -> bool:
        """Put `new` where `old` is (the very object, not an equal one); False when
        `old` is no longer kept (pushed out by MAX_RECORDS newer reloads)."""
        for index, entry in enumerate(self.entries):
            if entry is old:
                self.entries[index] = new
                self._save()
                return True
        return False

    def as_json(self) -> list[dict[str, Any]]:
        return [asdict(entry) for entry in self.entries]

    def _save(self) -> None:
        if self.path is None:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            handle, temporary = tempfile.mkstemp(prefix=".history-", dir=directory)
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump({"v": 1, "reloads": self.as_json()}, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except OSError as error:
            log.warning("cannot write reload history %s: %s", self.path, error)
