"""A sans-I/O request parser: llhttp for the grammar, this module for the limits.

Rules this module keeps:
1. No leniency of llhttp is enabled; llhttp rejects bare LF, obs-fold, CL+TE, bad
   chunk framing. We add what llhttp lacks: sizes (414/431/413, and 400 for chunk
   extensions over 4 KiB per message) and the checks in `rules.py`.
2. Events do not depend on how bytes are split across `feed` calls (only `BodyData`
   boundaries may differ). To keep that true, a limit is judged at the exact byte
   that crosses it, and only the bytes *before* that byte are given to llhttp.
3. llhttp consumes whatever it is given, including the next pipelined request. So
   we hand it one message at a time: the head up to its blank line, a
   Content-Length body up to its length, a chunked body up to the end of its trailer
   section. The head is therefore always seen by our own line scanner first, which
   is what lets us bound its size before httptools buffers a header value; a chunked
   body is read by our own framing reader alongside llhttp (sizes, extensions,
   trailers), which is what finds its end and the byte where a limit is crossed.
4. An error never discards the events before it: a valid request followed by
   garbage yields the request, then `RequestRejected`.
5. Nothing is refused from `on_header`: httptools calls it only when the next field
   starts, which llhttp reports early or late depending on where a `feed` ended. A
   field is judged when the head ends, a trailer when the message ends.
6. One shortcut past llhttp: a whole HTTP/1.1 or 1.0 head made only of the plainest
   pieces (a common method, an origin-form target of URI characters, token names,
   visible-ASCII values, one Host (optional in 1.0), at most one plain Content-Length,
   a Connection of exactly `close` or `keep-alive`, and nothing else that frames a
   body, expects or upgrades) is read by `_SIMPLE_HEAD` here, and its body, if
   it has one, is counted off here too (Phase.PLAIN_BODY). Every such head is one
   llhttp accepts and every check of `on_headers_complete` passes but Host's and the
   declared size's, which are still made, so the events are the ones llhttp's path
   gives; anything else goes to llhttp as before, whose state is untouched (it waits
   for a message's start either way).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

import httptools

from unbroken.http import rules
from unbroken.http.errors import (
    BadRequest,
    ContentTooLarge,
    HeaderFieldsTooLarge,
    HTTPError,
    URITooLong,
)
from unbroken.http.events import (
    MESSAGE_COMPLETE,
    BodyData,
    Event,
    RequestHead,
    RequestRejected,
)
from unbroken.http.forwarded import FORWARDED_FIELDS

KIB = 1024
# Fields the parser looks at; every other field is only stored. One set lookup per
# field keeps the common path to a lower() and an append.
_NOTED_FIELDS = rules.SINGLETON_FIELDS | FORWARDED_FIELDS | {
    b"transfer-encoding", b"expect", b"upgrade"}
# Rule 6: the heads read without llhttp. The target's characters are RFC 3986's pchar,
# "/", "?" and "%" (no "#": a fragment is refused by rules.check_target); a value is
# visible ASCII with inner spaces or tabs, its surrounding whitespace not its own.
_SIMPLE_HEAD = re.compile(
    rb"(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) (/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*)"
    rb" HTTP/1\.([01])\r\n"
    rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[ \t]*(?:[!-~]+(?:[ \t]+[!-~]+)*)?[ \t]*\r\n)*\r\n")
_SIMPLE_FIELD = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*((?:[!-~]+(?:[ \t]+[!-~]+)*)?)[ \t]*\r\n")
# A longer Content-Length (leading zeros, or beyond any body we would take) is llhttp's.
MAX_PLAIN_LENGTH_DIGITS = 15
# The fields _read_simple_head looks at: the parser's own, and Connection.
_SIMPLE_HEAD_NOTED = _NOTED_FIELDS | {b"connection"}
# Blank lines tolerated before a request line (RFC 9112 §2.2 allows "at least one").
MAX_LEADING_BLANK_BYTES = 64
# 16 hex digits hold any size llhttp accepts (64 bits); more can only be leading zeros,
# which would make each size line unbounded (RFC 9112 §7.1 asks recipients to guard
# against "potentially large hexadecimal numerals").
MAX_CHUNK_SIZE_DIGITS = 16
_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]*")
# A whole size line with no extension: what nearly every client sends.
_PLAIN_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})\r\n")
# The value of each byte as one hex digit, 0 for a byte that is not one.
_ONE_HEX_DIGIT = [int(chr(b), 16) if chr(b) in "0123456789abcdefABCDEF" else 0 for b in range(256)]
# Where a chunked message is: a size line, then (size > 0) its data and CRLF, and after
# the size-0 line the trailer section, up to its blank line, the only byte llhttp may
# end the message at.
_SIZE_LINE, _CHUNK_DATA, _TRAILERS, _BLANK_LINE = 0, 1, 2, 3


@dataclass(frozen=True)
class ParserLimits:
    """Sizes in bytes; a line's length excludes its CRLF."""

    request_line: int = 8 * KIB
    field_size: int = 8 * KIB
    fields: int = 100
    header_block: int = 64 * KIB
    max_body_size: int | None = None
    # All chunk extensions of one message together (RFC 9112 §7.1.1: a server "ought to
    # limit the total length of chunk extensions"; Go's CVE-2023-39326). 400 past it.
    chunk_extensions: int = 4 * KIB


