"""Sans-I/O HTTP/1.1: request parsing with limits, response heads, protocol errors.

Nothing in this package touches a socket, a clock or a thread: callers pass bytes
and times in and get events and bytes out.
"""

from unbroken.http.errors import HTTPError, ResponseHeaderError
from unbroken.http.events import BodyData, Event, MessageComplete, RequestHead, RequestRejected
from unbroken.http.parser import ParserLimits, RequestParser
from unbroken.http.response import DateCache, Framing, ResponsePlan, plan_response

__all__ = [
    "BodyData",
    "DateCache",
    "Event",
    "Framing",
    "HTTPError",
    "MessageComplete",
    "ParserLimits",
    "RequestHead",
    "RequestParser",
    "RequestRejected",
    "ResponseHeaderError",
    "ResponsePlan",
    "plan_response",
]
