"""The control protocol, version 1: JSON lines over a unix stream socket.

A client sends one request line and reads reply lines until a `result`:

    -> {"v": 1, "command": "reload", "arguments": {}}
    <- {"v": 1, "kind": "progress", "message": "generation 2: 1/2 ready", "data": {...}}
    <- {"v": 1, "kind": "result", "ok": true, "message": "generation 2 serving", "data": {...}}

Commands: `status`, `reload` (replies when the new generation serves or the reload
was aborted; `details` then holds the failing worker's traceback), `stop`
(`arguments.graceful`, default true; the result comes when the master exits),
`scale` (`arguments.workers`), `history` (`data.reloads`: the last reloads, oldest
first, each with wall-clock `started_at`, `seconds`, `outcome` ok/aborted/interrupted,
`generation_before`, `generation_after`, `target` and the failure `reason`).
A request with another `v` gets `ok: false`.
Documented for users in docs/control-protocol.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

VERSION = 1
COMMANDS = ("status", "reload", "stop", "scale", "history")
MAX_REQUEST_BYTES = 64 * 1024


class ProtocolError(ValueError):
    pass


@dataclass(frozen=True)
class Request:
    command: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return _line({"v": VERSION, "command": self.command, "arguments": self.arguments})


@dataclass(frozen=True)
class Reply:
    kind: str  # "progress" or "result"
    message: str = ""
    ok: bool = True
    data: dict[str, Any] = field(default_factory=dict)
    details: str = ""

    @property
    def final(self) -> bool:
        return self.kind == "result"

    def encode(self) -> bytes:
        payload: dict[str, Any] = {"v": VERSION, "kind": self.kind, "ok": self.ok,
                                   "message": self.message, "data": self.data}
        if self.details:
            payload["details"] = self.details
        return _line(payload)


def _line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def _load(line: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProtocolError("not a JSON line") from None
    if not isinstance(payload, dict):
        raise ProtocolError("not a JSON object")
    if payload.get("v") != VERSION:
        version = payload.get("v")
        raise ProtocolError(f"unsupported protocol version {version!r} (this is {VERSION})")
    return payload


def decode_request(line: bytes) -> Request:
    payload = _load(line)
    command = payload.get("command")
    if command not in COMMANDS:
        raise ProtocolError(f"unknown command {command!r} (known: {', '.join(COMMANDS)})")
    arguments = payload.get("arguments", {})
    if not isinstance(arguments, dict):
        raise ProtocolError("arguments must be an object")
    return Request(command, arguments)


def decode_reply(line: bytes) -> Reply:
    payload = _load(line)
    return Reply(
        kind=str(payload.get("kind")),
        message=str(payload.get("message", "")),
        ok=bool(payload.get("ok")),
        data=dict(payload.get("data") or {}),
        details=str(payload.get("details", "")),
    )


def progress(message: str, **data: Any) -> Reply:
    return Reply("progress", message, True, data)


def result(ok: bool, message: str, details: str = "", **data: Any) -> Reply:
    return Reply("result", message, ok, data, details)
