"""X-Forwarded-* and PROXY headers through real WSGI and ASGI engines on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import asgi_harness
import pytest
import wsgi_harness
from wsgi_harness import is_closed, read_response

from unbroken.http.proxy_protocol import V2_SIGNATURE

pytestmark = pytest.mark.timeout(10)

FORWARDED = (b"X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\nX-Forwarded-Proto: https\r\n"
             b"X-Forwarded-Host: shop.example:8443\r\n")
UNTRUSTED = "10.0.0.0/8"  # the tests connect from 127.0.0.1


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    seen = {"client": environ["REMOTE_ADDR"], "scheme": environ["wsgi.url_scheme"],
            "host": environ.get("HTTP_HOST"), "server": environ["SERVER_NAME"],
            "xff": environ.get("HTTP_X_FORWARDED_FOR")}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        raise RuntimeError("no lifespan here")
    headers = dict(scope["headers"])
    seen = {"client": scope["client"][0], "scheme": scope["scheme"],
            "host": headers.get(b"host", b"").decode(), "server": scope["server"][0],
            "xff": headers.get(b"x-forwarded-for", b"").decode() or None}
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps(seen).encode()})


Serve = Callable[..., AbstractContextManager[Any]]
ENGINES = [
    pytest.param(lambda **o: wsgi_harness.serve(wsgi_app, **o), id="wsgi"),
    pytest.param(lambda **o: asgi_harness.serve(asgi_app, **o), id="asgi"),
]


def ask(client: socket.socket, *prefix: bytes, extra: bytes = b"") -> dict[str, Any]:
    """Send `prefix` pieces (one send each), then a GET; return what the app saw."""
    for piece in prefix:
        client.sendall(piece)
    client.sendall(b"GET / HTTP/1.1\r\nHost: inner:8000\r\n" + extra + b"\r\n")
    status, _, body = read_response(client)
    assert status == 200
    seen: dict[str, Any] = json.loads(body)
    return seen


def v2_header(source: str, port: int) -> bytes:
    block = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 80)
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(block)) + block


@pytest.mark.parametrize("serve", ENGINES)
def test_trusted_proxy_sets_client_scheme_and_host(serve: Serve) -> None:
    with serve() as server, server.connect() as client:
        seen = ask(client, extra=FORWARDED)
    assert seen == {"client": "203.0.113.7", "scheme": "https", "host": "shop.example:8443",
                    "server": seen["server"], "xff": "203.0.113.7, 10.0.0.1"}


def test_trusted_proxy_sets_wsgi_server_name() -> None:
    with wsgi_harness.serve(wsgi_app) as server, server.connect() as client:
        assert ask(client, extra=FORWARDED)["server"] == "shop.example"


@pytest.mark.parametrize("serve", ENGINES)
def test_untrusted_peer_passes_headers_through_but_changes_nothing(serve: Serve) -> None:
    with serve(forwarded_allow_ips=UNTRUSTED) as server, server.connect() as client:
        seen = ask(client, extra=FORWARDED)
    assert (seen["client"], seen["scheme"], seen["host"]) == ("127.0.0.1", "http", "inner:8000")
    assert seen["xff"] == "203.0.113.7, 10.0.0.1"


@pytest.mark.parametrize("serve", ENGINES)
def test_proxy_v1_header_sets_the_client(serve: Serve) -> None:
    with serve(proxy_protocol=True) as server, server.connect() as client:
        first = ask(client, b"PROXY TCP4 198.51.100.9 127.0.0.1 40000 80\r\n")
        second = ask(client)  # the same connection, the same client
    assert first["client"] == second["client"] == "198.51.100.9"


@pytest.mark.parametrize("serve", ENGINES)
def test_proxy_v2_header_split_across_sends_sets_the_client(serve: Serve) -> None:
    header = v2_header("198.51.100.10", 40001)
    with serve(proxy_protocol=True) as server, server.connect() as client:
        assert ask(client, header[:7], header[7:20], header[20:])["client"] == "198.51.100.10"


@pytest.mark.parametrize("serve", ENGINES)
def test_proxy_unknown_keeps_the_real_peer(serve: Serve) -> None:
    with serve(proxy_protocol=True) as server, server.connect() as client:
        assert ask(client, b"PROXY UNKNOWN\r\n")["client"] == "127.0.0.1"


@pytest.mark.parametrize("serve", ENGINES)
def test_forwarded_headers_are_judged_by_the_announced_client(serve: Serve) -> None:
    # Behind a TCP-mode proxy the headers are the client's own: 198.51.100.9 is not trusted.
    with serve(proxy_protocol=True) as server, server.connect() as client:
        seen = ask(client, b"PROXY TCP4 198.51.100.9 127.0.0.1 40000 80\r\n", extra=FORWARDED)
    assert (seen["client"], seen["scheme"]) == ("198.51.100.9", "http")


@pytest.mark.parametrize("serve", ENGINES)
def test_garbage_instead_of_a_proxy_header_closes(serve: Serve) -> None:
    with serve(proxy_protocol=True) as server, server.connect() as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert is_closed(client)


@pytest.mark.parametrize("serve", ENGINES)
def test_proxy_header_from_an_untrusted_peer_closes(serve: Serve) -> None:
    with serve(proxy_protocol=True, forwarded_allow_ips=UNTRUSTED) as server, \
            server.connect() as client:
        assert is_closed(client)
