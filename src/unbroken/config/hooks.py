"""gunicorn's server hooks, as a `gunicorn.conf.py` defines them: a typed record.

A hook is loaded into a `Hook` (its name, where unbroken runs it, the file and line that
define it, and the callable or import path); `Hooks` holds a file's hooks. Only the names
in `WIRED` are accepted: the master or the worker calls those. Every other known hook is
refused with one line until it is wired, so a hook is never taken and then silently not
called. Wiring one is: call it at its `moment` in its process (`runs_in`), then add its
name to `WIRED`.

A worker is a fresh process (never a fork of the master), so a worker-side hook cannot be
handed over as an object: the worker runs the file again (`Hook.load()`), as gunicorn's
workers see the file's module-level names after their fork.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Process = Literal["master", "worker"]


@dataclass(frozen=True)
class HookSpec:
    """A gunicorn hook: where and when unbroken calls it, and what gunicorn passes."""

    name: str
    runs_in: Process
    moment: str
    arguments: tuple[str, ...]


def _spec(name: str, runs_in: Process, moment: str, *arguments: str) -> HookSpec:
    return HookSpec(name, runs_in, moment, arguments)


KNOWN: dict[str, HookSpec] = {spec.name: spec for spec in (
    _spec("on_starting", "master", "once, after the configuration is read and before the "
          "sockets are bound", "server"),
    _spec("when_ready", "master", "once, after the sockets are bound and before the first "
          "generation boots (as in gunicorn; not when the workers are ready)", "server"),
    _spec("on_reload", "master", "when a reload begins (SIGHUP, `unbroken reload`, the FIFO, "
          "the touch file), before the new generation boots", "server"),
    _spec("pre_fork", "master", "before each worker process is started", "server", "worker"),
    _spec("post_fork", "worker", "first thing in a new worker, before the app is imported "
          "(a fresh process, not a fork)", "server", "worker"),
    _spec("post_worker_init", "worker", "after the app is imported and its startup ran, "
          "before the worker says Ready", "worker"),
    _spec("worker_int", "worker", "when a worker is told to stop quickly (SIGINT, SIGQUIT)",
          "worker"),
    _spec("worker_abort", "worker", "when the master gives up on a silent worker, before it "
          "is killed (gunicorn: SIGABRT on --timeout)", "worker"),
    _spec("pre_request", "worker", "before the app is called for each request", "worker",
          "req"),
    _spec("post_request", "worker", "after each response is sent", "worker", "req",
          "environ", "resp"),
    _spec("child_exit", "master", "when the master reaps a worker that exited", "server",
          "worker"),
    _spec("worker_exit", "worker", "in the worker, after it drained, just before it exits",
          "server", "worker"),
    _spec("nworkers_changed", "master", "when the wanted worker count changes (scale, TTIN, "
          "TTOU, a reload with new `workers`)", "server", "new_value", "old_value"),
    _spec("on_exit", "master", "once, just before the master exits", "server"),
    _spec("ssl_context", "worker", "when a worker builds its TLS context", "config",
          "default_ssl_context_factory"),
)}

# gunicorn hooks for moments unbroken does not have: refused for good, with the reason.
NEVER: dict[str, str] = {
    "pre_exec": "unbroken never re-executes its master (gunicorn's USR2 upgrade); a reload "
    "rolls new workers in, see on_reload",
    "on_dirty_starting": "unbroken has no dirty arbiter",
    "dirty_post_fork": "unbroken has no dirty arbiter",
    "dirty_worker_init": "unbroken has no dirty arbiter",
    "dirty_worker_exit": "unbroken has no dirty arbiter",
}

# The hooks the master and the worker call (master/hooks.py, worker/hooks.py).
WIRED: frozenset[str] = frozenset({
    "on_starting", "when_ready", "on_reload", "pre_fork", "child_exit", "nworkers_changed",
    "on_exit", "post_fork", "post_worker_init", "worker_int", "worker_exit", "pre_request",
    "post_request",
})


@dataclass
class ServerStandIn:
    """What a hook gets as `server` (gunicorn passes its Arbiter): the parts hooks use.
    `cfg` is unbroken's configuration; the common names are gunicorn's (`workers`,
    `bind`, `timeout`, `graceful_timeout`, `threads`...)."""

    pid: int
    cfg: Any
    log: logging.Logger
    num_workers: int


@dataclass
class WorkerStandIn:
    """What a hook gets as `worker`: `age` is gunicorn's spawn counter (our worker id)."""

    pid: int
    age: int
    generation: int
    log: logging.Logger


@dataclass(frozen=True)
class Hook:
    """One hook a config file defines: a callable in that file, or an import path."""

    name: str
    runs_in: Process
    file: str
    line: int
    # `module.attr` when the file names the hook by import path, as gunicorn allows.
    import_path: str | None = None
    # The object from the master's run of the file (None for an import path); a worker
    # gets its own by `load()`.
    function: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    @property
    def spec(self) -> HookSpec:
        return KNOWN[self.name]

    def load(self) -> Callable[..., Any]:
        """The callable, in this process: imported, or from running the file again."""
        import importlib

        if self.import_path is not None:
            module, _, attr = self.import_path.rpartition(".")
            found: Any = getattr(importlib.import_module(module), attr)
        else:
            from unbroken.config.gunicorn import execute

            found = execute(self.file)[self.name]
        if not callable(found):
            raise TypeError(f"hook {self.name} from {self.file} is not callable")
        return found  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Hooks:
    """A config file's hooks, by name."""

    by_name: Mapping[str, Hook] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Hook]:
        return iter(self.by_name.values())

    def __len__(self) -> int:
        return len(self.by_name)

    def get(self, name: str) -> Hook | None:
        return self.by_name.get(name)

    def running_in(self, process: Process) -> list[Hook]:
        return [hook for hook in self if hook.runs_in == process]


def refusal(name: str) -> str | None:
    """Why a hook named `name` is not accepted (now), or None when it is called."""
    if name in NEVER:
        return f"hook {name} has no equivalent: {NEVER[name]}; remove it"
    if name in KNOWN and name not in WIRED:
        return (f"hook {name} is recognised but not yet supported (unbroken will call it "
                f"in the {KNOWN[name].runs_in}); remove it for now, see issue 16")
    return None
