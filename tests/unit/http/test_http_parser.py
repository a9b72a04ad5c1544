"""The request parser on its own: corpus verdicts, split invariance, exact limits."""

from __future__ import annotations

import pytest
from parser_harness import (
    CORPUS_DIR,
    LIMITS,
    load_module,
    normalise,
    parse,
    parse_under_every_split,
    splits,
)

from unbroken.http.events import (
    MESSAGE_COMPLETE,
    BodyData,
    MessageComplete,
    RequestHead,
    RequestRejected,
)
from unbroken.http.parser import ParserLimits, RequestParser

CORPUS = load_module(CORPUS_DIR / "http_requests.py", "unbroken_http_corpus")


def requests_of(events: list[object]) -> list[tuple[bytes, bytes, bytes]]:
    found: list[tuple[bytes, bytes, bytes]] = []
    for event in events:
        if isinstance(event, RequestHead):
            found.append((event.method, event.target, b""))
        elif isinstance(event, bytes):
            method, target, body = found[-1]
            found[-1] = (method, target, body + event)
    return found


@pytest.mark.parametrize(
    ("name", "raw", "expected"), CORPUS.VALID, ids=[case[0] for case in CORPUS.VALID]
)
def test_valid_requests_parse_identically_under_every_split(
    name: str, raw: bytes, expected: list[tuple[bytes, bytes, bytes]]
) -> None:
    reference = parse([raw])
    assert requests_of(reference) == expected
    assert not any(isinstance(e, tuple) for e in reference)
    assert sum(isinstance(e, MessageComplete) for e in reference) == len(expected)
    for seed, pieces in enumerate(splits(raw, seed=len(name))):
        assert parse(pieces) == reference, f"split #{seed} differs"


@pytest.mark.parametrize(
    ("name", "raw", "status"), CORPUS.INVALID, ids=[case[0] for case in CORPUS.INVALID]
)
def test_invalid_requests_get_their_status_under_every_split(
    name: str, raw: bytes, status: int
) -> None:
    reference = parse([raw])
    assert reference[-1] == ("rejected", status)
    for seed, pieces in enumerate(splits(raw, seed=len(name))):
        assert parse(pieces) == reference, f"split #{seed} differs"


