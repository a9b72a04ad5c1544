"""Building a PEP 3333 environ from a parsed request head.

Header names containing '_' are dropped (gunicorn's `header_map=drop`): after the
CGI mapping `X-Forwarded_For` and `X-Forwarded-For` would both become
`HTTP_X_FORWARDED_FOR`, letting a client spoof what a proxy set.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import unquote_to_bytes

from unbroken.http.events import RequestHead
from unbroken.http.forwarded import NOT_FORWARDED, Forwarded, split_host

_KEY_CACHE: dict[bytes, str | None] = {}
_KEY_CACHE_LIMIT = 4096
_SPECIAL = {"CONTENT_TYPE": "CONTENT_TYPE", "CONTENT_LENGTH": "CONTENT_LENGTH"}


def environ_key(name: bytes) -> str | None:
    """`X-Thing` → `HTTP_X_THING`; None for names we refuse to map."""
    key = _KEY_CACHE.get(name)
    if key is None and name not in _KEY_CACHE:
        if b"_" in name:
            key = None
        else:
            upper = name.decode("latin-1").upper().replace("-", "_")
            key = _SPECIAL.get(upper) or "HTTP_" + upper
        if len(_KEY_CACHE) > _KEY_CACHE_LIMIT:
            _KEY_CACHE.clear()
        _KEY_CACHE[name] = key
    return key


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """Return (path, query); an absolute-form target loses its scheme and authority."""
    if not target.startswith(b"/"):
        _, separator, rest = target.partition(b"://")
        if separator:
            slash = rest.find(b"/")
            target = b"/" if slash == -1 else rest[slash:]
    path, _, query = target.partition(b"?")
    return path, query


def address_fields(sockname: Any, peername: Any, headers: dict[str, str]) -> dict[str, str]:
    """SERVER_* from our socket, REMOTE_* from the peer; AF_UNIX has no ports."""
    fields: dict[str, str] = {}
    if isinstance(sockname, tuple):
        fields["SERVER_NAME"] = str(sockname[0])
        fields["SERVER_PORT"] = str(sockname[1])
    else:
        host = headers.get("HTTP_HOST", "localhost")
        has_port = host.rfind(":") > host.rfind("]")
        name, _, port = host.rpartition(":") if has_port else (host, "", "")
        fields["SERVER_NAME"] = name or "localhost"
        fields["SERVER_PORT"] = port or "80"
    if isinstance(peername, tuple):
        fields["REMOTE_ADDR"] = str(peername[0])
        fields["REMOTE_PORT"] = str(peername[1])
    else:
        fields["REMOTE_ADDR"] = ""
    return fields


def forwarded_fields(forwarded: Forwarded, scheme: str) -> dict[str, str]:
    """The keys a trusted proxy's X-Forwarded-* headers override (http/forwarded.py)."""
    fields: dict[str, str] = {}
    if forwarded.client is not None:
        fields["REMOTE_ADDR"], fields["REMOTE_PORT"] = forwarded.client, "0"
    if forwarded.scheme is not None:
        fields["wsgi.url_scheme"] = scheme = forwarded.scheme
    if forwarded.host is not None:
        fields["HTTP_HOST"] = forwarded.host
        fields["SERVER_NAME"], fields["SERVER_PORT"] = split_host(forwarded.host, scheme)
    return fields


# The usual values, as str once: a dict read instead of a decode per request.
_METHODS = {name.encode(): name for name in
            ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}  # fmt: skip
_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}


def connection_environ(base: dict[str, Any], sockname: Any, peername: Any) -> dict[str, Any]:
    """What every request on one connection shares: `base` and the addresses. Built at a
    connection's first request; each request's environ starts as a copy of it."""
    template = {**base, "SCRIPT_NAME": ""}
    template.update(address_fields(sockname, peername, {}))
    return template


def build_environ(
    head: RequestHead,
    template: dict[str, Any],
    forwarded: Forwarded = NOT_FORWARDED,
    *,
    server_from_host: bool = False,
) -> dict[str, Any]:
    """Everything but wsgi.input, which the caller adds. `template` is the connection's
    (`connection_environ`); with `server_from_host` (a socket with no address of its
    own, AF_UNIX), SERVER_NAME and SERVER_PORT come from the Host field instead."""
    environ = template.copy()
    keys = _KEY_CACHE
    for name, value in head.headers:
        key = keys.get(name) or environ_key(name)
        if key is None:
            continue
        text = value.decode("latin-1")
        # No key of the template is HTTP_* or CONTENT_*: one already here is a repeat.
        if key in environ:
            separator = "; " if key == "HTTP_COOKIE" else ","
            environ[key] = environ[key] + separator + text
        else:
            environ[key] = text
    target = head.target
    if target[:1] == b"/":  # origin-form, the usual case: split_target inline
        path, _, query = target.partition(b"?")
    else:
        path, query = split_target(target)
    environ["REQUEST_METHOD"] = _METHODS.get(head.method) or head.method.decode("ascii")
    environ["PATH_INFO"] = (unquote_to_bytes(path) if b"%" in path else path).decode("latin-1")
    environ["QUERY_STRING"] = query.decode("latin-1")
    environ["RAW_URI"] = target.decode("latin-1")
    environ["SERVER_PROTOCOL"] = _PROTOCOLS.get(head.version) or "HTTP/" + head.version
    if server_from_host:
        host_fields = address_fields(None, None, environ)
        environ["SERVER_NAME"], environ["SERVER_PORT"] = (host_fields["SERVER_NAME"],
                                                          host_fields["SERVER_PORT"])
    if forwarded is not NOT_FORWARDED:
        environ.update(forwarded_fields(forwarded, environ["wsgi.url_scheme"]))
    return environ


def base_environ(url_scheme: str, threads: int, file_wrapper: type) -> dict[str, Any]:
    return {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url_scheme,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": threads > 1,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": file_wrapper,
        "SERVER_SOFTWARE": "unbroken",
    }
