"""permessage-deflate whose inflating stops at the message size cap.

wsproto's `PerMessageDeflate` inflates each received piece whole
(`decompressor.decompress(data)`), so a message's size can only be checked after it
is in memory: one 256 KiB read of a deflate bomb (about 1000:1) is 256 MiB of zeros
before any cap can say no. Here the cap is counted on the *inflated* bytes and passed
to zlib as `max_length`, so no more than the cap plus one byte is ever produced; past
it the frame fails with 1009 (Message Too Big), which wsproto turns into a
`CloseConnection` event (websocket.py answers it with a close frame of that code).
"""

from __future__ import annotations

import zlib

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol


class BoundedDeflate(PerMessageDeflate):
    def __init__(self, max_message_size: int) -> None:
        super().__init__()
        self.max_message_size = max_message_size
        self._inflated = 0  # bytes of the current message produced so far

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        decompressor = self._decompressor
        assert decompressor is not None
        room = self.max_message_size - self._inflated
        try:
            out = decompressor.decompress(data, room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self.max_message_size:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_payload_data(self, proto: FrameDecoder | FrameProtocol,
                                   data: bytes) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(self, proto: FrameDecoder | FrameProtocol,
                               fin: bool) -> bytes | CloseReason | None:
        """wsproto's own, with the inflating bounded (the same steps, in its order)."""
        if not fin:
            return None
        compressed, self._inbound_compressed = self._inbound_compressed, None
        if not self._inbound_is_compressible or not compressed:
            return None
        tail = self._inflate(b"\x00\x00\xff\xff")  # the end of the block (RFC 7692 §7.2.2)
        self._inflated = 0
        if isinstance(tail, CloseReason):
            return tail
        assert self._decompressor is not None
        try:
            tail += self._decompressor.flush()  # within the cap, nothing is left unread
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        no_context_takeover = (self.server_no_context_takeover if proto.client
                               else self.client_no_context_takeover)
        if no_context_takeover:
            self._decompressor = None
        return tail
