"""The worker's side of gunicorn's server hooks (config/hooks.py).

A worker is a fresh interpreter, not a fork of the master, so it gets its hooks by
running the configuration file again (or importing the named path), before the app
is imported. A hook that raises before Ready (`post_fork`, `post_worker_init`) fails
the boot like an import error: the reload is rolled back and the traceback reaches
whoever asked. One that raises later (`worker_exit`, `worker_int`) is logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from unbroken.config.hooks import Hook, ServerStandIn, WorkerStandIn

hook_log = logging.getLogger("unbroken.hooks")
log = logging.getLogger("unbroken.worker")


class WorkerHooks:
    def __init__(self, entries: tuple[tuple[str, str, int, str | None], ...], worker: int,
                 generation: int, master_pid: int, settings: Any) -> None:
        self.functions: dict[str, Callable[..., Any]] = {
            name: Hook(name, "worker", file, line, path).load()
            for name, file, line, path in entries}
        self.server = ServerStandIn(master_pid, settings, hook_log, 0)
        self.worker = WorkerStandIn(os.getpid(), worker, generation, hook_log)

    def _call(self, name: str, *arguments: Any) -> None:
        function = self.functions.get(name)
        if function is not None:
            function(*arguments)

    def forked(self) -> None:
        self._call("post_fork", self.server, self.worker)

    def initialised(self) -> None:
        self._call("post_worker_init", self.worker)

    def interrupted(self) -> None:
        self._quietly("worker_int", self.worker)

    def exiting(self) -> None:
        self._quietly("worker_exit", self.server, self.worker)

    def _quietly(self, name: str, *arguments: Any) -> None:
        try:
            self._call(name, *arguments)
        except Exception:
            log.exception("worker %d: hook %s raised", os.getpid(), name)
