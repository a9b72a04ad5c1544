"""Which interface an application speaks, WSGI or ASGI, read from the object itself.

Why: a FastAPI app under the WSGI engine, or a Flask app under `-k asgi`, used to boot
"ready" and answer 500 to every request (and `unbroken check` said ok). Without `-k`
the engine is picked from the app; with a `-k` that does not fit, the worker refuses to
boot with one line, so a reload of such a release is rolled back like an import error.

ASGI applications are coroutine functions, or objects whose `__call__` is one
(Starlette, FastAPI, Django's ASGIHandler, Quart); anything else callable is taken
for WSGI (Flask, Django's WSGIHandler, Falcon, Pyramid, Bottle).
"""

from __future__ import annotations

import inspect
from typing import Any

from unbroken.errors import UsageError

AUTO = "auto"
WSGI_ENGINES = frozenset({"wsgi", "gevent"})


class EngineMismatch(UsageError):
    """`-k` names an engine for the other interface than the app's."""


def interface_of(app: Any) -> str:
    """"asgi" or "wsgi"."""
    # An instance's `__call__`, looked up on its class (and bases) as Python calls it.
    call = None if inspect.isroutine(app) else inspect.getattr_static(type(app), "__call__", None)
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(call):
        return "asgi"
    return "wsgi"


def choose_engine(requested: str, app: Any, spec: str) -> str:
    """The engine to serve `app` (named `spec`) with; raises EngineMismatch."""
    interface = interface_of(app)
    if requested == AUTO:
        return interface
    wants = "wsgi" if requested in WSGI_ENGINES else "asgi"
    if wants != interface:
        other = "-k asgi" if interface == "asgi" else "-k wsgi (or -k gevent)"
        raise EngineMismatch(
            f"{spec} is {'an' if interface == 'asgi' else 'a'} {interface.upper()} application "
            f"but -k {requested} serves "
            f"{wants.upper()}: drop -k (the engine is picked from the app) or use {other}")
    return requested
