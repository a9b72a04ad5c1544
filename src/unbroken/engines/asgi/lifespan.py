"""The ASGI `lifespan` protocol: startup before the worker is ready, shutdown in its drain.

Detection ("auto", as uvicorn does): an application that raises before it has
asked for its first lifespan event, or that returns without answering startup,
does not support lifespan; the worker goes on without it. Stricter than uvicorn
on purpose: once the app took `lifespan.startup`, raising before
`lifespan.startup.complete` is a failed startup, because a worker whose startup
half ran must not take traffic.

    LifespanFailed      startup.failed was sent, or the app raised during startup
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from unbroken.engines.asgi.http import ASGIApp, Message
from unbroken.engines.asgi.scope import ASGI_VERSION
from unbroken.errors import BootError

log = logging.getLogger("unbroken.worker")


class LifespanFailed(BootError, RuntimeError):
    """The application reported, or raised, a failed startup."""


class Lifespan:
    """Runs the application's lifespan task for the whole life of the worker."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self._app = app
        self._loop = loop
        self.state: dict[str, Any] = {}
        self.supported = True
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._answer: asyncio.Future[Message] | None = None
        self._received_startup = False
        self._startup_done = False
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        """Return when the app's startup completed (or lifespan is unsupported)."""
        self._answer = self._loop.create_future()
        self._events.put_nowait({"type": "lifespan.startup"})
        self._task = self._loop.create_task(self._run())
        message = await self._answer
        if message["type"] == "lifespan.startup.failed":
            reason = message.get("message") or "the app sent lifespan.startup.failed"
            raise LifespanFailed(reason) from self._error

    async def shutdown(self, timeout: float) -> None:
        """Ask the app to shut down; give up (and log) after `timeout` seconds."""
        task = self._task
        if not self.supported or task is None or task.done():
            return
        self._answer = self._loop.create_future()
        self._events.put_nowait({"type": "lifespan.shutdown"})
        try:
            message = await asyncio.wait_for(asyncio.shield(self._answer), max(timeout, 0))
        except TimeoutError:
            log.warning("lifespan shutdown did not finish within %.1fs", timeout)
            task.cancel()
            return
        if message["type"] == "lifespan.shutdown.failed":
            log.error("lifespan shutdown failed: %s", message.get("message", ""))

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        try:
            await self._app(scope, self._receive, self._send)
        except Exception as error:
            self._error = error
            if not self._received_startup:
                log.info("ASGI 'lifespan' appears unsupported (%r); going on without it", error)
                self.supported = False
                self._answer_with({"type": "lifespan.startup.complete"})
            else:
                phase = "shutdown" if self._startup_done else "startup"
                self._answer_with({"type": f"lifespan.{phase}.failed", "message": repr(error)})
            return
        # Returned: before startup that means "unsupported", later it means "done".
        if not self._startup_done:
            self.supported = self._received_startup
        done = "startup" if not self._startup_done else "shutdown"
        self._answer_with({"type": f"lifespan.{done}.complete"})

    def _answer_with(self, message: Message) -> None:
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_result(message)
            if message["type"].startswith("lifespan.startup"):
                self._startup_done = True

    async def _receive(self) -> Message:
        message = await self._events.get()
        if message["type"] == "lifespan.startup":
            self._received_startup = True
        return message

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        expected = ("lifespan.shutdown.complete", "lifespan.shutdown.failed") \
            if self._startup_done else ("lifespan.startup.complete", "lifespan.startup.failed")
        if kind not in expected:
            raise RuntimeError(f"unexpected lifespan message {kind!r}")
        self._answer_with(message)
