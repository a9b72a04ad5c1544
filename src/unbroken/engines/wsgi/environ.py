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


def build_environ(
    head: RequestHead,
    base: dict[str, Any],
    sockname: Any,
    peername: Any,
    forwarded: Forwarded = NOT_FORWARDED,
) -> dict[str, Any]:
    """Everything but wsgi.input, which the caller adds. `base` holds the constant keys."""
    environ = base.copy()
    mapped: dict[str, str] = {}
    for name, value in head.headers:
        key = environ_key(name)
        if key is None:
            continue
        text = value.decode("latin-1")
        if key in mapped:
            separator = "; " if key == "HTTP_COOKIE" else ","
            mapped[key] = mapped[key] + separator + text
        else:
            mapped[key] = text
    environ.update(mapped)
    path, query = split_target(head.target)
    environ["REQUEST_METHOD"] = head.method.decode("ascii")
    environ["SCRIPT_NAME"] = ""
    environ["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1")
    environ["QUERY_STRING"] = query.decode("latin-1")
    environ["RAW_URI"] = head.target.decode("latin-1")
    environ["SERVER_PROTOCOL"] = "HTTP/" + head.version
    environ.update(address_fields(sockname, peername, mapped))
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