class Phase(enum.Enum):
    HEAD = "head"  # waiting for, or inside, a request head
    LENGTH_BODY = "length body"
    PLAIN_BODY = "plain body"  # a Content-Length body after a head read by rule 6
    CHUNKED_BODY = "chunked body"
    CLOSED = "closed"  # last message was not keep-alive: later bytes are ignored
    FAILED = "failed"


# The members as module globals: `Phase.HEAD` is a lookup through the enum's metaclass
# in Python 3.11 (see engines/core/states.py), and the feed loop reads several per request.
HEAD, LENGTH_BODY, PLAIN_BODY, CHUNKED_BODY, CLOSED, FAILED = Phase


@dataclass(slots=True)
class ChunkedFraming:
    """Our own reading of a chunked body (see _feed_chunked_body), apart from
    MessageState so that a message without one does not pay for its fields. It is
    updated only for bytes that are then given to llhttp."""

    state: int = _SIZE_LINE  # then _CHUNK_DATA, _TRAILERS, and last _BLANK_LINE
    left: int = 0  # in _CHUNK_DATA: bytes of data, then its CRLF, still to come
    size_digits: int = 0  # hex digits of the size line so far
    size_value: int = 0
    in_extension: bool = False  # past the size digits, before the line's LF
    line_extension: int = 0  # bytes after the digits in this size line, its CR included
    extension_bytes: int = 0  # chunk extensions of the whole message, CRs excluded
    body: int = 0  # data bytes the chunk sizes announced so far
    trailer_line: int = 0  # bytes of the current trailer line before its LF
    trailer_bytes: int = 0
    problem: HTTPError | None = None  # the first trailer refused, told at the end


@dataclass(slots=True)
class MessageState:
    """What we know about the message being parsed; replaced for each message."""

    head_done: bool = False
    line_length: int = 0
    lines: int = 0
    leading_bytes: int = 0
    block_bytes: int = 0
    target: list[bytes] = field(default_factory=list)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    counts: dict[bytes, int] = field(default_factory=dict)  # of SINGLETON_FIELDS only
    content_length: int | None = None
    chunked: bool = False
    expect: bytes | None = None
    upgrade: bytes | None = None
    forwarded: bool = False
    keep_alive: bool = False
    remaining: int = 0
    body_bytes: int = 0
    trailer_fields: int = 0
    framing: ChunkedFraming | None = None  # for a chunked body only
    request_line: int = 0  # its length without CRLF, to find doubled spaces
    host: bytes | None = None


