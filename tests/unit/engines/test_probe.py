"""In-process health probes see the engine's URL scheme (https behind TLS)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from unbroken.engines.probe import ProbeFailed, probe_asgi, probe_wsgi


def _https_only_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["wsgi.url_scheme"] != "https":
        start_response("301 Moved Permanently", [("Location", "https://localhost/")])
        return [b""]
    start_response("200 OK", [])
    return [b"ok"]


async def _https_only_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    status = 200 if scope["scheme"] == "https" else 301
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_wsgi_probe_passes_the_scheme() -> None:
    probe_wsgi(_https_only_wsgi, "/health", "https")
    with pytest.raises(ProbeFailed, match="301"):
        probe_wsgi(_https_only_wsgi, "/health")


def test_asgi_probe_passes_the_scheme() -> None:
    asyncio.run(probe_asgi(_https_only_asgi, "/health", {}, "https"))
    with pytest.raises(ProbeFailed, match="301"):
        asyncio.run(probe_asgi(_https_only_asgi, "/health", {}))
