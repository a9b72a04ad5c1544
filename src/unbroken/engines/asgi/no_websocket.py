"""A WebSocket when wsproto is not installed: refused with 501, and said once in the log.

wsproto is the `asgi` extra. Without it, a WebSocket handshake is answered
`501 Not Implemented` (the app is not called: it would get a scope it cannot serve)
and the worker logs one line naming the extra, the first time only.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

log = logging.getLogger("unbroken.engines.asgi")

NEEDS = "WebSockets need wsproto, which is not installed: pip install 'unbroken[asgi]'"
_said = False


def wsproto_missing() -> bool:
    """Cheap once wsproto is imported (a sys.modules lookup)."""
    return importlib.util.find_spec("wsproto") is None


async def refuse_websocket(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app answering every request with 501 and the extra to install."""
    global _said
    if not _said:
        _said = True
        log.warning("WebSocket refused (501): %s", NEEDS)
    body = f"{NEEDS}\n".encode()
    await send({"type": "http.response.start", "status": 501,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
