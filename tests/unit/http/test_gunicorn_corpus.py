"""gunicorn's request corpus (tests/corpus/gunicorn, MIT) against our parser.

Every valid case must parse to gunicorn's (method, target, version, headers, body) and
every invalid case must be refused, each under the five deliveries of parser_harness.
Where our verdict is not gunicorn's, DEVIATIONS says what ours is and why; a case that
starts to deviate without an entry, or stops deviating with one, fails. Cases that set
gunicorn options test gunicorn's settings, not HTTP, and are skipped (OPTIONS lists them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from parser_harness import CORPUS_DIR, load_module, parse_under_every_split

from unbroken.http.events import MessageComplete, RequestHead
from unbroken.http.parser import ParserLimits

GUNICORN = CORPUS_DIR / "gunicorn"
EXPECTED = load_module(GUNICORN / "expectations.py", "unbroken_gunicorn_expectations")


def decode(path: Path) -> bytes:
    """gunicorn's tests/treq.py rule: real newlines are layout; CRLF, LF, TAB, NUL and
    \\xHH are written as escapes; any other backslash is an error in the file."""
    data = path.read_bytes().replace(b"\n", b"").replace(b"\\r\\n", b"\r\n")
    data = data.replace(b"\\0", b"\0").replace(b"\\n", b"\n").replace(b"\\t", b"\t")
    data = re.sub(rb"\\x([0-9A-Fa-f]{2})", lambda m: bytes([int(m[1], 16)]), data)
    assert b"\\" not in data, f"{path.name}: unexpected backslash"
    return data


@dataclass(frozen=True)
class Deviation:
    """Our verdict where it is not gunicorn's.

    verdict:
      refused      a valid case is refused with `status` (requests before it still parse);
      needs Host   refused with 400 as sent, because an HTTP/1.1 request has no Host; with
                   a Host field added to each such request it parses as gunicorn expects;
      accepted     an invalid case parses under our default limits, and is refused with
                   `status` under gunicorn's own limit (`limits`);
      incomplete   a case whose bytes end early: no verdict yet, only the connection's
                   timers or EOF can end it; no message completes;
      headers      a valid case parses, but the headers are not gunicorn's (`why` says how).
    """

    verdict: str
    why: str
    status: int | None = None
    limits: ParserLimits | None = None


MISSING_HOST = (
    "HTTP/1.1 without Host: RFC 9112 §3.2 says a server MUST answer 400 "
    "(gunicorn accepts it; h11 and waitress refuse it too)"
)
TE_501 = (
    "a transfer coding other than chunked: RFC 9112 §6.1, a server SHOULD answer 501 to a "
    "coding it does not implement; `identity` is no coding at all since RFC 7230, and "
    "gzip-then-chunked would hand the app compressed bytes it never asked for"
)

DEVIATIONS: dict[str, Deviation] = {
    # valid cases we refuse
    **{
        f"valid/{name}": Deviation("needs Host", MISSING_HOST, 400)
        for name in ("004", "006", "007", "010", "011", "014", "018", "021", "022", "023", "100")
    },
    "valid/013": Deviation(
        "refused",
        MISSING_HOST + "; and its chunk extensions have whitespace around `;` (`5; some; "
        "parameters=stuff`): RFC 9112 §7.1.1 has BWS there, which a sender MUST NOT generate "
        "(RFC 9110 §5.6.3); llhttp refuses it, and so do we rather than rewrite its input",
        400,
    ),
    "valid/099": Deviation(
        "incomplete",
        "the file holds 8,599 body bytes of a declared Content-Length of 17,914; gunicorn's "
        "reader stops at EOF and reports the short body, ours waits for the rest (the body "
        "timer ends it) and never completes a message shorter than it said",
    ),
    "valid/012": Deviation(
        "refused",
        MISSING_HOST + "; and its trailers carry Content-Type, which describes the content "
        "and cannot come after it (RFC 9110 §6.5.1, our FORBIDDEN_TRAILERS)",
        400,
    ),
    "valid/005": Deviation(
        "refused",
        "a fragment in the request target: origin-form is absolute-path [?query] "
        "(RFC 9112 §3.2.1), a fragment is never sent (RFC 9110 §7.1); also lacks Host",
        400,
    ),
    "valid/009": Deviation(
        "refused",
        "Transfer-Encoding (identity) with Content-Length: RFC 9112 §6.1 lets a server refuse "
        "both at once, and llhttp does (400) before the coding is judged",
        400,
    ),
    "valid/029": Deviation("refused", TE_501, 501),
    "valid/030": Deviation("refused", TE_501, 501),
    "valid/025": Deviation("refused", TE_501, 501),
    "valid/025_line": Deviation("refused", TE_501, 501),
    "valid/rfc9112_smuggle_gzip_chunked_01": Deviation("refused", TE_501, 501),
    "valid/rfc9112_smuggle_te_identity_chunked_01": Deviation("refused", TE_501, 501),
    "valid/027": Deviation(
        "refused",
        "raw non-ASCII bytes in the target: a URI is ASCII (RFC 3986 §2, RFC 9112 §3.2), "
        "llhttp refuses it strictly",
        400,
    ),
    "valid/031": Deviation(
        "refused",
        "method `-BLARGH`: a method is a token (RFC 9110 §9.1) and llhttp knows only the "
        "registered ones; unknown methods are refused before the app sees them",
        400,
    ),
    "valid/rfc9112_target_authority_connect_01": Deviation(
        "refused", "CONNECT: an origin server, not a proxy (issue 14, item 5)", 400
    ),
    "valid/rfc9112_target_authority_ipv6_01": Deviation(
        "refused", "CONNECT: an origin server, not a proxy (issue 14, item 5)", 400
    ),
    "valid/040": Deviation(
        "headers",
        "names with `_` (Transfer_Encoding, Content_Length) are delivered as sent; gunicorn "
        "drops them (header_map=drop). Our WSGI environ drops them too "
        "(engines/wsgi_environ.py), so no app can mistake them for their `-` twins",
    ),
    # invalid cases we accept (our limits are not gunicorn's)
    "invalid/006": Deviation(
        "accepted",
        "a 4,112-byte request line: our request_line limit is 8 KiB (nginx's "
        "large_client_header_buffers), gunicorn's limit_request_line is 4094",
        414,
        ParserLimits(request_line=4094),
    ),
    "invalid/017": Deviation(
        "accepted",
        "the same 8,189-byte field line as 008, in an HTTP/1.1 request (refused as sent only "
        "for its missing Host)",
        431,
        ParserLimits(field_size=8188),
    ),
    "invalid/008": Deviation(
        "accepted",
        "an 8,189-byte field line: our field_size is 8,192 bytes without CRLF, gunicorn's "
        "limit_request_field_size is 8190 with it",
        431,
        ParserLimits(field_size=8188),
    ),
    # invalid cases cut short: the parser waits, as it must for a slow client
    "invalid/001": Deviation(
        "incomplete", "a head that never ends (gunicorn: NoMoreData at EOF); the header "
        "deadline closes the connection"
    ),
    "invalid/rfc9112_chunked_missing_final_crlf_01": Deviation(
        "incomplete", "`0\\r\\n` without the CRLF ending the trailer section (gunicorn: "
        "ChunkMissingTerminator at EOF); the message never completes, the body timer ends it"
    ),
}

# Invalid cases whose head is valid and whose defect comes in the body. A streaming
# parser delivers the head before it can know: the message then ends in RequestRejected,
# never MessageComplete, so the app never sees a complete body (an engine that reads a
# small body before calling the app never calls it).
BODY_DEFECTS = {
    "chunked_01", "chunked_09", "chunked_10", "chunked_11", "chunked_12", "chunked_13",
    "chunked_14", "rfc9110_trailer_forbidden_cl_01", "rfc9110_trailer_forbidden_host_01",
    "rfc9110_trailer_forbidden_te_01", "rfc9112_chunked_size_minus_sign_01",
    "rfc9112_chunked_size_plus_sign_01",
}  # fmt: skip

# The status of each refusal that is not 400 (so a status cannot change silently).
STATUS = {"007": 431, "009": 431}


def cases(kind: str) -> list[object]:
    params: list[object] = []
    for name in sorted(getattr(EXPECTED, kind.upper())):
        key = f"{kind}/{name}"
        options = EXPECTED.OPTIONS.get(key)
        marks = ()
        if options:
            reason = f"sets gunicorn options {options}: a test of gunicorn, not of HTTP"
            marks = (pytest.mark.skip(reason=reason),)
        params.append(pytest.param(name, marks=marks, id=key))
    return params


def as_gunicorn(events: list[object]) -> list[dict[str, object]]:
    """Our events as gunicorn's expectation reads (names upper-cased, text as latin-1)."""
    requests: list[dict[str, object]] = []
    for event in events:
        if isinstance(event, RequestHead):
            requests.append({
                "method": event.method.decode("latin-1"),
                "target": event.target.decode("latin-1"),
                "version": event.version,
                "headers": [(n.decode("latin-1").upper(), v.decode("latin-1"))
                            for n, v in event.headers],
                "body": b"",
            })  # fmt: skip
        elif isinstance(event, bytes):
            body = requests[-1]["body"]
            assert isinstance(body, bytes)
            requests[-1]["body"] = body + event
    return requests


