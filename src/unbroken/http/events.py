"""What the request parser reports: plain, immutable facts about the byte stream.

A request is always `RequestHead`, zero or more `BodyData`, then `MessageComplete`.
`RequestRejected` is terminal: the connection must answer it and close.
"""

from __future__ import annotations

from dataclasses import dataclass

from unbroken.http.errors import HTTPError


@dataclass(slots=True)
class RequestHead:
    """A complete request line and header block, already checked against every limit.

    Not frozen only because a frozen dataclass pays `object.__setattr__` per field on
    every request; nothing writes to it after the parser. Header names are lowercased
    (as in h11 and ASGI), so no consumer lowers them again.
    """

    method: bytes
    target: bytes
    version: str  # "1.0" or "1.1": nothing else gets past the parser
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    expect_continue: bool
    content_length: int | None
    chunked: bool
    # Noted while parsing so the per-request path need not scan the headers again:
    # the Upgrade field's value, and whether any X-Forwarded-* field came.
    upgrade: bytes | None = None
    forwarded: bool = False
    has_body: bool = False  # chunked, or a Content-Length above 0 (the parser says which)


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
