"""Properties of the request parser, checked on generated input (hypothesis).

CI runs a bounded number of examples; a longer session is one environment variable
away: UNBROKEN_HYPOTHESIS_PROFILE=long (20,000 examples per property) or =soak.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from parser_harness import LIMITS, normalise, parse

from unbroken.http.events import Event, MessageComplete, RequestHead, RequestRejected
from unbroken.http.parser import RequestParser

_COMMON = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=200, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("long", max_examples=20_000, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("soak", max_examples=200_000, **_COMMON)  # type: ignore[arg-type]
PROFILE = settings.get_profile(os.environ.get("UNBROKEN_HYPOTHESIS_PROFILE", "ci"))

METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD"]
TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PCHAR = b"-._~!$&'()*+,;=:@0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Fields the parser gives a meaning to; generated ordinary fields avoid them.
NOTED = {b"host", b"content-length", b"transfer-encoding", b"content-type", b"expect",
         b"upgrade", b"connection", b"trailer", b"forwarded"}  # fmt: skip

token = st.binary(min_size=1, max_size=12).map(
    lambda raw: bytes(TCHAR[b % len(TCHAR)] for b in raw)
)
segment = st.binary(max_size=10).map(lambda raw: bytes(PCHAR[b % len(PCHAR)] for b in raw))
target = st.builds(
    lambda parts, query: b"/" + b"/".join(parts) + (b"?" + query if query is not None else b""),
    st.lists(segment, max_size=4),
    st.none() | segment,
)
# A field value: visible ASCII or obs-text, inner spaces and tabs, none at either end.
value_byte = st.sampled_from([*range(0x21, 0x7F), *range(0x80, 0x100)])
value = st.builds(
    lambda head, middle: bytes(head) + bytes(middle).strip(b" \t"),
    st.lists(value_byte, max_size=1),
    st.lists(value_byte | st.sampled_from([0x20, 0x09]), max_size=20),
).map(lambda v: v.strip(b" \t"))
field_name = token.filter(lambda n: n.lower() not in NOTED and not n.lower().startswith(b"x-forw"))
fields = st.lists(st.tuples(field_name, value), max_size=6)


Request = tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]  # method, target, fields, body


@dataclass(frozen=True)
class Generated:
    raw: bytes
    requests: list[Request]


def chunk_ext(names: list[tuple[bytes, bytes | None]]) -> bytes:
    return b"".join(b";" + n + (b"=" + v if v is not None else b"") for n, v in names)


@st.composite
def request(draw: st.DrawFn) -> Generated:
    method = draw(st.sampled_from(METHODS))
    path = draw(target)
    headers = [(b"host", b"example.com"), *((n.lower(), v) for n, v in draw(fields))]
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = b""
    body_bytes = b""
    if framing == "length":
        body = draw(st.binary(max_size=200))
        headers.append((b"content-length", str(len(body)).encode()))
        body_bytes = body
    elif framing == "chunked":
        headers.append((b"transfer-encoding", b"chunked"))
        chunks = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=6))
        extensions = st.lists(st.tuples(token, st.none() | token), max_size=2)
        for chunk in chunks:
            size = draw(st.sampled_from([b"%x", b"%X", b"%04x"])) % len(chunk)
            body_bytes += size + chunk_ext(draw(extensions)) + b"\r\n" + chunk + b"\r\n"
            body += chunk
        trailers = draw(st.lists(st.tuples(field_name, value), max_size=2))
        body_bytes += b"0" + chunk_ext(draw(extensions)) + b"\r\n"
        body_bytes += b"".join(n + b": " + v + b"\r\n" for n, v in trailers) + b"\r\n"
    head = method + b" " + path + b" HTTP/1.1\r\n"
    head += b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
    return Generated(head + body_bytes, [(method, path, headers, body)])


@st.composite
def pipeline(draw: st.DrawFn) -> Generated:
    parts = draw(st.lists(request(), min_size=1, max_size=3))
    return Generated(b"".join(p.raw for p in parts), [r for p in parts for r in p.requests])


@st.composite
def split(draw: st.DrawFn, raw: bytes) -> list[bytes]:
    if not raw:
        return []
    cuts = sorted(set(draw(st.lists(st.integers(1, max(len(raw) - 1, 1)), max_size=8))))
    edges = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(edges) if b > a]


def requests_in(events: list[object]) -> list[Request]:
    found: list[Request] = []
    for event in events:
        if isinstance(event, RequestHead):
            found.append((event.method, event.target, event.headers, b""))
        elif isinstance(event, bytes):
            method, path, headers, body = found[-1]
            found[-1] = (method, path, headers, body + event)
    return found


def feed_all(pieces: list[bytes]) -> list[Event]:
    parser = RequestParser(LIMITS)
    events: list[Event] = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    return events


def check_terminal_rejection(events: list[Event]) -> None:
    """At most one RequestRejected, and nothing after it."""
    rejections = [i for i, e in enumerate(events) if isinstance(e, RequestRejected)]
    assert len(rejections) <= 1
    if rejections:
        assert rejections[0] == len(events) - 1


@PROFILE
@given(st.data())
def test_generated_requests_parse_the_same_under_any_split(data: st.DataObject) -> None:
    generated = data.draw(pipeline())
    reference = parse([generated.raw])
    assert requests_in(reference) == generated.requests
    assert sum(isinstance(e, MessageComplete) for e in reference) == len(generated.requests)
    pieces = data.draw(split(generated.raw))
    assert parse(pieces) == reference


# Pieces of HTTP/1.1, so that "arbitrary" bytes often come close to a request.
FRAGMENTS = [
    b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b";", b"=", b",", b"\x00", b"\xff", b"GET",
    b"POST", b"/", b"*", b"?", b"#", b"HTTP/1.1", b"HTTP/1.0", b"Host: a", b"Host:",
    b"Transfer-Encoding: ", b"chunked", b"gzip", b"Content-Length: ", b"Expect: 100-continue",
    b"Connection: close", b"Upgrade: x", b"0", b"1", b"5", b"a", b"F", b"00000000000000001",
    b"\r\n\r\n", b"0\r\n\r\n", b"x" * 40,
]  # fmt: skip
soup = st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=3), max_size=40).map(b"".join)


@PROFILE
@given(st.data())
def test_arbitrary_bytes_give_events_never_exceptions(data: st.DataObject) -> None:
    prefix = data.draw(st.sampled_from([
        b"",
        b"GET / HTTP/1.1\r\nHost: a\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
    ]))  # fmt: skip
    raw = prefix + data.draw(st.binary(max_size=300) | soup)
    whole = feed_all([raw])
    check_terminal_rejection(whole)
    pieces = data.draw(split(raw))
    events = feed_all(pieces)
    check_terminal_rejection(events)
    assert normalise(events) == normalise(whole)  # rule 2, for any input


MUTATION_BYTES = st.sampled_from(
    [0x00, 0x09, 0x0A, 0x0D, 0x20, 0x22, 0x23, 0x2C, 0x3A, 0x3B, 0x7F, 0x80, 0xFF]
) | st.integers(0, 255)


@PROFILE
@given(st.data())
def test_a_mutated_head_is_parsed_or_refused(data: st.DataObject) -> None:
    generated = data.draw(request())
    head_end = generated.raw.index(b"\r\n\r\n") + 4
    position = data.draw(st.integers(0, head_end - 1))
    byte = bytes([data.draw(MUTATION_BYTES)])
    if data.draw(st.booleans()):
        raw = generated.raw[:position] + byte + generated.raw[position:]
    else:
        raw = generated.raw[:position] + byte + generated.raw[position + 1 :]
    whole = feed_all([raw])
    check_terminal_rejection(whole)
    events = normalise(whole)
    assert events and (isinstance(events[0], RequestHead) or events[-1][0] == "rejected")  # type: ignore[index]
    assert normalise(feed_all(data.draw(split(raw)))) == events


def test_fuzz_parser_runs_briefly(tmp_path: Path) -> None:
    """The atheris harness itself, for a few thousand inputs (a longer run is by hand)."""
    pytest.importorskip("atheris")
    harness = Path(__file__).with_name("fuzz_parser.py")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, str(harness), "-atheris_runs=3000", "-seed=1", str(tmp_path)],
        capture_output=True, text=True, timeout=60, env=environment, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 3000 runs" in result.stderr or "Done 3000 in" in result.stderr, result.stderr