def expected_requests(name: str) -> list[dict[str, object]]:
    requests = []
    for request in EXPECTED.VALID[name]:
        body = request["body"]
        requests.append({
            "method": request["method"],
            "target": request["target"],
            "version": request["version"],
            "headers": list(request["headers"]),
            "body": body.encode("latin-1") if isinstance(body, str) else body,
        })  # fmt: skip
    return requests


def with_host(raw: bytes, requests: list[dict[str, object]]) -> bytes:
    """Add `Host: h` after each HTTP/1.1 request line, and to what gunicorn expects, if
    no request in `raw` has a Host."""
    if re.search(rb"(?i)\r\nhost:", raw):
        return raw
    for request in requests:
        headers = request["headers"]
        assert isinstance(headers, list)
        if request["version"] == "1.1" and not any(n == "HOST" for n, _ in headers):
            headers.insert(0, ("HOST", "h"))
    return re.sub(rb"(?m)(^|\n)([A-Z]+ \S+ HTTP/1\.1\r\n)", rb"\1\2Host: h\r\n", raw)


def completed(events: list[object]) -> int:
    return sum(isinstance(e, MessageComplete) for e in events)


@pytest.mark.parametrize("name", cases("valid"))
def test_valid_case(name: str) -> None:
    raw = decode(GUNICORN / "valid" / f"{name}.http")
    expected = expected_requests(name)
    events = parse_under_every_split(raw, seed=len(name))
    got = as_gunicorn(events)
    deviation = DEVIATIONS.get(f"valid/{name}")
    if deviation is None:
        assert got == expected
        assert completed(events) == len(expected)
        assert not any(isinstance(e, tuple) for e in events)
    elif deviation.verdict in ("refused", "needs Host"):
        assert events[-1] == ("rejected", deviation.status)
        assert got == expected[: len(got)]
        if deviation.verdict == "needs Host":
            fixed = parse_under_every_split(with_host(raw, expected))
            assert as_gunicorn(fixed) == expected
            assert completed(fixed) == len(expected)
    elif deviation.verdict == "incomplete":
        assert completed(events) == 0 and not any(isinstance(e, tuple) for e in events)
        [request], [wanted] = got, expected
        body, wanted_body = request.pop("body"), wanted.pop("body")
        assert request == wanted
        assert isinstance(body, bytes) and isinstance(wanted_body, bytes)
        assert wanted_body.startswith(body)
    else:
        assert deviation.verdict == "headers"
        assert got != expected
        for request in got:
            headers = request["headers"]
            assert isinstance(headers, list)
            request["headers"] = [(n, v) for n, v in headers if "_" not in n]
        assert got == expected


