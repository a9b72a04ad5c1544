"""What the request parser reports: plain, immutable facts about the byte stream.

A request is always `RequestHead`, zero or more `BodyData`, then `MessageComplete`.
`RequestRejected` is terminal: the connection must answer it and close.
"""

from __future__ import annotations

from dataclasses import dataclass

from unbroken.http.errors import HTTPError


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A complete request line and header block, already checked against every limit."""

    method: bytes
    target: bytes
    version: str  # "1.0" or "1.1": nothing else gets past the parser
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    expect_continue: bool
    content_length: int | None
    chunked: bool

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


@dataclass(frozen=True, slots=True)
class BodyData:
    data: bytes


@dataclass(frozen=True, slots=True)
class MessageComplete:
    pass


@dataclass(frozen=True, slots=True)
class RequestRejected:
    """The stream cannot be parsed further; answer `error.status` and close."""

    error: HTTPError


Event = RequestHead | BodyData | MessageComplete | RequestRejected

MESSAGE_COMPLETE = MessageComplete()
