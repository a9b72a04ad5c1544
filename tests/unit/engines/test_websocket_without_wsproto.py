"""A WebSocket when wsproto (the asgi extra) is not installed: a clean 501, one log line."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest
from asgi_harness import serve
from wsgi_harness import read_response

from unbroken.engines.asgi import no_websocket as asgi_no_websocket

pytestmark = pytest.mark.timeout(10)

HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def test_a_websocket_without_wsproto_is_refused_and_said_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "wsproto", None)  # as if not installed
    monkeypatch.setattr(asgi_no_websocket, "_said", False)
    called: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan here")
        called.append(scope["type"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    caplog.set_level(logging.WARNING, logger="unbroken.engines.asgi")
    with serve(app) as server:
        for _ in range(2):
            with server.connect() as client:
                client.sendall(HANDSHAKE)
                status, headers, body = read_response(client)
                assert (status, headers["connection"]) == (501, "close")
                assert body == b"WebSockets need wsproto, which is not installed: " \
                    b"pip install 'unbroken[asgi]'\n"
        with server.connect() as client:  # plain HTTP is served as ever
            client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            assert read_response(client)[0] == 200
    assert called == ["http"]  # the app never saw the WebSockets
    assert [r.getMessage() for r in caplog.records] == [
        "WebSocket refused (501): WebSockets need wsproto, which is not installed: "
        "pip install 'unbroken[asgi]'"]
