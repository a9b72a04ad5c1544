from __future__ import annotations

import pytest

from unbroken.control.protocol import (
    ProtocolError,
    Request,
    decode_reply,
    decode_request,
    progress,
    result,
)
from unbroken.messages import BootFailed, Heartbeat, Ready, Retire, decode, encode
from unbroken.sockets import AddressError, FDAddress, TCPAddress, UnixAddress, parse_address


def test_request_round_trip() -> None:
    request = Request("scale", {"workers": 3})
    assert decode_request(request.encode()) == request


def test_reply_round_trip_keeps_details() -> None:
    reply = result(False, "aborted", "Traceback ...", generation=1)
    assert decode_reply(reply.encode()) == reply
    assert decode_reply(progress("1/2 ready", ready=1).encode()).final is False


@pytest.mark.parametrize("line, message", [
    (b'{"v": 2, "command": "status"}', "unsupported protocol version 2"),
    (b'{"v": 1, "command": "explode"}', "unknown command 'explode'"),
    (b"not json", "not a JSON line"),
    (b'{"v": 1, "command": "scale", "arguments": []}', "arguments must be an object"),
])
def test_bad_requests_are_refused(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_request(line)


@pytest.mark.parametrize("message", [
    Ready(1.5), BootFailed("boom", "Traceback"), Heartbeat(1, 2, 3, 4), Retire("max")])
def test_worker_messages_round_trip(message: object) -> None:
    assert decode(encode(message)) == message  # type: ignore[arg-type]


def test_garbage_worker_message_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode(b'{"type": "Nope"}')


@pytest.mark.parametrize("text, address", [
    ("127.0.0.1:8000", TCPAddress("127.0.0.1", 8000)),
    ("[::1]:80", TCPAddress("::1", 80)),
    (":8080", TCPAddress("0.0.0.0", 8080)),
    ("unix:/run/app.sock", UnixAddress("/run/app.sock")),
    ("fd://3", FDAddress(3)),
])
def test_addresses_parse(text: str, address: object) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["localhost", "host:http", "1.2.3.4:70000", "unix:", "fd://x"])
def test_bad_addresses_say_so(text: str) -> None:
    with pytest.raises(AddressError, match="bind"):
        parse_address(text)


def test_master_messages_round_trip_and_worker_lines_are_not_taken_for_them() -> None:
    from unbroken.messages import Adopt, Drain, HandOver, Park, Resume, decode_from_master

    for message in (Park(), Resume(), Drain(2.5), Adopt(3)):
        assert decode_from_master(encode(message).rstrip(b"\n")) == message
    assert decode(encode(HandOver(4)).rstrip(b"\n")) == HandOver(4)
    with pytest.raises(ValueError):
        decode_from_master(encode(Ready(1.0)).rstrip(b"\n"))  # a worker's, not ours
