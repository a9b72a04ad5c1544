"""The PROXY protocol header (HAProxy, versions 1 and 2), sans I/O.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt

Rules:
1. `ProxyHeaderParser.feed` takes bytes as they arrive and returns None until the
   header is complete, then a `ProxyHeader`; the bytes after it are in `rest` and
   belong to HTTP. It raises `ProxyProtocolError` as soon as the input cannot be
   a header (wrong signature, over a limit, malformed); the caller closes.
2. Limits: a v1 line is at most 107 bytes with its CRLF (spec §2.1); a v2 address
   block (with its TLVs) at most `V2_MAX_LENGTH` bytes.
3. `PROXY UNKNOWN`, a v2 LOCAL command (health checks) and families we do not
   report (AF_UNIX, UNSPEC) give `source=None`: keep the socket's own peer.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX_LINE = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEAD = struct.Struct("!12sBBH")  # signature, version/command, family/protocol, length
# HAProxy's own TLVs (SSL, unique-id, authority, netns) fit well within this; the bound
# only stops a peer from making us buffer without end.
V2_MAX_LENGTH = 2048

# v2 families (high nibble of byte 13) and the address block each needs.
_INET, _INET6 = 0x1, 0x2
_V2_ADDRESSES = {_INET: struct.Struct("!4s4sHH"), _INET6: struct.Struct("!16s16sHH")}

Address = tuple[str, int]


class ProxyProtocolError(ValueError):
    """The connection did not start with a valid PROXY header."""


@dataclass(frozen=True)
class ProxyHeader:
    version: int
    source: Address | None  # the client as the proxy saw it; None: keep the socket's peer
    destination: Address | None


class ProxyHeaderParser:
    def __init__(self) -> None:
        self._buffer = b""
        self.rest = b""

    def feed(self, data: bytes) -> ProxyHeader | None:
        buffer = self._buffer = self._buffer + data
        if buffer.startswith(V2_SIGNATURE):
            header = self._v2(buffer)
        elif buffer.startswith(V1_PREFIX):
            header = self._v1(buffer)
        elif V2_SIGNATURE.startswith(buffer[:12]) or V1_PREFIX.startswith(buffer[:6]):
            return None  # too short to tell yet
        else:
            raise ProxyProtocolError("no PROXY protocol signature")
        if header is not None:
            self._buffer = b""
        return header

    def _v1(self, buffer: bytes) -> ProxyHeader | None:
        end = buffer.find(b"\r\n", 0, V1_MAX_LINE)
        if end == -1:
            if len(buffer) >= V1_MAX_LINE:
                raise ProxyProtocolError("PROXY v1 line longer than 107 bytes")
            return None
        self.rest = buffer[end + 2:]
        return parse_v1(buffer[:end])

    def _v2(self, buffer: bytes) -> ProxyHeader | None:
        if len(buffer) < V2_HEAD.size:
            return None
        _, version_command, family_protocol, length = V2_HEAD.unpack_from(buffer)
        if length > V2_MAX_LENGTH:
            raise ProxyProtocolError(f"PROXY v2 header of {length} bytes is over the limit")
        end = V2_HEAD.size + length
        if len(buffer) < end:
            return None
        self.rest = buffer[end:]
        return parse_v2(version_command, family_protocol, buffer[V2_HEAD.size:end])


def parse_v1(line: bytes) -> ProxyHeader:
    """`PROXY TCP4 192.0.2.1 192.0.2.2 56324 443` (without the CRLF)."""
    parts = line.split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        return ProxyHeader(1, None, None)
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError("malformed PROXY v1 line")
    version = 4 if parts[1] == b"TCP4" else 6
    source = _v1_address(parts[2], parts[4], version)
    destination = _v1_address(parts[3], parts[5], version)
    return ProxyHeader(1, source, destination)


def _v1_address(host: bytes, port: bytes, version: int) -> Address:
    try:
        address = ipaddress.ip_address(host.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyProtocolError("bad address in PROXY v1 line") from None
    if address.version != version:
        raise ProxyProtocolError("address family does not match PROXY v1 protocol")
    return str(address), _v1_port(port)


def _v1_port(port: bytes) -> int:
    # Decimal, no sign, no leading zero (spec §2.1).
    if not port.isdigit() or len(port) > 5 or (len(port) > 1 and port.startswith(b"0")):
        raise ProxyProtocolError("bad port in PROXY v1 line")
    value = int(port)
    if value > 65535:
        raise ProxyProtocolError("bad port in PROXY v1 line")
    return value


def parse_v2(version_command: int, family_protocol: int, block: bytes) -> ProxyHeader:
    """The 16-byte head's two type bytes and the address block (TLVs ignored)."""
    if version_command >> 4 != 2:
        raise ProxyProtocolError("unsupported PROXY protocol version")
    command = version_command & 0x0F
    if command > 1:
        raise ProxyProtocolError("unknown PROXY v2 command")
    family, protocol = family_protocol >> 4, family_protocol & 0x0F
    if family > 3 or protocol > 2:
        raise ProxyProtocolError("unknown PROXY v2 address family or protocol")
    layout = _V2_ADDRESSES.get(family)
    if command == 0 or layout is None:
        return ProxyHeader(2, None, None)  # LOCAL, or a family we do not report
    if len(block) < layout.size:
        raise ProxyProtocolError("PROXY v2 address block too short")
    source, destination, source_port, destination_port = layout.unpack_from(block)
    return ProxyHeader(2, (str(ipaddress.ip_address(source)), source_port),
                       (str(ipaddress.ip_address(destination)), destination_port))
