"""The master's side of gunicorn's server hooks (config/hooks.py): who calls what, when.

A hook is user code inside the one process that must not die, so a hook that raises
is logged with its traceback and the master carries on — except at start
(`on_starting`, `when_ready`), where a raising hook stops the start with one line
naming the hook, as gunicorn would fail to start.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from unbroken.config import Config
from unbroken.config.hooks import Hooks, ServerStandIn, WorkerStandIn
from unbroken.errors import ServiceError

log = logging.getLogger("unbroken.master")
hook_log = logging.getLogger("unbroken.hooks")


class HookFailed(ServiceError, RuntimeError):
    pass


class MasterHooks:
    def __init__(self, hooks: Hooks, config: Config) -> None:
        self.hooks = hooks
        self.server = ServerStandIn(os.getpid(), config, hook_log, config.workers)

    def update(self, hooks: Hooks, config: Config, workers: int) -> None:
        """A reload read the file again: its hooks as they are now."""
        self.hooks = hooks
        self.server.cfg, self.server.num_workers = config, workers

    def call(self, name: str, *arguments: Any, strict: bool = False) -> None:
        hook = self.hooks.get(name)
        if hook is None:
            return
        try:
            function = hook.function or hook.load()
            function(*arguments)
        except Exception as error:
            if strict:
                raise HookFailed(f"hook {name} ({hook.file}:{hook.line}) raised {error!r}") \
                    from None
            log.exception("hook %s (%s:%d) raised; carrying on", name, hook.file, hook.line)

    def starting(self) -> None:
        self.call("on_starting", self.server, strict=True)

    def ready(self) -> None:
        self.call("when_ready", self.server, strict=True)

    def reloading(self) -> None:
        self.call("on_reload", self.server)

    def forking(self, worker: int, generation: int) -> None:
        self.call("pre_fork", self.server, WorkerStandIn(0, worker, generation, hook_log))

    def child_exited(self, pid: int, worker: int, generation: int) -> None:
        self.call("child_exit", self.server, WorkerStandIn(pid, worker, generation, hook_log))

    def workers_changed(self, new: int, old: int) -> None:
        self.server.num_workers = new
        self.call("nworkers_changed", self.server, new, old)

    def exiting(self) -> None:
        self.call("on_exit", self.server)
