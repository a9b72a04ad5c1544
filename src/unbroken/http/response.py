"""Turning an application's status and headers into bytes for the wire.

Rules:
1. Whatever the application gives is checked: a CR, LF or NUL in a header would
   split the response (CWE-113), so it raises `ResponseHeaderError` (→ 500).
2. Framing is decided here, once: Content-Length when known, chunked on HTTP/1.1,
   close-delimited on HTTP/1.0; no body for HEAD, 1xx, 204 and 304.
3. The `Connection` header is *not* written here: the connection core adds it at
   the moment the head is sent, because only then does it know whether a drain
   has begun or another pipelined request waits.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from unbroken.http.errors import ResponseHeaderError

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_FORBIDDEN_VALUE_BYTES = re.compile(rb"[\r\n\x00]")

# Hop-by-hop fields belong to the server (PEP 3333 forbids applications to send them).
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)


class Framing(enum.Enum):
    LENGTH = "content-length"
    CHUNKED = "chunked"
    CLOSE = "close-delimited"
    NONE = "no body"


# The members as module globals, as engines/core/states.py has its states: `Framing.LENGTH`
# is a lookup through the enum's metaclass in Python 3.11 (about 150 ns here), and the
# per-request path reads several.
LENGTH, CHUNKED, CLOSE, NONE = Framing


@dataclass(slots=True)
class ResponsePlan:
    """A response head ready to send, and how its body must be framed.

    Not frozen: a frozen dataclass pays `object.__setattr__` per field, per response.
    """

    status: int
    head: bytes  # status line and fields, each ending in CRLF; no blank line yet
    framing: Framing
    content_length: int | None
    must_close: bool


class DateCache:
    """The `Date` field, formatted at most once per second (it is on every response).

    Threads may race on the refresh; each writes a correct value, so no lock.
    """

    def __init__(self) -> None:
        self._cached: tuple[int, bytes] = (-1, b"")

    def field(self, now: float) -> bytes:
        second = int(now)
        cached = self._cached
        if cached[0] != second:
            line = b"date: " + http_date(second).encode("ascii") + b"\r\n"
            cached = self._cached = (second, line)
        return cached[1]


_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(seconds: float) -> str:
    """IMF-fixdate (RFC 9110 §5.6.7), in English whatever the locale; email.utils
    would do it too, but importing the email package costs every worker memory."""
    t = time.gmtime(seconds)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")


def status_line(status: int, reason: bytes) -> bytes:
    line = _STATUS_LINES.get((status, reason))
    if line is None:
        if not 100 <= status <= 999 or _FORBIDDEN_VALUE_BYTES.search(reason):
            raise ResponseHeaderError(f"invalid status {status} {reason[:60]!r}")
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if len(_STATUS_LINES) < _CACHE_LIMIT:
            _STATUS_LINES[(status, reason)] = line
    return line


def body_allowed(status: int, request_method: bytes) -> bool:
    return request_method != b"HEAD" and status >= 200 and status not in (204, 304)


class _Role(enum.Enum):
    """What a response field name means to the server."""

    PLAIN = 0
    HOP_BY_HOP = 1  # dropped: the server writes its own framing and Connection
    CONNECTION = 2  # dropped too, but `close` in it is obeyed
    CONTENT_LENGTH = 3
    DATE = 4


# Names repeat across responses (content-type, content-length...): each is validated
# and classified once, then looked up. Bounded, so random names cannot grow it.
_CACHE_LIMIT = 1024
_ROLES: dict[bytes, _Role] = {}


def _role(name: bytes) -> _Role:
    role = _ROLES.get(name)
    if role is None:
        if not _TOKEN.match(name):
            raise ResponseHeaderError(f"invalid response header name {name[:60]!r}")
        lowered = name.lower()
        if lowered == b"connection":
            role = _Role.CONNECTION
        elif lowered in HOP_BY_HOP:
            role = _Role.HOP_BY_HOP
        elif lowered == b"content-length":
            role = _Role.CONTENT_LENGTH
        elif lowered == b"date":
            role = _Role.DATE
        else:
            role = _Role.PLAIN
        if len(_ROLES) < _CACHE_LIMIT:
            _ROLES[name] = role
    return role


@dataclass(frozen=True, slots=True)
class HeadFields:
    """The application's part of a response head, checked: what does not depend on the
    request or the moment, so an engine may keep it for the next response with the same
    status and headers (`HeadCache`)."""

    status: int
    lines: bytes  # the status line and the application's fields, each ending in CRLF
    content_length: int | None
    has_date: bool
    must_close: bool  # the application said `Connection: close`


def head_fields(status: int, reason: bytes, headers: Iterable[tuple[bytes, bytes]]) -> HeadFields:
    """Validate the application's status and fields (rule 1) and classify them.

    Values are checked for CR, LF and NUL once, on the joined lines: every line we
    write ends in exactly one CRLF, so any other CR or LF came from a value.
    """
    parts = [status_line(status, reason)]
    content_length: int | None = None
    must_close = False
    has_date = False
    roles = _ROLES
    for name, value in headers:
        role = roles.get(name) or _role(name)
        if role is _Role.PLAIN:
            parts.append(b"%s: %s\r\n" % (name, value))
        elif role is _Role.CONTENT_LENGTH:
            if not value.isdigit():
                raise ResponseHeaderError(f"invalid Content-Length {value[:40]!r}")
            content_length = int(value)
            parts.append(b"%s: %s\r\n" % (name, value))
        elif role is _Role.DATE:
            has_date = True
            parts.append(b"%s: %s\r\n" % (name, value))
        elif role is _Role.CONNECTION:
            _check_value(name, value)
            must_close = must_close or b"close" in value.lower()
    lines = b"".join(parts)
    count = len(parts)
    if lines.count(b"\n") != count or lines.count(b"\r") != count or b"\0" in lines:
        for line in parts:
            if line.count(b"\n") != 1 or line.count(b"\r") != 1 or b"\0" in line:
                name = line.split(b":", 1)[0]
                raise ResponseHeaderError(f"CR, LF or NUL in response header {name[:60]!r}")
    return HeadFields(status, lines, content_length, has_date, must_close)


class HeadCache:
    """`HeadFields` by a key the engine makes of the application's status and headers
    as it gave them (WSGI: str pairs, before encoding), so the usual response skips
    the encoding, the checks and the join. Bounded: when full it starts afresh, so
    heads that vary per response (a cookie, an ETag) cost a miss, never memory.

    Threads share it without a lock: each entry is immutable and a dict operation is
    atomic; a race can only cost a miss.
    """

    LIMIT = 256

    def __init__(self) -> None:
        self._entries: dict[object, HeadFields] = {}
        self.get = self._entries.get

    def put(self, key: object, fields: HeadFields) -> None:
        entries = self._entries
        if len(entries) >= self.LIMIT:
            entries.clear()
        entries[key] = fields


def plan_response(
    status: int,
    reason: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    *,
    request_method: bytes,
    request_version: str,
    date_field: bytes,
    length_hint: int | None = None,
) -> ResponsePlan:
    """Validate the application's head and decide the framing.

    `length_hint` is the body length when the server knows it (a list body, a
    file) and the application did not say; it becomes a Content-Length field.
    """
    return plan_head(head_fields(status, reason, headers), request_method=request_method,
                     request_version=request_version, date_field=date_field,
                     length_hint=length_hint)  # fmt: skip


def plan_head(
    fields: HeadFields,
    *,
    request_method: bytes,
    request_version: str,
    date_field: bytes,
    length_hint: int | None = None,
) -> ResponsePlan:
    """The framing of a checked head for this request (rule 2), with `Date` added unless
    the application gave one."""
    status = fields.status
    content_length = fields.content_length
    date = b"" if fields.has_date else date_field
    if status == 200 and request_method != b"HEAD" and (
            content_length is not None or length_hint is not None):
        framing = LENGTH  # the usual cases, decided without _framing's branches
        if content_length is None and length_hint is not None:
            head = b"%s%scontent-length: %d\r\n" % (fields.lines, date, length_hint)
            content_length = length_hint
        else:
            head = fields.lines + date
    else:
        framing, extra = _framing(
            status, request_method, request_version, content_length, length_hint)
        head = fields.lines + date + extra
        if framing is LENGTH and content_length is None:
            content_length = length_hint
    return ResponsePlan(status, head, framing, content_length,
                        fields.must_close or framing is CLOSE)


def _check_value(name: bytes, value: bytes) -> None:
    if _FORBIDDEN_VALUE_BYTES.search(value):
        raise ResponseHeaderError(f"CR, LF or NUL in response header {name[:60]!r}")


def _framing(
    status: int,
    request_method: bytes,
    request_version: str,
    content_length: int | None,
    length_hint: int | None,
) -> tuple[Framing, bytes]:
    """Return the body framing and any field it needs added."""
    if not body_allowed(status, b"GET"):
        return NONE, b""
    if content_length is None and length_hint is not None:
        extra = b"content-length: %d\r\n" % length_hint
        return _no_body_for_head(request_method, LENGTH), extra
    if content_length is not None:
        return _no_body_for_head(request_method, LENGTH), b""
    if request_method == b"HEAD":
        return NONE, b""
    if request_version == "1.1":
        return CHUNKED, b"transfer-encoding: chunked\r\n"
    return CLOSE, b""


def _no_body_for_head(request_method: bytes, framing: Framing) -> Framing:
    return NONE if request_method == b"HEAD" else framing


def error_response(status: int, phrase: str, date_field: bytes) -> bytes:
    """A complete, self-contained response that also closes the connection."""
    body = f"{status} {phrase}\n".encode("ascii")
    return (
        b"HTTP/1.1 %d %s\r\n%scontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s"
        % (status, phrase.encode("ascii"), date_field, len(body), body)
    )


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
