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
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from unbroken.config.hooks import Hook, ServerStandIn, WorkerStandIn

if TYPE_CHECKING:
    from unbroken.http.events import RequestHead

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

    @property
    def around_requests(self) -> bool:
        return "pre_request" in self.functions or "post_request" in self.functions

    # The engine's RequestHooks (engines/__init__.py), on the app's thread.
    def before(self, head: RequestHead, environ: dict[str, Any]) -> None:
        function = self.functions.get("pre_request")
        if function is not None:
            function(self.worker, RequestStandIn.of(head))

    def after(self, head: RequestHead, environ: dict[str, Any], status: int,
              headers: list[tuple[bytes, bytes]]) -> None:
        function = self.functions.get("post_request")
        if function is not None:
            function(self.worker, RequestStandIn.of(head), environ,
                     ResponseStandIn.of(status, headers))

    def _quietly(self, name: str, *arguments: Any) -> None:
        try:
            self._call(name, *arguments)
        except Exception:
            log.exception("worker %d: hook %s raised", os.getpid(), name)


@dataclass
class RequestStandIn:
    """What pre_request and post_request get as `req` (gunicorn's Request): its common
    parts, with header names upper-cased as gunicorn gives them."""

    method: str
    uri: str
    path: str
    query: str
    version: tuple[int, int]
    headers: list[tuple[str, str]]

    @classmethod
    def of(cls, head: RequestHead) -> RequestStandIn:
        uri = head.target.decode("latin-1")
        path, _, query = uri.partition("?")
        major, _, minor = head.version.partition(".")
        return cls(head.method.decode("latin-1"), uri, path, query, (int(major), int(minor)),
                   [(name.decode("latin-1").upper(), value.decode("latin-1"))
                    for name, value in head.headers])


@dataclass
class ResponseStandIn:
    """What post_request gets as `resp`."""

    status: str
    status_code: int
    headers: list[tuple[str, str]]

    @classmethod
    def of(cls, status: int, headers: list[tuple[bytes, bytes]]) -> ResponseStandIn:
        reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        return cls(f"{status} {reason}".strip(), status,
                   [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers])
