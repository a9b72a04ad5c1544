"""The response bodies, shared by the WSGI and the ASGI app so both serve the same bytes.

Built once at import: the benchmark measures the servers, not the app building bodies.
"""

from __future__ import annotations

import json

HELLO = b"Hello, world!"  # 13 bytes
JSON_SIZE = 16 * 1024
STREAM_CHUNK = b"x" * (64 * 1024)
STREAM_CHUNKS = 16  # 1 MiB in all
SLEEP_SECONDS = 0.05


def _json_body(size: int) -> bytes:
    """A realistic-looking JSON document padded to exactly `size` bytes."""
    items = [{"id": i, "name": f"item-{i}", "price": i * 1.25, "tags": ["a", "b"]}
             for i in range(120)]  # fmt: skip
    document = {"items": items, "pad": ""}
    missing = size - len(json.dumps(document, separators=(",", ":")).encode())
    if missing < 0:
        raise ValueError(f"the items alone exceed {size} bytes")
    document["pad"] = "p" * missing
    body = json.dumps(document, separators=(",", ":")).encode()
    assert len(body) == size
    return body


JSON = _json_body(JSON_SIZE)
