"""The in-process WSGI health probe: a new worker calls its own app before it counts as ready.

In-process (not over a socket) because the worker must not accept traffic before
the probe passed, and because it tests exactly the object that will serve.
"""

from __future__ import annotations

import io
import sys
from typing import Any
from wsgiref.util import setup_testing_defaults


class ProbeFailed(RuntimeError):
    pass


def probe_wsgi(app: Any, path: str) -> None:
    """Call the WSGI app with `GET path`; raise ProbeFailed unless it answers 2xx."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path.partition("?")[0],
        "QUERY_STRING": path.partition("?")[2],
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "HTTP_USER_AGENT": "unbroken-health-probe",
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