def test_garbage_after_a_valid_request_keeps_the_request() -> None:
    events = parse([b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nNONSENSE\r\n\r\n"])
    assert isinstance(events[0], RequestHead) and events[0].target == b"/first"
    assert isinstance(events[1], MessageComplete)
    assert events[2] == ("rejected", 400)


def test_nothing_is_parsed_after_a_rejection() -> None:
    parser = RequestParser(LIMITS)
    assert isinstance(parser.feed(b"BAD\r\n\r\n")[-1], RequestRejected)
    assert parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == []


def head_of(raw: bytes) -> RequestHead:
    event = RequestParser(LIMITS).feed(raw)[0]
    assert isinstance(event, RequestHead)
    return event


def test_head_fields() -> None:
    head = head_of(
        b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    )
    assert head.method == b"PUT" and head.version == "1.1"
    assert head.headers == [  # names lowercased, values as sent
        (b"host", b"a"),
        (b"expect", b"100-continue"),
        (b"content-length", b"3"),
    ]
    assert head.expect_continue and head.keep_alive and head.content_length == 3
    assert not head_of(b"GET / HTTP/1.0\r\n\r\n").keep_alive
    assert not head_of(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive
    assert head_of(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").chunked


def test_noted_fields() -> None:
    head = head_of(
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: upgrade\r\n\r\n"
    )
    assert head.upgrade == b"websocket" and not head.forwarded
    head = head_of(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n")
    assert head.forwarded and head.upgrade is None


def test_upgrade_requests_are_served_then_closed() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nPRI * HTTP/2.0"
    events = parse([raw])
    assert isinstance(events[0], RequestHead) and not events[0].keep_alive
    assert events[1:] == [MessageComplete()]


# ------------------------------------------------------------------ limits


def limited(**fields: int) -> ParserLimits:
    return ParserLimits(**fields)  # type: ignore[arg-type]


def status_for(raw: bytes, limits: ParserLimits) -> int | None:
    """The rejection status, checked to be the same whole and byte by byte."""
    whole = parse([raw], limits)
    assert parse([raw[i : i + 1] for i in range(len(raw))], limits) == whole
    last = whole[-1]
    return last[1] if isinstance(last, tuple) else None


def request_with_line_of(length: int) -> bytes:
    prefix, suffix = b"GET /", b" HTTP/1.1"
    return prefix + b"a" * (length - len(prefix) - len(suffix)) + suffix + b"\r\nHost: a\r\n\r\n"


def test_request_line_limit_is_exact() -> None:
    limits = limited(request_line=100)
    assert status_for(request_with_line_of(100), limits) is None
    assert status_for(request_with_line_of(101), limits) == 414


def test_request_line_limit_fires_before_the_line_ends() -> None:
    parser = RequestParser(limited(request_line=100))
    assert normalise(parser.feed(b"GET /" + b"a" * 200)) == [("rejected", 414)]


def header_line_of(length: int) -> bytes:
    return b"X: " + b"v" * (length - 3) + b"\r\n"


def test_field_size_limit_is_exact() -> None:
    limits = limited(field_size=50)
    ok = b"GET / HTTP/1.1\r\nHost: a\r\n" + header_line_of(50) + b"\r\n"
    too_big = b"GET / HTTP/1.1\r\nHost: a\r\n" + header_line_of(51) + b"\r\n"
    assert status_for(ok, limits) is None
    assert status_for(too_big, limits) == 431


def test_field_count_limit_is_exact() -> None:
    limits = limited(fields=5)
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(4))
    assert status_for(b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n", limits) is None
    assert status_for(b"GET / HTTP/1.1\r\nHost: a\r\nY: z\r\n" + fields + b"\r\n", limits) == 431


def test_header_block_limit_is_exact() -> None:
    limits = limited(header_block=100)
    block = b"Host: a\r\n" + header_line_of(100 - 9 - 2)  # 9 + 89 + 2 = 100 bytes
    assert len(block) == 100
    assert status_for(b"GET / HTTP/1.1\r\n" + block + b"\r\n", limits) is None
    bigger = b"Host: a\r\n" + header_line_of(100 - 9 - 1)
    assert status_for(b"GET / HTTP/1.1\r\n" + bigger + b"\r\n", limits) == 431


def test_declared_body_over_the_cap_is_413_before_any_body() -> None:
    limits = limited(max_body_size=10)
    head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n"
    assert parse([head], limits) == [("rejected", 413)]
    ok = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n" + b"x" * 10
    assert parse([ok], limits)[-1] == MessageComplete()


CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_chunked_body_over_the_cap_is_413_at_the_size_that_crosses_it() -> None:
    limits = limited(max_body_size=10)
    raw = CHUNKED_HEAD + b"6\r\nxxxxxx\r\n" * 2
    # The same body bytes before the refusal under every split (rule 2): the second
    # size line announces the byte over the cap, so its data never reaches the app.
    events = parse_under_every_split(raw, limits)
    assert events[1:] == [b"xxxxxx", ("rejected", 413)]
    ok = CHUNKED_HEAD + b"6\r\nxxxxxx\r\n4\r\nxxxx\r\n0\r\n\r\n"
    assert parse_under_every_split(ok, limits)[-1] == MessageComplete()


def chunked_with_extension(length: int) -> bytes:
    return CHUNKED_HEAD + b"1;" + b"e" * (length - 1) + b"\r\nx\r\n0\r\n\r\n"


def test_chunk_extension_limit_is_exact() -> None:
    limits = limited(chunk_extensions=10)
    assert status_for(chunked_with_extension(10), limits) is None
    assert status_for(chunked_with_extension(11), limits) == 400
    # Counted over the whole message: 3 + 3 + 4 fits, one byte more does not.
    three = b"1;ab\r\nx\r\n"
    assert status_for(CHUNKED_HEAD + three * 2 + b"0;abc\r\n\r\n", limits) is None
    assert status_for(CHUNKED_HEAD + three * 2 + b"0;abcd\r\n\r\n", limits) == 400


def test_chunk_extension_limit_fires_before_the_line_ends() -> None:
    parser = RequestParser(limited(chunk_extensions=100))
    events = normalise(parser.feed(CHUNKED_HEAD + b"1;" + b"e" * 500))
    assert events[-1] == ("rejected", 400)


def test_chunk_metadata_is_bounded_even_with_a_body_byte_in_each_chunk() -> None:
    # The old count restarted at every body byte: 1 byte of data per chunk let the
    # extensions of one message grow without end.
    chunk = b"1;" + b"e" * 1000 + b"\r\nx\r\n"
    events = parse_under_every_split(CHUNKED_HEAD + chunk * 5)
    assert events[-1] == ("rejected", 400)
    assert events[1] == b"xxxx"  # four chunks fit in 4 KiB, the fifth's extension does not


def test_trailer_section_limit_is_exact() -> None:
    limits = limited(header_block=100, field_size=200)
    field = b"X: " + b"v" * 95 + b"\r\n"  # 100 bytes with its CRLF
    assert status_for(CHUNKED_HEAD + b"0\r\n" + field + b"\r\n", limits) is None
    bigger = b"X: " + b"v" * 96 + b"\r\n"
    assert status_for(CHUNKED_HEAD + b"0\r\n" + bigger + b"\r\n", limits) == 431


def test_twenty_thousand_one_byte_chunks_then_a_pipelined_get() -> None:
    raw = CHUNKED_HEAD + b"1\r\nx\r\n" * 20000 + b"0\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n"
    for pieces in ([raw], [raw[i : i + 4096] for i in range(0, len(raw), 4096)]):
        events = parse(pieces)
        assert events[1] == b"x" * 20000
        assert isinstance(events[3], RequestHead) and events[3].target == b"/next"
        assert events[2::2] == [MessageComplete(), MessageComplete()]


def test_huge_trailers_are_431() -> None:
    raw = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(100))
        + b"\r\n"
    )
    assert parse([raw], limited(header_block=8000))[-1] == ("rejected", 431)


def test_url_over_64_kib_is_414_not_truncated() -> None:
    raw = b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert parse([raw])[-1] == ("rejected", 414)


def test_whitespace_around_a_value_is_not_part_of_it() -> None:
    # RFC 9112 §5: field-line = field-name ":" OWS field-value OWS. llhttp strips the
    # OWS before a value only; a Host with a trailing space was refused as not uri-host.
    head = head_of(b"GET / HTTP/1.1\r\nHost: h \t\r\nName: \t value \t \r\n\r\n")
    assert head.headers == [(b"host", b"h"), (b"name", b"value")]


# ------------------------------------------------------ the plain-head shortcut (rule 6)

PLAIN_HEADS = [
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"HEAD /a/b?c=d&e=%41 HTTP/1.1\r\nhost:h:8080\r\nAccept: */*\r\nX-Forwarded-For: 1.2.3.4\r\n"
    b"Connection: Keep-Alive\r\nContent-Type: text/plain\r\nUser-Agent: a b\t \r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    # Connection-per-request clients (wrk -H "Connection: close", nginx's default
    # proxy_http_version 1.0): the bytes after such a message are ignored either way.
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: CLOSE\r\nConnection: keep-alive\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",  # Host is optional in 1.0
    b"GET / HTTP/1.0\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: h\r\nConnection: Keep-Alive\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
    b"POST / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
]
NOT_PLAIN_HEADS = [
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close, te\r\n\r\n",  # a list of tokens
    b"GET / HTTP/1.0\r\nHost: h\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: bad host\r\n\r\n",
    b"POST / HTTP/1.0\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nhi",
    b"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",  # a repeated Host: 400
    b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",  # no Host: 400
    b"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n",  # a Host of the shortcut, refused all the same
    b"GET /#f HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0000000000000000002\r\n\r\nhi",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi",
    b"GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n",  # obs-text: llhttp's to judge
    b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
]


@pytest.mark.parametrize("raw", PLAIN_HEADS + NOT_PLAIN_HEADS)
def test_a_head_gives_the_same_events_by_the_shortcut_and_by_llhttp(raw: bytes) -> None:
    """Whole, a plain head takes the shortcut; split in two it cannot, and goes to llhttp."""
    whole = parse([raw + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"])
    split = parse([raw[:5], raw[5:] + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"])
    assert whole == split


@pytest.mark.parametrize("raw", PLAIN_HEADS)
def test_plain_heads_skip_llhttp(raw: bytes) -> None:
    parser = RequestParser(LIMITS)
    parser._execute = None  # type: ignore[assignment,method-assign]  # must not be called
    events = parser.feed(raw)
    assert isinstance(events[0], RequestHead) and events[-1] == MESSAGE_COMPLETE


@pytest.mark.parametrize("raw, keep_alive", [
    (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True)])
def test_the_shortcut_reads_whether_the_connection_stays(raw: bytes, keep_alive: bool) -> None:
    """And after a message that closes, the next request's bytes give no events."""
    events = RequestParser(LIMITS).feed(raw + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    head = events[0]
    assert isinstance(head, RequestHead) and head.keep_alive is keep_alive
    assert len(events) == (4 if keep_alive else 2)


def test_a_plain_body_is_counted_off_as_it_comes_and_over_the_limit_refused() -> None:
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n"
    parser = RequestParser(LIMITS)
    rest = b"67890GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    events = parser.feed(raw + b"12345") + parser.feed(rest)
    assert [type(event) for event in events] == [
        RequestHead, BodyData, BodyData, MessageComplete, RequestHead, MessageComplete]
    assert b"".join(e.data for e in events if isinstance(e, BodyData)) == b"1234567890"
    assert parse([raw], limited(max_body_size=9)) == [("rejected", 413)]
