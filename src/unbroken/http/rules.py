"""Checks llhttp leaves to us: the rejections gunicorn 27 makes and we must match.

Rule: every function here is pure and raises an `HTTPError` subclass; the parser
calls them at the moment the bytes they judge are known. See HTTP-HARDENING.md §1.6.
"""

from __future__ import annotations

import re

from unbroken.http.errors import (
    BadRequest,
    ExpectationFailed,
    UnsupportedTransferCoding,
)

SUPPORTED_VERSIONS = frozenset({"1.0", "1.1"})

# RFC 9110 §6.5.1: fields that frame or route a message must not arrive as trailers.
FORBIDDEN_TRAILERS = frozenset(
    {b"content-length", b"transfer-encoding", b"host", b"content-type", b"trailer", b"expect"}
)

# RFC 9110 §5.3: a second copy of these cannot be combined into one meaning.
SINGLETON_FIELDS = frozenset({b"host", b"content-type", b"content-length"})


def check_transfer_encoding(value: bytes) -> None:
    """Only `chunked`, alone, is a transfer coding we implement (RFC 9112 §6.1 → 501)."""
    if value.strip().lower() != b"chunked":
        raise UnsupportedTransferCoding(f"unsupported transfer coding {value[:40]!r}")


def check_version(version: str, chunked: bool) -> None:
    """HTTP/2.0 or 0.9 in an HTTP/1 request line is a confused or hostile client."""
    if version not in SUPPORTED_VERSIONS:
        raise BadRequest(f"unsupported HTTP version {version}")
    if chunked and version == "1.0":
        raise BadRequest("chunked transfer coding on HTTP/1.0")


def check_target(method: bytes, target: bytes) -> None:
    """Each request-target form is legal with one kind of method only (RFC 9112 §3.2)."""
    if b"#" in target:
        raise BadRequest("fragment in request target")
    if method == b"CONNECT":
        # A tunnel is a proxy's job; an origin server that passed it on would hand the
        # app a request it cannot answer (uvicorn refuses it too).
        raise BadRequest("CONNECT is not supported: unbroken is an origin server, not a proxy")
    if target == b"*":
        if method != b"OPTIONS":
            raise BadRequest("asterisk-form target outside OPTIONS")
        return
    if target.startswith(b"/"):
        return
    scheme, separator, _ = target.partition(b"://")
    if not separator or scheme.lower() not in (b"http", b"https"):
        raise BadRequest("request target is neither origin-form nor absolute-form")


# RFC 9110 §7.2: Host = uri-host [ ":" port ]; uri-host is an IP-literal in brackets, an
# IPv4 address or a reg-name (unreserved, pct-encoded, sub-delims); port is digits.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")


def check_host(value: bytes) -> None:
    if _HOST.fullmatch(value) is None:
        raise BadRequest("Host is not a valid uri-host[:port]")


def check_singletons(counts: dict[bytes, int], version: str) -> None:
    """Duplicate Host or Content-Type is ambiguous; HTTP/1.1 requires Host.

    `counts` holds how often each of SINGLETON_FIELDS came (others may be absent).
    """
    for name, count in counts.items():
        if count > 1 and name in SINGLETON_FIELDS:
            raise BadRequest(f"duplicate {name.decode()} header")
    if version == "1.1" and not counts.get(b"host"):
        raise BadRequest("missing Host header")


def expects_continue(value: bytes | None, version: str) -> bool:
    """`Expect: 100-continue` is the only expectation defined (RFC 9110 §10.1.1)."""
    if value is None:
        return False
    if value.strip().lower() != b"100-continue":
        raise ExpectationFailed(f"unsupported expectation {value[:40]!r}")
    return version == "1.1"


def check_trailer(name: bytes) -> None:
    if name.lower() in FORBIDDEN_TRAILERS:
        raise BadRequest(f"forbidden trailer field {name[:40]!r}")
