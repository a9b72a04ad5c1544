"""In-process health probes (WSGI, ASGI): a new worker calls its own app before it is ready.

In-process (not over a socket) because the worker must not accept traffic before
the probe passed, and because it tests exactly the object that will serve.
"""

from __future__ import annotations

import asyncio
import io
import sys
from typing import Any
from urllib.parse import unquote
from wsgiref.util import setup_testing_defaults

from unbroken.errors import BootError


class ProbeFailed(BootError, RuntimeError):
    pass


def probe_wsgi(app: Any, path: str, scheme: str = "http") -> None:
    """Call the WSGI app with `GET path`; raise ProbeFailed unless it answers 2xx."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path.partition("?")[0],
        "QUERY_STRING": path.partition("?")[2],
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "HTTP_USER_AGENT": "unbroken-health-probe",
        "wsgi.url_scheme": scheme,
    }
    setup_testing_defaults(environ)
    status: list[str] = []

    def start_response(line: str, headers: Any, exc_info: Any = None) -> Any:
        status[:] = [line]
        return lambda data: None

    body = app(environ, start_response)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    if not status or status[0][:1] != "2":
        got = status[0] if status else "no status"
        raise ProbeFailed(f"health probe GET {path} answered {got!r}, not 2xx")


async def probe_asgi(
    app: Any, path: str, state: dict[str, Any], scheme: str = "http"
) -> None:
    """Call the ASGI app with an `http` scope `GET path`; raise ProbeFailed unless 2xx."""
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1", "method": "GET", "scheme": scheme,
        "path": unquote(raw_path), "raw_path": raw_path.encode("latin-1"),
        "query_string": query.encode("latin-1"), "root_path": "",
        "headers": [(b"host", b"localhost"), (b"user-agent", b"unbroken-health-probe")],
        "client": None, "server": None, "state": state.copy(),
    }
    statuses: list[int] = []
    done = asyncio.Event()
    requested: list[bool] = []

    async def receive() -> dict[str, Any]:
        if not requested:
            requested.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(int(message["status"]))
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(scope, receive, send)
    if not statuses or not 200 <= statuses[0] < 300:
        got = statuses[0] if statuses else "no response"
        raise ProbeFailed(f"health probe GET {path} answered {got!r}, not 2xx")