@pytest.mark.parametrize("name", cases("invalid"))
def test_invalid_case(name: str) -> None:
    raw = decode(GUNICORN / "invalid" / f"{name}.http")
    # Many cases lack Host and would be refused for that alone; with a Host added, each
    # must still be refused, for the defect it was written to show.
    probe = with_host(raw, [])
    if probe != raw:
        last = parse_under_every_split(raw)[-1]
        assert isinstance(last, tuple) and last[0] == "rejected"
    events = parse_under_every_split(probe, seed=len(name))
    deviation = DEVIATIONS.get(f"invalid/{name}")
    if deviation is None:
        assert events[-1] == ("rejected", STATUS.get(name, 400))
        heads = [e for e in events if isinstance(e, RequestHead)]
        if name in BODY_DEFECTS:
            assert len(heads) == 1 and completed(events) == 0
        else:
            assert heads == []
    elif deviation.verdict == "accepted":
        assert completed(events) >= 1 and not any(isinstance(e, tuple) for e in events)
        assert deviation.limits is not None
        refused = parse_under_every_split(probe, deviation.limits)
        assert refused == [("rejected", deviation.status)]
    else:
        assert deviation.verdict == "incomplete"
        assert completed(events) == 0 and not any(isinstance(e, tuple) for e in events)


def test_the_tables_name_real_cases() -> None:
    names = {f"valid/{n}" for n in EXPECTED.VALID} | {f"invalid/{n}" for n in EXPECTED.INVALID}
    assert set(DEVIATIONS) <= names
    assert not set(DEVIATIONS) & set(EXPECTED.OPTIONS), "a skipped case cannot deviate"
    assert {f"invalid/{n}" for n in BODY_DEFECTS | set(STATUS)} <= names
    assert (len(EXPECTED.VALID), len(EXPECTED.INVALID)) == (63, 74)


def test_the_vendored_files_carry_their_licence() -> None:
    licence = (GUNICORN / "LICENSE").read_text()
    assert "Benoît Chesneau" in licence and "Paul J. Davis" in licence
    assert "Permission is hereby granted" in licence
