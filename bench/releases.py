"""The bench app in two releases, laid out as a deploy tool would: releases/ + `current`.

Each case is a pair of releases (v1 serving, v2 rolled in). The app answers with its
version first in the body, so the load samples say which release served each request.
Every release has the same app twice: `app` (WSGI, `/slow` blocks its thread) and
`asgi_app` (ASGI, `/slow` awaits asyncio.sleep), with one module-level boot delay, so
WSGI and ASGI servers load the same release at the same cost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SLOW_PATH = "/slow"
SLOW_REQUEST_SECONDS = 2.0
SLOW_BOOT_SECONDS = 3.0

APP_TEMPLATE = '''\
"""Bench app, release {version}."""

import asyncio
import os
import time

VERSION = "{version}"
time.sleep({boot_seconds})  # stands in for a heavy import (ORM models, ML weights...)
{failure}

def app(environ, start_response):
    if environ.get("PATH_INFO") == "{slow_path}":
        time.sleep({slow_seconds})
    body = f"{{VERSION}} pid={{os.getpid()}}\\n".encode()
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    start_response("200 OK", headers)
    return [body]


async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({{"type": "lifespan.startup.complete"}})
            elif message["type"] == "lifespan.shutdown":
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "{slow_path}":
        await asyncio.sleep({slow_seconds})
    body = f"{{VERSION}} pid={{os.getpid()}}\\n".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({{"type": "http.response.start", "status": 200, "headers": headers}})
    await send({{"type": "http.response.body", "body": body}})
'''


@dataclass(frozen=True)
class Case:
    """How the two releases of one scenario differ from a trivial app."""

    name: str
    boot_seconds: float = 0.0
    slow_clients: int = 0  # clients that only hit SLOW_PATH, alongside the fast ones
    broken_v2: bool = False  # v2 raises at import

    def app_source(self, version: str) -> str:
        broken = self.broken_v2 and version == "v2"
        failure = 'raise RuntimeError("release v2 is broken")' if broken else ""
        return APP_TEMPLATE.format(
            version=version,
            boot_seconds=self.boot_seconds,
            failure=failure,
            slow_path=SLOW_PATH,
            slow_seconds=SLOW_REQUEST_SECONDS,
        )


CASES = (
    Case("fast"),
    Case("slow-boot", boot_seconds=SLOW_BOOT_SECONDS),
    Case("slow-request", slow_clients=2),
    Case("broken-release", broken_v2=True),
)


@dataclass(frozen=True)
class Site:
    """A temporary deploy root: releases/v1, releases/v2 and the `current` symlink."""

    root: Path

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def control_socket(self) -> Path:
        return self.root / "ctl.sock"

    @property
    def fifo(self) -> Path:
        return self.root / "master.fifo"

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def switch_to(self, version: str) -> None:
        """Point `current` at a release atomically, as `ln -sfn` + `mv -T` would."""
        staging = self.root / "current.new"
        staging.unlink(missing_ok=True)
        staging.symlink_to(Path("releases") / version)
        os.replace(staging, self.current)


def lay_out_site(root: Path, case: Case) -> Site:
    """Write both releases of a case under root and point `current` at v1."""
    for version in ("v1", "v2"):
        release = root / "releases" / version
        release.mkdir(parents=True)
        (release / "app.py").write_text(case.app_source(version))
    site = Site(root)
    site.switch_to("v1")
    return site
