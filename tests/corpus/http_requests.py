"""Raw HTTP/1.1 requests with the verdict unbroken must give (our own cases).

Written from the descriptions in /work/shared/HTTP-HARDENING.md §1.6, §4.2, §5.2;
no bytes are copied from GPL material. Each INVALID entry is
(name, raw bytes, status); each VALID entry is (name, raw bytes, list of
(method, target, body) per request). The limits used are the parser defaults.
"""

# One case per entry reads better than wrapped byte strings, so long lines are allowed here.
# ruff: noqa: E501

from __future__ import annotations

H = b"Host: example.com\r\n"
CHUNKED = b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
# Chunk extensions: 4 KiB in total per message (ParserLimits.chunk_extensions). One
# extension of `n` bytes, counted from after the size digits to before the CR:
def ext(n: int) -> bytes:
    return b";" + b"e" * (n - 1)

VALID: list[tuple[str, bytes, list[tuple[bytes, bytes, bytes]]]] = [
    ("simple get", b"GET / HTTP/1.1\r\n" + H + b"\r\n", [(b"GET", b"/", b"")]),
    ("query", b"GET /a/b?x=1&y=%20 HTTP/1.1\r\n" + H + b"\r\n", [(b"GET", b"/a/b?x=1&y=%20", b"")]),
    ("http/1.0 without host", b"GET /old HTTP/1.0\r\n\r\n", [(b"GET", b"/old", b"")]),
    ("content-length body", b"POST /p HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello",
     [(b"POST", b"/p", b"hello")]),
    ("chunked body", b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", [(b"POST", b"/c", b"hello world")]),
    ("chunked with extension and trailer", b"POST /c HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n3;name=value\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n",
     [(b"POST", b"/c", b"abc")]),
    ("chunked upper-case hex", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"A\r\n0123456789\r\n0\r\n\r\n", [(b"POST", b"/", b"0123456789")]),
    ("chunked body containing CRLFCRLF", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n6\r\na\r\n\r\nb\r\n0\r\n\r\n", [(b"POST", b"/", b"a\r\n\r\nb")]),
    ("pipelined three", (b"GET /1 HTTP/1.1\r\n" + H + b"\r\n") + (b"POST /2 HTTP/1.1\r\n" + H
     + b"Content-Length: 2\r\n\r\nhi") + (b"GET /3 HTTP/1.1\r\n" + H + b"\r\n"),
     [(b"GET", b"/1", b""), (b"POST", b"/2", b"hi"), (b"GET", b"/3", b"")]),
    ("pipelined after chunked", b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"1\r\nx\r\n0\r\n\r\nGET /b HTTP/1.1\r\n" + H + b"\r\n", [(b"POST", b"/a", b"x"), (b"GET", b"/b", b"")]),
    ("leading empty line", b"\r\nGET / HTTP/1.1\r\n" + H + b"\r\n", [(b"GET", b"/", b"")]),
    ("options asterisk", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", [(b"OPTIONS", b"*", b"")]),
    ("absolute form", b"GET http://example.com/x?y HTTP/1.1\r\n" + H + b"\r\n",
     [(b"GET", b"http://example.com/x?y", b"")]),
    ("IPv6 Host with port", b"GET / HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n", [(b"GET", b"/", b"")]),
    ("empty Host", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", [(b"GET", b"/", b"")]),
    ("chunked body of 64 KiB then a pipelined GET", b"POST /x HTTP/1.1\r\nHost: h\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(b"4000\r\n" + b"x" * 16384 + b"\r\n" for _ in range(4))
     + b"0\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n",
     [(b"POST", b"/x", b"x" * 65536), (b"GET", b"/after", b"")]),
    # chunk extensions, within the 4 KiB per message
    ("chunk extensions, small", CHUNKED + b"1;a=b;c\r\nx\r\n2;q=\"quoted \\\" s\"\r\nyz\r\n0;last\r\n\r\n",
     [(b"POST", b"/c", b"xyz")]),
    ("chunk extensions, 4 KiB in one chunk", CHUNKED + b"1" + ext(4096) + b"\r\nx\r\n0\r\n\r\n",
     [(b"POST", b"/c", b"x")]),
    ("chunk extensions, 4 KiB over 64 chunks and the last", CHUNKED + b"".join(b"1" + ext(63) + b"\r\nx\r\n" for _ in range(64))
     + b"0" + ext(64) + b"\r\n\r\n", [(b"POST", b"/c", b"x" * 64)]),
    ("chunk size with 16 digits", CHUNKED + b"000000000000000A\r\n0123456789\r\n0000000000000000\r\n\r\n",
     [(b"POST", b"/c", b"0123456789")]),
    ("tab in value", b"GET / HTTP/1.1\r\n" + H + b"X-T: a\tb\r\n\r\n", [(b"GET", b"/", b"")]),
    ("empty value", b"GET / HTTP/1.1\r\n" + H + b"X-Empty:\r\n\r\n", [(b"GET", b"/", b"")]),
    ("obs-text in value", b"GET / HTTP/1.1\r\n" + H + b"X-Latin: caf\xe9\r\n\r\n", [(b"GET", b"/", b"")]),
    ("expect 100-continue", b"PUT /u HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\n"
     b"Content-Length: 1\r\n\r\nz", [(b"PUT", b"/u", b"z")]),
    ("zero content-length", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n", [(b"POST", b"/", b"")]),
    ("transfer-encoding case", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: Chunked\r\n\r\n"
     b"0\r\n\r\n", [(b"POST", b"/", b"")]),
    ("duplicate ordinary header", b"GET / HTTP/1.1\r\n" + H + b"Accept: a\r\nAccept: b\r\n\r\n",
     [(b"GET", b"/", b"")]),
    ("http/1.0 keep-alive pair", b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
     b"GET /2 HTTP/1.0\r\n\r\n", [(b"GET", b"/1", b""), (b"GET", b"/2", b"")]),
    ("data after connection close is ignored", b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"
     b"GET /ignored HTTP/1.1\r\n\r\n", [(b"GET", b"/", b"")]),
]

INVALID: list[tuple[str, bytes, int]] = [
    # framing and smuggling
    ("CL and TE", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    ("TE and CL", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
     400),
    # with CL too, llhttp's CL+TE refusal comes first (uvicorn answers the same; gunicorn 501)
    ("TE with leading comma", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: ,chunked\r\n"
     b"Content-Length: 4\r\n\r\n", 400),
    ("TE with leading comma alone", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: ,chunked\r\n\r\n", 501),
    # a refused coding followed by a malformed line: the same status under every split
    # (httptools reports a field only when the next one starts)
    ("TE gzip then a bad field name", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n"
     b"a b: c\r\n\r\n", 400),
    ("TE gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 501),
    ("TE gzip, chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    ("TE chunked twice", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE via obs-fold", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n chunked\r\n\r\n", 400),
    ("HTTP/1.0 chunked", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("duplicate same CL", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
    ("duplicate differing CL", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
     400),
    ("CL list form", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1, 1\r\n\r\nx", 400),
    ("CL plus sign", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +1\r\n\r\nx", 400),
    ("CL negative", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    ("chunk size 0x", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
     400),
    ("chunk size underscore", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"0_5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-ext with bare CR", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"1;a\rb\r\nx\r\n0\r\n\r\n", 400),
    ("bare LF after chunk data", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"1\r\nx\n0\r\n\r\n", 400),
    ("space after chunk size", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"1 \r\nx\r\n0\r\n\r\n", 400),
    ("truncated last chunk then request", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"0\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("forbidden trailer CL", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"0\r\nContent-Length: 5\r\n\r\n", 400),
    ("forbidden trailer Host", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"0\r\nHost: evil\r\n\r\n", 400),
    # chunk extensions over 4 KiB in total per message → 400
    ("chunk extensions over 4 KiB in one chunk", CHUNKED + b"1" + ext(4097) + b"\r\nx\r\n0\r\n\r\n", 400),
    ("chunk extensions over 4 KiB over many chunks", CHUNKED + b"".join(b"1" + ext(40) + b"\r\nx\r\n" for _ in range(103))
     + b"0\r\n\r\n", 400),
    ("chunk extensions over 4 KiB in the last chunk", CHUNKED + b"1;a\r\nx\r\n0" + ext(4095) + b"\r\n\r\n", 400),
    ("chunk extension of 64 KiB (Go CVE-2023-39326)", CHUNKED + b"5;e=" + b"v" * 65536 + b"\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk size with 17 digits", CHUNKED + b"0000000000000000A\r\n0123456789\r\n0\r\n\r\n", 400),
    # line syntax
    ("bare LF line endings", b"GET / HTTP/1.1\nHost: example.com\n\n", 400),
    ("bare LF before the request line", b"\n\nGET / HTTP/1.1\r\n" + H + b"\r\n", 400),  # found by atheris
    ("bare LF before a head refused for its coding", b"\nGET /x.1\r\n" + H + b"Transfer-Encoding: chunkea\r\n\r\n", 400),
    ("stray CR before a head refused for its coding", b"\r\r\n\nPOST /c HTTP/1.0\r\nTransfer-Encoding: chun2ed\r\n\r\n", 400),
    ("CRLF then bare LF before the request line", b"\r\n\nGET / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("bare CR in header line", b"GET / HTTP/1.1\r\nHost: example.com\rX: y\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-Long: a\r\n b\r\n\r\n", 400),
    ("space before colon", b"GET / HTTP/1.1\r\n" + H + b"X-Bad : a\r\n\r\n", 400),
    ("leading space before first header", b"GET / HTTP/1.1\r\n Host: example.com\r\n\r\n", 400),
    ("empty header name", b"GET / HTTP/1.1\r\n" + H + b": nameless\r\n\r\n", 400),
    ("NUL in value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", 400),
    ("BEL in value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x07b\r\n\r\n", 400),
    ("DEL in value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x7fb\r\n\r\n", 400),
    ("CR LF CR X", b"GET / HTTP/1.1\r\n" + H + b"\r\rX", 400),
    # request line
    ("HTTP/2.0 on h1", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 400),
    ("HTTP/0.9 line", b"GET / HTTP/0.9\r\n" + H + b"\r\n", 400),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 400),
    ("multi-digit version", b"GET / HTTP/11.1\r\n" + H + b"\r\n", 400),
    ("lower-case method", b"get / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("asterisk outside OPTIONS", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("authority-form outside CONNECT", b"GET example.com:80 HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("CONNECT with origin-form", b"CONNECT / HTTP/1.1\r\n" + H + b"\r\n", 400),
    # not a proxy (issue 14, item 5): a tunnel request never reaches the app
    ("CONNECT authority", b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 400),
    # one space between the parts of the request line (RFC 9112 §3; gunicorn, granian)
    ("two spaces after method", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("two spaces before version", b"GET /  HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("two spaces after a leading blank line", b"\r\nGET  / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("relative reference", b"GET foo/bar HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("fragment in target", b"GET /a#frag HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("missing target", b"GET  HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("missing version", b"GET /\r\n" + H + b"\r\n", 400),
    # Host
    ("missing Host on 1.1", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two Host headers", b"GET / HTTP/1.1\r\n" + H + H + b"\r\n", 400),
    # a Host that is not uri-host[:port] (RFC 9112 §3.2, RFC 9110 §7.2)
    ("Host with a space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("Host with a slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("Host with userinfo", b"GET / HTTP/1.1\r\nHost: u@h\r\n\r\n", 400),
    ("Host with a bad port", b"GET / HTTP/1.1\r\nHost: h:abc\r\n\r\n", 400),
    ("Host with an open bracket", b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
    ("two Content-Type headers", b"POST / HTTP/1.1\r\n" + H + b"Content-Type: a/b\r\nContent-Type: c/d\r\n"
     b"Content-Length: 0\r\n\r\n", 400),
    # expectations
    ("unknown expectation", b"GET / HTTP/1.1\r\n" + H + b"Expect: magic\r\n\r\n", 417),
    # pipelining: garbage after a valid request (the valid one still parses)
    ("garbage after valid request", b"GET / HTTP/1.1\r\n" + H + b"\r\nGARBAGE\r\n\r\n", 400),
    # limits (defaults: line 8 KiB, field 8 KiB, 100 fields, block 64 KiB)
    ("request line over 8 KiB", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("one header over 8 KiB", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 9000 + b"\r\n\r\n", 431),
    ("101 headers", b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(100))
     + b"\r\n", 431),
    ("header block over 64 KiB", b"GET / HTTP/1.1\r\n" + H
     + b"".join(b"X-%02d: %s\r\n" % (i, b"v" * 8000) for i in range(9)) + b"\r\n", 431),
]
