"""The PROXY protocol parser on its own: v1 and v2, valid and broken, split anywhere."""

from __future__ import annotations

import socket
import struct

import pytest

from unbroken.http.proxy_protocol import (
    V1_MAX_LINE,
    V2_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderParser,
    ProxyProtocolError,
)

HTTP = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
V1_TCP4 = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n"


def v2(command: int = 1, family: int = 0x11, block: bytes | None = None) -> bytes:
    if block is None:
        block = (socket.inet_pton(socket.AF_INET, "203.0.113.7")
                 + socket.inet_pton(socket.AF_INET, "192.0.2.1") + struct.pack("!HH", 56324, 443))
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(block)) + block


def parse(data: bytes, piece: int | None = None) -> tuple[ProxyHeader | None, bytes]:
    """Feed `data` whole or in `piece`-byte parts; return the header and the rest."""
    parser = ProxyHeaderParser()
    step = piece or len(data) or 1
    for start in range(0, max(len(data), 1), step):
        header = parser.feed(data[start:start + step])
        if header is not None:
            rest = parser.rest + data[start + step:]
            return header, rest
    return None, b""


@pytest.mark.parametrize("piece", [None, 1, 5])
def test_v1_tcp4_gives_the_source_and_leaves_the_http_bytes(piece: int | None) -> None:
    header, rest = parse(V1_TCP4 + HTTP, piece)
    assert header == ProxyHeader(1, ("203.0.113.7", 56324), ("192.0.2.1", 443))
    assert rest == HTTP


def test_v1_tcp6() -> None:
    header, _ = parse(V1_TCP6)
    assert header is not None and header.source == ("2001:db8::7", 56324)


def test_v1_unknown_keeps_the_real_peer() -> None:
    header, rest = parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n" + HTTP)
    assert header == ProxyHeader(1, None, None) and rest == HTTP


def test_incomplete_header_waits() -> None:
    assert parse(V1_TCP4[:-1]) == (None, b"")
    assert parse(v2()[:20]) == (None, b"")
    assert parse(b"PRO") == (None, b"")
    assert parse(V2_SIGNATURE[:5]) == (None, b"")


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n",
    b"PROXY TCP4 203.0.113.7 192.0.2.1 56324\r\n",
    b"PROXY TCP5 203.0.113.7 192.0.2.1 56324 443\r\n",
    b"PROXY TCP4 2001:db8::7 192.0.2.1 56324 443\r\n",
    b"PROXY TCP4 203.0.113.777 192.0.2.1 56324 443\r\n",
    b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 443\r\n",
    b"PROXY TCP4 203.0.113.7 192.0.2.1 0443 443\r\n",
    b"PROXY TCP4 203.0.113.7  192.0.2.1 56324 443\r\n",
    b"PROXY UNKNOWN" + b" " * (V1_MAX_LINE - 13),
    b"\r\n\r\n\x00\r\nQUIT\r",
])
def test_malformed_v1_is_refused(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(data)


def test_v1_line_of_exactly_107_bytes_is_accepted() -> None:
    line = b"PROXY UNKNOWN " + b"x" * (V1_MAX_LINE - 16) + b"\r\n"
    assert len(line) == V1_MAX_LINE
    assert parse(line)[0] == ProxyHeader(1, None, None)


@pytest.mark.parametrize("piece", [None, 1, 7])
def test_v2_inet_gives_the_source_and_leaves_the_http_bytes(piece: int | None) -> None:
    header, rest = parse(v2() + HTTP, piece)
    assert header == ProxyHeader(2, ("203.0.113.7", 56324), ("192.0.2.1", 443))
    assert rest == HTTP


def test_v2_inet6_with_tlvs_after_the_addresses() -> None:
    block = (socket.inet_pton(socket.AF_INET6, "2001:db8::7") * 2 + struct.pack("!HH", 1, 2)
             + b"\x05\x00\x02id")  # a PP2_TYPE_UNIQUE_ID TLV, ignored
    header, rest = parse(v2(family=0x21, block=block) + HTTP)
    assert header is not None and header.source == ("2001:db8::7", 1) and rest == HTTP


@pytest.mark.parametrize("data", [
    v2(command=0),  # LOCAL: a health check from the proxy itself
    v2(family=0x00, block=b""),  # UNSPEC
    v2(family=0x31, block=b"\x00" * 216),  # AF_UNIX
])
def test_v2_local_and_unreported_families_keep_the_real_peer(data: bytes) -> None:
    header, rest = parse(data + HTTP)
    assert header == ProxyHeader(2, None, None) and rest == HTTP


@pytest.mark.parametrize("data", [
    v2(command=2),
    v2(family=0x41),
    v2(family=0x13),
    v2(block=b"\x01\x02\x03"),  # too short for AF_INET
    V2_SIGNATURE + bytes([0x31, 0x11]) + struct.pack("!H", 12) + b"\x00" * 12,  # version 3
    V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", V2_MAX_LENGTH + 1),
])
def test_malformed_v2_is_refused(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(data)