class RequestParser:
    """Feed bytes, get events. One instance per connection."""

    def __init__(self, limits: ParserLimits) -> None:
        self._limits = limits
        self._whole_head_limit = min(limits.request_line, limits.field_size, limits.header_block)
        self._whole_head_lines = limits.fields + 2  # the request line and the blank line
        # llhttp's parser, made when a head first needs it (rule 6): a connection whose
        # every head takes the shortcut (one request, Connection: close) never does.
        self._http: httptools.HttpRequestParser | None = None
        self.phase = HEAD
        self._events: list[Event] = []
        self._heads_parsed = 0
        self._valid_host: bytes | None = None
        self._m = MessageState()  # replaced for each message

    # ------------------------------------------------------------------ feeding

    def feed(self, data: bytes) -> list[Event]:
        """Parse `data`; return the events it completed (possibly none)."""
        events: list[Event] = []
        self._events = events
        position, end = 0, len(data)
        try:
            while position < end:
                if self.phase is HEAD:
                    position = self._feed_head(data, position)
                elif self.phase is PLAIN_BODY:
                    position = self._feed_plain_body(data, position)
                elif self.phase is LENGTH_BODY:
                    position = self._feed_length_body(data, position)
                elif self.phase is CHUNKED_BODY:
                    position = self._feed_chunked_body(data, position)
                else:
                    break
        except HTTPError as error:
            self.phase = FAILED
            events.append(RequestRejected(error))
        return events

    def _execute(self, data: bytes, start: int, stop: int) -> None:
        """Give llhttp `data[start:stop]`, translating its errors into ours."""
        if stop <= start:
            return
        http = self._http
        if http is None:
            http = self._http = httptools.HttpRequestParser(self)
        try:
            if start == 0 and stop == len(data):
                http.feed_data(data)
            else:
                http.feed_data(memoryview(data)[start:stop])
        except httptools.HttpParserUpgrade:
            # CONNECT or Upgrade: we never switch protocols, so the message ends
            # here and the connection closes after the response (see on_headers_complete).
            self.phase = CLOSED
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, HTTPError):
                raise cause from None
            raise BadRequest(str(exc)) from None
        except httptools.HttpParserError as exc:
            raise BadRequest(str(exc) or type(exc).__name__) from None

    # -------------------------------------------------------------- the head

    def _feed_head(self, data: bytes, start: int) -> int:
        """Scan lines up to the blank line, judging limits before llhttp sees a byte."""
        if self._m.lines == 0 and self._m.line_length == 0:
            whole = self._feed_whole_head(data, start)
            if whole is not None:
                return whole
        cursor, end = start, len(data)
        while cursor < end:
            newline = data.find(b"\n", cursor)
            stop = end if newline == -1 else newline
            self._measure_segment(data, start, cursor, stop - cursor)
            if newline == -1:
                break
            cursor = newline + 1
            if self._end_line(data, start, newline):
                heads_before = self._heads_parsed
                self._execute(data, start, cursor)
                if self._heads_parsed == heads_before and self.phase is HEAD:
                    raise BadRequest("malformed request head")
                return cursor
        self._execute(data, start, end)
        return end

    def _feed_whole_head(self, data: bytes, start: int) -> int | None:
        """The common case, in one step: a whole head that arrived at once and is smaller
        than every size limit. Its lines cannot break a limit when the head itself is
        shorter than the shortest one, so only the line count is left to check; llhttp
        still judges the syntax. Returns None to leave anything else to the line scanner.
        """
        blank = data.find(b"\r\n\r\n", start)
        if blank == -1 or blank + 4 - start > self._whole_head_limit:
            return None
        line_end = data.find(b"\n", start) - 1  # at the request line's CR, if it has one
        if line_end <= start or data[start] == 13:
            # Blank lines, a bare LF or stray CRs before the request line: llhttp skips
            # them, our scanner judges them, so they must always go to the scanner.
            return None
        stop = blank + 4
        if data.count(b"\n", start, stop) > self._whole_head_lines:
            return None
        if self._read_simple_head(data, start, line_end, stop):
            return stop
        self._m.request_line = line_end - start
        heads_before = self._heads_parsed
        self._execute(data, start, stop)
        if self._heads_parsed == heads_before and self.phase is HEAD:
            raise BadRequest("malformed request head")
        return stop

    def _read_simple_head(self, data: bytes, start: int, line_end: int, stop: int) -> bool:
        """Rule 6: the events of a plain bodiless head, without llhttp; False (and nothing
        done) for any head that is not one, which llhttp's path then reads."""
        match = _SIMPLE_HEAD.match(data, start, stop)
        if match is None or match.end() != stop:
            return False
        host: bytes | None = None
        length: int | None = None
        forwarded = typed = closes = keeps = False
        headers = []
        for name, value in _SIMPLE_FIELD.findall(data, line_end + 2, stop - 2):
            name = name.lower()
            if name in _SIMPLE_HEAD_NOTED:
                if name == b"host" and host is None:
                    host = value
                elif name in FORWARDED_FIELDS:
                    forwarded = True
                elif name == b"content-type" and not typed:
                    typed = True
                elif name == b"content-length" and length is None and value.isdigit() and (
                        len(value) <= MAX_PLAIN_LENGTH_DIGITS):
                    length = int(value)
                elif name != b"connection":
                    return False  # framing, Expect, Upgrade, a repeat: llhttp's path judges
                else:
                    token = value.lower()
                    if token == b"close":
                        closes = True
                    elif token == b"keep-alive":
                        keeps = True
                    else:
                        return False  # a list, or Upgrade: llhttp's path reads the tokens
            headers.append((name, value))
        http10 = match[3] == b"0"
        if host is None and not http10:
            return False  # HTTP/1.1 requires Host: the full path says so
        # llhttp's should_keep_alive: 1.1 unless a close, 1.0 only with a keep-alive (a
        # close beside it is not looked at).
        keep_alive = keeps if http10 else not closes
        if host is not None and host != self._valid_host:
            rules.check_host(host)
            self._valid_host = host
        limit = self._limits.max_body_size
        if length and limit is not None and length > limit:
            raise ContentTooLarge(f"declared body of {length} bytes over {limit}")
        self._heads_parsed += 1
        head = RequestHead(match[1], match[2], "1.0" if http10 else "1.1", headers, keep_alive,
                           False, length, False, None, forwarded, bool(length))  # fmt: skip
        if length:
            self._events.append(head)
            self.phase = PLAIN_BODY
            self._m.remaining = length
            self._m.keep_alive = keep_alive
        else:
            self._events += (head, MESSAGE_COMPLETE)
            if not keep_alive:
                self.phase = CLOSED
        return True

    def _feed_plain_body(self, data: bytes, start: int) -> int:
        """Rule 6: the body of a head read without llhttp, as it comes (whole `data`
        uncopied), then the message's end."""
        message = self._m
        end = len(data)
        stop = min(end, start + message.remaining)
        message.remaining -= stop - start
        self._events.append(BodyData(data if start == 0 and stop == end else data[start:stop]))
        if not message.remaining:
            self._events.append(MESSAGE_COMPLETE)
            self.phase = HEAD if message.keep_alive else CLOSED
            self._m = MessageState()
        return stop

    def _measure_segment(self, data: bytes, start: int, cursor: int, length: int) -> None:
        """Add `length` bytes to the current line; raise at the first byte over a limit."""
        before = self._m.line_length
        after = before + length
        limits = self._limits
        overflow: int | None = None
        error: HTTPError | None = None
        if self._m.lines == 0:
            allowed = limits.request_line + 1  # + the CR
            if after > allowed:
                overflow, error = allowed - before, URITooLong("request line too long")
        else:
            allowed = limits.field_size + 1
            if after > allowed:
                overflow, error = allowed - before, HeaderFieldsTooLarge("header field too large")
            # +1: the CR of the closing blank line is not part of the block.
            room = limits.header_block + 1 - self._m.block_bytes
            if length > room and (overflow is None or room < overflow):
                overflow, error = room, HeaderFieldsTooLarge("header block too large")
            self._m.block_bytes += length
        if error is not None and overflow is not None:
            self._execute(data, start, cursor + overflow)
            raise error
        self._m.line_length = after

    def _end_line(self, data: bytes, start: int, newline: int) -> bool:
        """Account for a finished line; return True when it was the blank end of the head."""
        length, self._m.line_length = self._m.line_length, 0
        if length > 1:
            if self._m.lines == 0:
                self._m.request_line = length - 1  # without its CR
            self._m.lines += 1
            if self._m.lines > 1:
                self._m.block_bytes += 1
            if self._m.lines - 1 > self._limits.fields:
                self._execute(data, start, newline)
                raise HeaderFieldsTooLarge("too many header fields")
            if self._m.block_bytes > self._limits.header_block:
                self._execute(data, start, newline)
                raise HeaderFieldsTooLarge("header block too large")
            return False
        if self._m.lines == 0:
            if length == 0:
                # llhttp skips a bare LF here; we refuse bare LF everywhere (the whole-head
                # path leaves any leading blank line to this scanner, for one verdict).
                raise BadRequest("bare LF before the request line")
            self._m.leading_bytes += length + 1
            if self._m.leading_bytes > MAX_LEADING_BLANK_BYTES:
                raise BadRequest("too many blank lines before the request line")
            return False
        return True

    # -------------------------------------------------------------- the body

    def _feed_length_body(self, data: bytes, start: int) -> int:
        stop = min(len(data), start + self._m.remaining)
        self._m.remaining -= stop - start
        self._execute(data, start, stop)
        return stop

    def _feed_chunked_body(self, data: bytes, start: int) -> int:
        """Follow the chunked framing ourselves, then give llhttp exactly the bytes read.

        llhttp buffers chunk extensions unseen and cannot stop at a message's end, so we
        read the framing alongside it (llhttp still judges every byte's syntax): that
        finds the exact byte where the message ends, and the exact byte where the
        extensions, the trailers or the body cross their limit.
        """
        message = self._m
        framing = message.framing
        assert framing is not None
        end = len(data)
        cursor = start
        error: HTTPError | None = None
        last_line = -1  # where the trailer section's blank line starts, once found
        while cursor < end and error is None:
            state = framing.state
            if state == _CHUNK_DATA:
                take = min(framing.left, end - cursor)
                framing.left -= take
                cursor += take
                if not framing.left:
                    framing.state = _SIZE_LINE
            elif state == _SIZE_LINE:
                if not framing.size_digits and not framing.in_extension:
                    cursor = self._skip_plain_chunks(framing, data, cursor, end)
                    if cursor == end or framing.state != _SIZE_LINE:
                        continue
                cursor, error = self._read_size_line(framing, data, cursor, end)
            else:
                cursor, error, last_line = self._read_trailers(framing, data, cursor, end)
                if last_line >= 0:
                    break
        if last_line < 0:
            self._execute(data, start, cursor)
        else:
            # The blank line alone, last: if llhttp saw the message end anywhere before
            # it, on_message_complete finds us still reading and refuses the request.
            self._execute(data, start, last_line)
            framing.state = _BLANK_LINE
            self._execute(data, last_line, cursor)
            if self._m is message:
                raise BadRequest("malformed chunked body")
        if error is not None:
            raise error
        return cursor

    def _skip_plain_chunks(
        self, framing: ChunkedFraming, data: bytes, cursor: int, end: int
    ) -> int:
        """Pass over whole chunks without extensions in one loop (20,000 one-byte chunks
        must stay cheap); anything else is left to _read_size_line."""
        match = _PLAIN_SIZE_LINE.match
        limit = self._limits.max_body_size
        framed = framing.body
        while True:
            # A one-digit size line, the tiny-chunk case, without the regex.
            if (
                cursor + 3 <= end
                and (size := _ONE_HEX_DIGIT[data[cursor]])
                and data[cursor + 1] == 13
                and data[cursor + 2] == 10
            ):
                line_end = cursor + 3
            elif (line := match(data, cursor, end)) is not None:
                size, line_end = int(line[1], 16), line.end()
            else:
                break
            if not size or (limit is not None and framed + size > limit):
                break
            framed += size
            after = line_end + size + 2  # its data and the CRLF after them
            if after > end:
                framing.state = _CHUNK_DATA
                framing.left = after - end
                cursor = end
                break
            cursor = after
        framing.body = framed
        return cursor

    def _read_size_line(
        self, framing: ChunkedFraming, data: bytes, cursor: int, end: int
    ) -> tuple[int, HTTPError | None]:
        """Read (part of) a chunk-size line; return where reading stopped, and the error
        whose first byte is there, if one is."""
        newline = data.find(b"\n", cursor, end)
        stop = end if newline == -1 else newline
        extension_start = cursor
        if not framing.in_extension:
            digits_end = _HEX_DIGITS.match(data, cursor, stop).end()  # type: ignore[union-attr]
            count = digits_end - cursor
            if count:
                if framing.size_digits + count > MAX_CHUNK_SIZE_DIGITS:
                    over = cursor + MAX_CHUNK_SIZE_DIGITS - framing.size_digits
                    return over, BadRequest("chunk size has too many digits")
                framing.size_digits += count
                framing.size_value = framing.size_value << (4 * count) | int(
                    data[cursor:digits_end], 16)
            framing.in_extension = digits_end < stop
            extension_start = digits_end
        if framing.in_extension:
            # +1: the line's CR, which ends the extension rather than belonging to it.
            room = self._limits.chunk_extensions + 1 - framing.extension_bytes
            length = framing.line_extension + stop - extension_start
            if length > room:
                over = extension_start + room - framing.line_extension
                return over, BadRequest("chunk extensions too long")
            framing.line_extension = length
        if newline == -1:
            return end, None
        # The line is complete; llhttp judges whether it was well formed.
        framing.extension_bytes += max(framing.line_extension - 1, 0)
        size = framing.size_value
        framing.in_extension = False
        framing.size_digits = framing.size_value = framing.line_extension = 0
        if not size:
            framing.state = _TRAILERS
            return newline + 1, None
        limit = self._limits.max_body_size
        framing.body += size
        if limit is not None and framing.body > limit:
            return newline, ContentTooLarge(f"chunked body over {limit} bytes")
        framing.state = _CHUNK_DATA
        framing.left = size + 2  # and the CRLF after the data
        return newline + 1, None

    def _read_trailers(
        self, framing: ChunkedFraming, data: bytes, cursor: int, end: int
    ) -> tuple[int, HTTPError | None, int]:
        """Read (part of) a trailer line; the third value is where the blank line that
        ends the message starts, or -1 until it is complete."""
        newline = data.find(b"\n", cursor, end)
        stop = end if newline == -1 else newline + 1
        # The trailer section has the head's block limit, with its blank line's CRLF.
        room = self._limits.header_block + 2 - framing.trailer_bytes
        if stop - cursor > room:
            return cursor + room, HeaderFieldsTooLarge("trailer section too large"), -1
        framing.trailer_bytes += stop - cursor
        if newline == -1:
            framing.trailer_line += stop - cursor
            return end, None, -1
        line = framing.trailer_line + newline - cursor
        framing.trailer_line = 0
        if line > 1:
            return stop, None, -1
        return stop, None, max(cursor, newline - line)

    # ------------------------------------------------ llhttp callbacks (httptools)

    def on_url(self, url: bytes) -> None:
        self._m.target.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Rule 5: nothing here refuses the request (a refused coding followed by a bad
        # line gave 501 or 400 by the split).
        # llhttp drops the OWS before a value but hands over the OWS after it, which is
        # no more part of the value (RFC 9112 §5): `Host: h ` names the host `h`.
        # rstrip returns the same object when there is nothing to strip.
        value = value.rstrip(b" \t")
        message = self._m
        if message.head_done:
            self._on_trailer(name, value)
            return
        name = name.lower()
        if name in _NOTED_FIELDS:
            self._note_field(message, name, value)
        message.headers.append((name, value))

    def _note_field(self, message: MessageState, name: bytes, value: bytes) -> None:
        if name in rules.SINGLETON_FIELDS:
            message.counts[name] = message.counts.get(name, 0) + 1
        if name == b"host":
            message.host = value
        elif name == b"transfer-encoding":
            message.chunked = True  # its value is judged in on_headers_complete
        elif name == b"content-length":
            message.content_length = int(value)
        elif name == b"expect":
            message.expect = value
        elif name == b"upgrade":
            message.upgrade = value.lower()
        elif name in FORWARDED_FIELDS:
            message.forwarded = True

    def _on_trailer(self, name: bytes, value: bytes) -> None:
        """Judge a trailer field, but refuse only at the message's end (see on_header)."""
        framing = self._m.framing
        if framing is not None and framing.problem is not None:
            return
        self._m.trailer_fields += 1
        try:
            rules.check_trailer(name)
            if self._m.trailer_fields > self._limits.fields:
                raise HeaderFieldsTooLarge("too many trailer fields")
            if len(name) + len(value) + 2 > self._limits.field_size:
                raise HeaderFieldsTooLarge("trailer field too large")
        except HTTPError as error:
            if framing is None:
                raise  # a chunked upgrade request, read as a head (see _enter_body_phase)
            framing.problem = error

    def on_headers_complete(self) -> None:
        message = self._m
        message.head_done = True
        self._heads_parsed += 1
        http = self._http
        assert http is not None  # llhttp calls this, so it was made
        method: bytes = http.get_method()
        target = message.target[0] if len(message.target) == 1 else b"".join(message.target)
        version: str = http.get_http_version()
        # The checks below are rules.py's; each is called only when its cheap
        # common-case test (HTTP/1.1, origin-form, one Host, nothing else) fails.
        if version != "1.1" or message.chunked:
            if message.chunked:
                for name, value in message.headers:
                    if name == b"transfer-encoding":
                        rules.check_transfer_encoding(value)
            rules.check_version(version, message.chunked)
        if target[:1] != b"/" or b"#" in target or method == b"CONNECT":
            rules.check_target(method, target)
        if message.request_line != len(method) + len(target) + 10:  # 2 spaces, HTTP/x.y
            raise BadRequest("request line parts not separated by exactly one space")
        counts = message.counts
        if len(counts) != 1 or counts.get(b"host") != 1:
            rules.check_singletons(counts, version)
        host = message.host
        if host is not None and host != self._valid_host:
            rules.check_host(host)
            self._valid_host = host  # a keep-alive client sends the same Host each time
        expect_continue = False
        if message.expect is not None:
            expect_continue = rules.expects_continue(message.expect, version)
        if message.content_length is not None:
            self._check_declared_size()
        upgrade = bool(http.should_upgrade())
        keep_alive = bool(http.should_keep_alive()) and not upgrade
        message.keep_alive = keep_alive
        self._events.append(
            RequestHead(
                method, target, version, message.headers, keep_alive,
                expect_continue and not upgrade, message.content_length, message.chunked,
                message.upgrade, message.forwarded,
                message.chunked or bool(message.content_length),
            )
        )  # fmt: skip
        self._enter_body_phase(upgrade)

    def _check_declared_size(self) -> None:
        limit = self._limits.max_body_size
        declared = self._m.content_length
        if limit is not None and declared is not None and declared > limit:
            raise ContentTooLarge(f"declared body of {declared} bytes over {limit}")

    def _enter_body_phase(self, upgrade: bool) -> None:
        if upgrade:
            return  # llhttp ends the message now; see _execute
        if self._m.chunked:
            self.phase = CHUNKED_BODY
            self._m.framing = ChunkedFraming()
        elif self._m.content_length:
            self.phase = LENGTH_BODY
            self._m.remaining = self._m.content_length

    def on_body(self, body: bytes) -> None:
        self._m.body_bytes += len(body)
        limit = self._limits.max_body_size
        if limit is not None and self._m.body_bytes > limit:
            raise ContentTooLarge(f"body over {limit} bytes")
        self._events.append(BodyData(body))

    def on_message_complete(self) -> None:
        framing = self._m.framing
        if framing is not None:
            if framing.state != _BLANK_LINE:
                raise BadRequest("chunked message ended where its framing says it does not")
            if framing.problem is not None:
                raise framing.problem
        self._events.append(MESSAGE_COMPLETE)
        self.phase = HEAD if self._m.keep_alive else CLOSED
        self._m = MessageState()

    # ---------------------------------------------------------------- state

    @property
    def in_head(self) -> bool:
        """True while some bytes of a request head have arrived but not all."""
        # Every head byte passes our line scanner before llhttp sees it (a whole head
        # given at once is parsed to its end), so its counters tell; no on_message_begin.
        message = self._m
        return self.phase is HEAD and bool(
            message.lines or message.line_length or message.leading_bytes)
