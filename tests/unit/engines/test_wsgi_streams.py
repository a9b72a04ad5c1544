"""wsgi.input (RequestBody): what the app reads, however the body arrived."""

from __future__ import annotations

import threading

import pytest

from unbroken.engines.wsgi.streams import BODY_HIGH_WATER, RequestBody


class Reader:
    def __init__(self) -> None:
        self.asked = 0
        self.drained = 0

    def body_read_asked(self) -> None:
        self.asked += 1

    def body_drained(self) -> None:
        self.drained += 1


def body_of(*chunks: bytes, eof: bool = True) -> tuple[RequestBody, Reader]:
    reader = Reader()
    body = RequestBody(reader)
    for chunk in chunks:
        body.feed(chunk)
    if eof:
        body.feed_eof()
    return body, reader


@pytest.mark.parametrize("chunks", [[b"ab\ncd\n\nef"], [b"a", b"b\nc", b"d", b"\n", b"\nef"],
                                    [bytes([b]) for b in b"ab\ncd\n\nef"]])  # fmt: skip
def test_reads_do_not_depend_on_how_the_body_arrived(chunks: list[bytes]) -> None:
    body, reader = body_of(*chunks)
    assert body.readline() == b"ab\n"
    assert body.read(2) == b"cd"
    assert body.readline(5) == b"\n"
    assert list(body) == [b"\n", b"ef"]
    assert body.read() == b"" and body.read(3) == b""
    assert reader.asked == 1

    body, _ = body_of(*chunks)
    assert body.readline(1) == b"a" and body.readlines() == [b"b\n", b"cd\n", b"\n", b"ef"]
    body, _ = body_of(*chunks)
    assert b"".join(iter(lambda: body.read(3), b"")) == b"ab\ncd\n\nef"


def test_a_body_in_one_chunk_read_whole_is_not_copied() -> None:
    chunk = b"x" * 1000
    body, _ = body_of(chunk)
    assert body.read() is chunk


def test_a_read_waits_for_the_bytes_it_asked_for() -> None:
    body, _ = body_of(b"ab", eof=False)
    got: list[bytes] = []
    thread = threading.Thread(target=lambda: got.append(body.read(5)))
    thread.start()
    thread.join(0.05)
    assert thread.is_alive()
    body.feed(b"cde")
    thread.join(2)
    assert got == [b"abcde"]


def test_reading_below_half_the_high_water_resumes_the_loop() -> None:
    body, reader = body_of(b"x" * BODY_HIGH_WATER, b"x", eof=False)
    body.read(BODY_HIGH_WATER // 2)
    assert reader.drained == 0
    body.read(2)
    assert reader.drained == 1


def test_a_failed_body_raises_for_the_reader() -> None:
    body, _ = body_of(b"ab", eof=False)
    body.fail(ConnectionResetError("gone"))
    assert body.read(2) == b"ab"
    with pytest.raises(OSError, match="unavailable"):
        body.read(1)
