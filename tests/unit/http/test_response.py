"""plan_response: framing decisions and the checks that keep an app from splitting a response."""

from __future__ import annotations

import pytest

from unbroken.http.errors import ResponseHeaderError
from unbroken.http.response import (
    Framing,
    HeadCache,
    head_fields,
    http_date,
    plan_head,
    plan_response,
)

DATE = b"date: Mon, 23 Nov 2026 22:00:00 GMT\r\n"


def plan(status: int = 200, headers: object = (), method: bytes = b"GET",
         version: str = "1.1", hint: int | None = None):  # type: ignore[no-untyped-def]
    return plan_response(status, b"OK", headers,  # type: ignore[arg-type]
                         request_method=method, request_version=version,
                         date_field=DATE, length_hint=hint)


def test_known_length_becomes_content_length() -> None:
    result = plan(headers=[(b"Content-Type", b"text/plain")], hint=5)
    assert result.framing is Framing.LENGTH and result.content_length == 5
    assert result.head == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + DATE
                           + b"content-length: 5\r\n")


def test_framing_choices() -> None:
    assert plan().framing is Framing.CHUNKED
    assert plan(version="1.0").framing is Framing.CLOSE and plan(version="1.0").must_close
    assert plan(method=b"HEAD", hint=5).framing is Framing.NONE
    assert plan(status=204).framing is Framing.NONE
    assert plan(status=404, hint=3).framing is Framing.LENGTH
    declared = plan(headers=[(b"content-length", b"7")], hint=3)
    assert declared.content_length == 7 and declared.head.count(b"content-length") == 1


def test_server_owned_fields_are_dropped_and_date_kept() -> None:
    result = plan(headers=[(b"Connection", b"close"), (b"Transfer-Encoding", b"chunked"),
                           (b"Date", b"yesterday")], hint=0)
    assert result.must_close
    assert b"onnection" not in result.head and b"chunked" not in result.head
    assert b"Date: yesterday\r\n" in result.head and DATE not in result.head


@pytest.mark.parametrize("value", [b"a\r\nSet-Cookie: x=y", b"a\nb", b"a\rb", b"a\x00b"])
def test_control_bytes_in_a_value_are_refused(value: bytes) -> None:
    with pytest.raises(ResponseHeaderError, match="X-Evil"):
        plan(headers=[(b"X-Evil", value)], hint=0)
    # Also when the headers come as a one-shot iterable (ASGI allows any iterable).
    with pytest.raises(ResponseHeaderError):
        plan(headers=iter([(b"X-Evil", value)]), hint=0)


@pytest.mark.parametrize("name", [b"X Evil", b"X:Evil", b"", b"X\r\nEvil"])
def test_bad_names_are_refused(name: bytes) -> None:
    with pytest.raises(ResponseHeaderError):
        plan(headers=[(name, b"v")], hint=0)


def test_bad_status_or_length_is_refused() -> None:
    with pytest.raises(ResponseHeaderError):
        plan_response(200, b"OK\r\nX: y", [], request_method=b"GET", request_version="1.1",
                      date_field=DATE)
    with pytest.raises(ResponseHeaderError):
        plan(headers=[(b"Content-Length", b"-1")])


def test_http_date_matches_the_email_package() -> None:
    from email.utils import formatdate

    for seconds in (0, 951782400, 1795000000, 4102444799, 1700000000):
        assert http_date(seconds) == formatdate(seconds, usegmt=True)


def test_checked_fields_plan_alike_for_every_request() -> None:
    """head_fields once, plan_head per request: what plan_response gives each time."""
    headers = [(b"Content-Type", b"text/plain"), (b"Content-Length", b"5")]
    fields = head_fields(200, b"OK", headers)
    for method, version, hint in ((b"GET", "1.1", 5), (b"HEAD", "1.1", None), (b"GET", "1.0", 5)):
        kwargs = {"request_method": method, "request_version": version, "date_field": DATE,
                  "length_hint": hint}
        assert plan_head(fields, **kwargs) == plan_response(200, b"OK", headers, **kwargs)


def test_head_cache_starts_afresh_when_full() -> None:
    cache = HeadCache()
    fields = head_fields(204, b"No Content", [])
    for number in range(HeadCache.LIMIT):
        cache.put(number, fields)
    assert cache.get(0) is fields
    cache.put("one more", fields)
    assert cache.get(0) is None and cache.get("one more") is fields
