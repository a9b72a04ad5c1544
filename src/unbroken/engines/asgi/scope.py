"""ASGI connection scopes built from a parsed request head (ASGI 3.0, spec 2.4).

Kept apart from the cycles so that the HTTP and WebSocket paths share one
definition of `path`, `headers`, `client` and `server`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from unbroken.engines.core.exchange import Exchange
from unbroken.engines.wsgi.environ import split_target
from unbroken.http.forwarded import NOT_FORWARDED

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
WEBSOCKET_SCHEMES = {"http": "ws", "https": "wss"}
_METHODS = {name.encode(): name for name in
            ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}  # fmt: skip


def _address(address: Any) -> tuple[Any, ...] | None:
    """TCP addresses become (host, port); a unix socket has none worth reporting."""
    if isinstance(address, tuple) and len(address) >= 2:
        return address[:2]
    return None


def _path_fields(target: bytes) -> tuple[str, bytes, bytes]:
    """`path` (percent-decoded, UTF-8 with surrogate escapes), `raw_path`, `query_string`."""
    if target[:1] == b"/":  # origin-form, the usual case: split_target inline
        raw_path, _, query = target.partition(b"?")
    else:
        raw_path, query = split_target(target)
    path = raw_path.decode("latin-1")
    if "%" in path:
        path = unquote(path, encoding="utf-8", errors="surrogateescape")
    return path, raw_path, query


def _headers(exchange: Exchange) -> list[tuple[bytes, bytes]]:
    """The parser's own list (names already lowercased, made for this request alone)."""
    headers = exchange.head.headers
    host = exchange.forwarded.host
    if host is not None:  # a trusted proxy's X-Forwarded-Host (http/forwarded.py)
        headers = [(name, value) for name, value in headers if name != b"host"]
        headers.append((b"host", host.encode("latin-1")))
    return headers


def connection_scope(kind: str, exchange: Exchange, scheme: str,
                     state: dict[str, Any]) -> dict[str, Any]:
    """The fields an `http` and a `websocket` scope have in common.

    `scheme` is http or https; a trusted proxy's X-Forwarded-Proto overrides it.
    """
    head = exchange.head
    connection = exchange.connection
    forwarded = exchange.forwarded
    path, raw_path, query = _path_fields(head.target)
    scheme = forwarded.scheme or scheme
    client = _address(connection.peername)
    if forwarded.client is not None:
        client = (forwarded.client, 0)
    return {
        "type": kind,
        "asgi": ASGI_VERSION,
        "http_version": head.version,
        "scheme": WEBSOCKET_SCHEMES.get(scheme, "ws") if kind == "websocket" else scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": head.headers if forwarded.host is None else _headers(exchange),
        "client": client,
        "server": _address(connection.sockname),
        "state": state.copy(),
    }


def http_scope(exchange: Exchange, scheme: str, state: dict[str, Any]) -> dict[str, Any]:
    if exchange.forwarded is not NOT_FORWARDED:
        scope = connection_scope("http", exchange, scheme, state)
        scope["method"] = exchange.head.method.decode("ascii")
        return scope
    # The usual request: a copy of what every request on its connection shares (made at
    # the first), and the request's own fields.
    connection = exchange.connection
    template: dict[str, Any] | None = connection.engine_template
    if template is None:
        connection.engine_template = template = {
            "type": "http", "asgi": ASGI_VERSION, "scheme": scheme, "root_path": "",
            "client": _address(connection.peername), "server": _address(connection.sockname),
        }  # fmt: skip
    head = exchange.head
    path, raw_path, query = _path_fields(head.target)
    scope = template.copy()
    scope["http_version"] = head.version
    scope["path"] = path
    scope["raw_path"] = raw_path
    scope["query_string"] = query
    scope["headers"] = head.headers
    scope["state"] = state.copy()
    scope["method"] = _METHODS.get(head.method) or head.method.decode("ascii")
    return scope


def websocket_scope(exchange: Exchange, scheme: str, state: dict[str, Any],
                    subprotocols: list[str]) -> dict[str, Any]:
    scope = connection_scope("websocket", exchange, scheme, state)
    scope["subprotocols"] = subprotocols
    scope["extensions"] = {}
    return scope


def is_websocket_upgrade(exchange: Exchange) -> bool:
    """A GET asking `Upgrade: websocket` with `Connection: upgrade` (RFC 6455 §4.2.1)."""
    head = exchange.head
    if head.upgrade is None or head.method != b"GET":
        return False  # the parser noted the Upgrade field: most requests stop here
    upgrade = connection = False
    for name, value in head.headers:
        if name == b"upgrade":
            upgrade = upgrade or b"websocket" in value.lower()
        elif name == b"connection":
            connection = connection or b"upgrade" in value.lower()
    return upgrade and connection
