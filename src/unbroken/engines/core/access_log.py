"""Access log lines, combined log format or JSON, to stdout or an appended file.

Written from the loop thread after each response (and for each request the parser
rejected). Every line is built from one `AccessRecord` by the formatter of the
configured format, picked once when the log is opened. `reopen` exists for
logrotate: the rotated file is renamed away, and we open a fresh one under the old name.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from unbroken.http.errors import HTTPError

if TYPE_CHECKING:
    from unbroken.engines.core.exchange import Exchange


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """What one access log line says, whatever its format. None: not known."""

    when: float  # when the request started (rejections: when it was rejected)
    remote: str | None
    method: bytes | None  # None: the parser rejected the request
    target: bytes | None
    version: str | None
    status: int | None  # None: no response was started
    size: int  # body bytes sent
    duration: float | None  # seconds
    referer: bytes | None
    user_agent: bytes | None
    request_id: bytes | None


def _quote(value: bytes) -> str:
    """Escape what would let a client forge log lines (GHSA-33c7-2mpw-hg34)."""
    # unicode_escape already doubles backslashes and escapes control bytes (so no
    # newline gets through); a quote is escaped after it, so it is not doubled again.
    escaped = value.decode("latin-1").encode("unicode_escape").decode("ascii")
    return escaped.replace('"', '\\"')


def _remote_host(peername: Any) -> str | None:
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return None


def _timestamp(when: float) -> str:
    return time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(when))


def _or_dash(value: bytes | None) -> bytes:
    return b"-" if value is None else value


def format_combined(record: AccessRecord) -> str:
    """The Apache/nginx combined log format."""
    if record.method is None:
        request = "-"
    else:
        request = _quote(b"%s %s HTTP/%s" % (record.method, record.target or b"",
                                             (record.version or "").encode()))
    status = "-" if record.status is None else str(record.status)
    size = str(record.size) if record.size else "-"
    return (
        f'{record.remote or "-"} - - {_timestamp(record.when)} "{request}" {status} {size} '
        f'"{_quote(_or_dash(record.referer))}" "{_quote(_or_dash(record.user_agent))}"'
    )


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def format_json(record: AccessRecord) -> str:
    """One JSON object per line; json.dumps escapes what could forge a line."""
    when = datetime.fromtimestamp(record.when, UTC).isoformat(timespec="milliseconds")
    fields: dict[str, Any] = {
        "time": when.replace("+00:00", "Z"),
        "remote": record.remote,
        "method": _text(record.method),
        "path": _text(record.target),
        "version": record.version,
        "status": record.status,
        "bytes": record.size,
        "duration_ms": None if record.duration is None else round(record.duration * 1000, 3),
        "referer": _text(record.referer),
        "user_agent": _text(record.user_agent),
    }
    if record.request_id is not None:
        fields["request_id"] = _text(record.request_id)
    return json.dumps(fields, separators=(",", ":"))


FORMATS: dict[str, Callable[[AccessRecord], str]] = {
    "combined": format_combined,
    "json": format_json,
}


def exchange_record(exchange: Exchange, now: float) -> AccessRecord:
    head = exchange.head
    fields = {name.lower(): value for name, value in head.headers}
    return AccessRecord(
        when=exchange.started, remote=_remote_host(exchange.connection.peername),
        method=head.method, target=head.target, version=head.version,
        status=exchange.plan.status if exchange.plan is not None else None,
        size=exchange.body_sent, duration=max(0.0, now - exchange.started),
        referer=fields.get(b"referer"), user_agent=fields.get(b"user-agent"),
        request_id=fields.get(b"x-request-id"),
    )


def rejection_record(peername: Any, error: HTTPError, now: float) -> AccessRecord:
    return AccessRecord(
        when=now, remote=_remote_host(peername), method=None, target=None, version=None,
        status=error.status, size=0, duration=None, referer=None, user_agent=None,
        request_id=None,
    )


class AccessLog:
    def __init__(self, target: str, log_format: str = "combined") -> None:
        self._target = target
        self._format = FORMATS[log_format]
        self._stream: TextIO = self._open()

    def _open(self) -> TextIO:
        if self._target == "-":
            return sys.stdout
        return open(self._target, "a", encoding="utf-8")

    def reopen(self) -> None:
        if self._target == "-":
            return
        old, self._stream = self._stream, self._open()
        old.close()

    def close(self) -> None:
        if self._target != "-":
            self._stream.close()

    def log_exchange(self, exchange: Exchange) -> None:
        self._write(self._format(exchange_record(exchange, time.time())))

    def log_rejection(self, peername: Any, error: HTTPError) -> None:
        self._write(self._format(rejection_record(peername, error, time.time())))

    def _write(self, line: str) -> None:
        stream = self._stream
        stream.write(line + "\n")
        stream.flush()
