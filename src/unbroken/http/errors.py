"""Protocol errors, each carrying the status a server should answer with.

Rule: the parser raises (or reports) one of these; the connection core turns it
into a response and closes the connection. Nothing here knows about sockets.

    HTTPError                      any request the server refuses
    ├── BadRequest                 400: malformed or ambiguous framing
    ├── RequestTimeout             408: the head did not arrive in time
    ├── ContentTooLarge            413: body over max_body_size
    ├── URITooLong                 414: request line over limit_request_line
    ├── ExpectationFailed          417: an Expect other than 100-continue
    ├── HeaderFieldsTooLarge       431: a field, the field count or the block too big
    └── UnsupportedTransferCoding  501: a transfer coding other than chunked

    ResponseHeaderError            the *application* produced an unsendable header (→ 500)
"""

from __future__ import annotations

from unbroken.errors import UnbrokenError


class HTTPError(UnbrokenError):
    """A request the server refuses; `status` is what the client is told."""

    status: int = 400
    phrase: str = "Bad Request"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadRequest(HTTPError):
    status = 400
    phrase = "Bad Request"


class RequestTimeout(HTTPError):
    status = 408
    phrase = "Request Timeout"


class ContentTooLarge(HTTPError):
    status = 413
    phrase = "Content Too Large"


class URITooLong(HTTPError):
    status = 414
    phrase = "URI Too Long"


class ExpectationFailed(HTTPError):
    status = 417
    phrase = "Expectation Failed"


class HeaderFieldsTooLarge(HTTPError):
    status = 431
    phrase = "Request Header Fields Too Large"


class UnsupportedTransferCoding(HTTPError):
    status = 501
    phrase = "Not Implemented"


class ResponseHeaderError(UnbrokenError, ValueError):
    """The application gave a status or header that cannot go on the wire.

    It is the application's fault, not the client's, so it becomes a 500.
    """
