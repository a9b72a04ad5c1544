"""Access log lines in the combined log format, to stdout or an appended file.

Written from the loop thread after each response. `reopen` exists for logrotate:
the rotated file is renamed away, and we open a fresh one under the old name.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from unbroken.http.errors import HTTPError

if TYPE_CHECKING:
    from unbroken.engines.connection import Exchange


def _quote(value: bytes) -> str:
    """Escape what would let a client forge log lines (GHSA-33c7-2mpw-hg34)."""
    text = value.decode("latin-1")
    return text.replace("\\", "\\\\").replace('"', '\\"').encode("unicode_escape").decode("ascii")


def _remote_host(peername: Any) -> str:
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return "-"


def _timestamp(when: float) -> str:
    return time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(when))


class AccessLog:
    def __init__(self, target: str) -> None:
        self._target = target
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
        head = exchange.head
        fields = {name.lower(): value for name, value in head.headers}
        request_line = b"%s %s HTTP/%s" % (head.method, head.target, head.version.encode())
        status = str(exchange.plan.status) if exchange.plan is not None else "-"
        size = str(exchange.body_sent) if exchange.body_sent else "-"
        self._write(
            f'{_remote_host(exchange.connection.peername)} - - {_timestamp(exchange.started)} '
            f'"{_quote(request_line)}" {status} {size} '
            f'"{_quote(fields.get(b"referer", b"-"))}" "{_quote(fields.get(b"user-agent", b"-"))}"'
        )

    def log_rejection(self, peername: Any, error: HTTPError) -> None:
        when = _timestamp(time.time())
        self._write(f'{_remote_host(peername)} - - {when} "-" {error.status} - "-" "-"')

    def _write(self, line: str) -> None:
        stream = self._stream
        stream.write(line + "\n")
        stream.flush()
