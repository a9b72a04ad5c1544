"""Releases built on real frameworks: a Starlette (ASGI) app and a Flask (WSGI) app.

Like `release.py`, every response body starts with `<version> <pid>` so a test can
tell which generation answered. The ASGI app has a lifespan (which can be slow or
raise), a WebSocket echo at /ws and a server-sent event stream at /events.
"""

from __future__ import annotations

from pathlib import Path

STARLETTE_TEMPLATE = '''\
import asyncio
import contextlib
import os

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute

VERSION = {version!r}


@contextlib.asynccontextmanager
async def lifespan(app):
    await asyncio.sleep({startup_delay!r})
    if {startup_raises!r}:
        raise RuntimeError("lifespan of {version} fails on purpose")
    yield {{"greeting": VERSION}}


async def home(request):
    return PlainTextResponse("%s %d\\n" % (request.state.greeting, os.getpid()))


async def slow(request):
    await asyncio.sleep(float(request.query_params.get("s", "1")))
    return PlainTextResponse("%s %d\\n" % (VERSION, os.getpid()))


async def events(request):
    async def ticks():
        while True:
            yield "data: %s\\n\\n" % VERSION
            await asyncio.sleep(0.1)
    return StreamingResponse(ticks(), media_type="text/event-stream")


async def echo(websocket):
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text("%s %s" % (VERSION, text))
    except Exception:
        pass


app = Starlette(routes=[Route("/", home), Route("/slow", slow), Route("/events", events),
                        WebSocketRoute("/ws", echo)], lifespan=lifespan)
'''

FLASK_TEMPLATE = '''\
import os
import time

from flask import Flask, request

VERSION = {version!r}
app = Flask(__name__)


@app.route("/")
def home():
    return "%s %d\\n" % (VERSION, os.getpid())


@app.route("/slow")
def slow():
    time.sleep(float(request.args.get("s", "1")))
    return "%s %d\\n" % (VERSION, os.getpid())
'''


def write_starlette_release(root: Path, version: str, *, startup_delay: float = 0.0,
                            startup_raises: bool = False) -> Path:
    return _write(root, version, STARLETTE_TEMPLATE.format(
        version=version, startup_delay=startup_delay, startup_raises=startup_raises))


def write_flask_release(root: Path, version: str) -> Path:
    return _write(root, version, FLASK_TEMPLATE.format(version=version))


def _write(root: Path, version: str, source: str) -> Path:
    directory = root / "releases" / version
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.py").write_text(source)
    return directory
