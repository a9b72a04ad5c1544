"""The ASGI engine over real sockets on 127.0.0.1: http, lifespan, WebSockets, drain."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest
from asgi_harness import serve, start_engine
from waiting import wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect
from wsgi_harness import read_response

from unbroken.engines.asgi.lifespan import LifespanFailed
from unbroken.engines.probe import ProbeFailed

pytestmark = pytest.mark.timeout(10)

Scope = dict[str, Any]


def get(path: str = "/", extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: test\r\n" + extra + b"\r\n"


async def echo_app(scope: Scope, receive: Any, send: Any) -> None:
    """Echo method, path, query and the whole body; text/plain."""
    if scope["type"] == "lifespan":
        raise RuntimeError("no lifespan here")
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = f"{scope['method']} {scope['path']} {scope['query_string'].decode()} ".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": answer + body})


def test_keep_alive_and_pipelining_on_the_shared_core() -> None:
    with serve(echo_app) as server, server.connect() as client:
        post = b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
        client.sendall(get("/a?x=1") + post + get("/caf%C3%A9"))
        answers = [read_response(client) for _ in range(3)]
        assert [body for _, _, body in answers] == [b"GET /a x=1 ", b"POST /b  hi",
                                                    "GET /café  ".encode()]
        assert answers[0][1]["content-length"] == "11" and "date" in answers[0][1]
        wait_until(lambda: server.engine.requests_served == 3, timeout=2,
                   message="the three requests counted")
        assert server.engine.connections == 1


def test_heads_from_lists_pairs_of_lists_and_one_shot_iterables_are_all_served() -> None:
    """A list of pairs is cached as a key; lists for pairs and a generator cannot be, and
    a generator must be read once only: each is served the same, twice."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["path"]
        pairs = [(b"content-type", b"text/plain"), (b"x-kind", kind.encode())]
        headers: Any = {"/list": pairs, "/lists": [list(pair) for pair in pairs],
                        "/iterable": (pair for pair in pairs)}[kind]  # fmt: skip
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    with serve(app) as server, server.connect() as client:
        for kind in ("/list", "/lists", "/iterable") * 2:
            client.sendall(get(kind))
            status, headers, body = read_response(client)
            assert (status, headers["x-kind"], headers["content-type"], body) == (
                200, kind, "text/plain", b"ok")


def test_streaming_request_body_arrives_in_pieces() -> None:
    pieces: list[bytes] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            pieces.append(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    with serve(app) as server, server.connect() as client:
        client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"3\r\nabc\r\n")
        wait_until(lambda: pieces, timeout=2, message="the first piece at the app")
        client.sendall(b"2\r\nde\r\n0\r\n\r\n")
        assert read_response(client)[0] == 204
    assert b"".join(pieces) == b"abcde" and len(pieces) >= 2


def test_streaming_response_is_chunked_and_keeps_the_connection() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with serve(app) as server, server.connect() as client:
        for _ in range(2):
            client.sendall(get())
            _, headers, body = read_response(client)
            assert headers["transfer-encoding"] == "chunked" and body == b"one,two,three"


def test_disconnect_reaches_a_waiting_app() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()  # the (empty) request
        receiving.set()
        seen.append((await receive())["type"])  # blocks until the client leaves

    receiving = threading.Event()
    with serve(app) as server:
        client = server.connect()
        client.sendall(get())
        assert receiving.wait(2)  # the app has its request and waits for the next message
        client.close()
        wait_until(lambda: seen, timeout=2, message="the app's next message")
    assert seen == ["http.disconnect"]


def test_app_error_before_the_head_is_a_500() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raise ValueError("boom")

    with serve(app) as server, server.connect() as client:
        client.sendall(get())
        status, _, body = read_response(client)
        assert status == 500 and body == b"Internal Server Error\n"


def lifespan_app(events: list[str], fail: bool = False) -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            if fail:
                await send({"type": "lifespan.startup.failed", "message": "no database"})
                return
            scope["state"]["greeting"] = b"hello"
            events.append("startup")
            await send({"type": "lifespan.startup.complete"})
            await receive()
            events.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["state"]["greeting"]})
    return app


def test_lifespan_startup_state_and_shutdown_on_drain() -> None:
    events: list[str] = []
    with serve(lifespan_app(events)) as server:
        assert events == ["startup"]
        with server.connect() as client:
            client.sendall(get())
            assert read_response(client)[2] == b"hello"
        server.drain(0.2)
    assert events == ["startup", "shutdown"]


def test_lifespan_startup_failure_raises() -> None:
    with pytest.raises(LifespanFailed, match="no database"):
        start_engine(lifespan_app([], fail=True))


def test_lifespan_raising_after_startup_began_is_a_failure_with_its_cause() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        raise KeyError("config missing")

    with pytest.raises(LifespanFailed) as caught:
        start_engine(app)
    assert isinstance(caught.value.__cause__, KeyError)


def test_probe_calls_the_app_in_process() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("lifespan unsupported")
        status = 200 if scope["path"] == "/healthz" else 503
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    engine, loop = start_engine(app)
    try:
        loop.run_until_complete(engine.probe("/healthz"))
        with pytest.raises(ProbeFailed, match="503"):
            loop.run_until_complete(engine.probe("/other"))
    finally:
        loop.close()


async def ws_echo_app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        raise RuntimeError("websockets only")
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            ws_echo_app.closed_with = message["code"]  # type: ignore[attr-defined]
            return
        await send({"type": "websocket.send", "text": "echo " + message["text"]})


def test_websocket_echo() -> None:
    with serve(ws_echo_app) as server, \
            ws_connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=2) as ws:
        for word in ("a", "b" * 70000):
            ws.send(word)
            assert ws.recv(timeout=2) == "echo " + word


def test_websocket_is_served_until_the_deadline_then_closed_with_1012() -> None:
    with serve(ws_echo_app) as server, \
            ws_connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=2) as ws:
        started = time.monotonic()
        drained = server.drain_in_background(1.0)
        wait_until(lambda: server.engine._server.draining, timeout=2, message="the drain begun")
        ws.send("still here")  # draining, before the deadline: still served
        assert ws.recv(timeout=2) == "echo still here"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=3)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        assert 0.9 < time.monotonic() - started < 2.5
        drained.result(5)
        assert ws_echo_app.closed_with == 1012  # type: ignore[attr-defined]


def test_streaming_response_is_ended_at_the_drain_deadline() -> None:
    async def events(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        while True:
            await send({"type": "http.response.body", "body": b"data: tick\n\n",
                        "more_body": True})
            await asyncio.sleep(0.05)

    with serve(events) as server, server.connect() as client:
        client.sendall(get())
        assert read_response(client, head_only=True)[0] == 200
        took = server.drain(0.5)
        assert 0.4 < took < 1.5
        # The ticks sent before the deadline may still be buffered; behind them the
        # connection ends (EOF or reset) at once, and without the chunked body's last
        # chunk: the client can tell the stream was cut, not finished.
        ended, received = read_until_closed(client, timeout=1.0)
        assert ended, received[-200:]
        assert not received.endswith(b"0\r\n\r\n"), received[-200:]


def read_until_closed(client: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Read what the server sends until it ends the connection: (whether it ended
    within `timeout`, the bytes received)."""
    deadline = time.monotonic() + timeout
    received = b""
    while (left := deadline - time.monotonic()) > 0:
        client.settimeout(left)
        try:
            chunk = client.recv(65536)
        except ConnectionResetError:
            return True, received
        except TimeoutError:
            break
        if not chunk:
            return True, received
        received += chunk
    return False, received


def _masked_frame(first_byte: int, payload: bytes) -> bytes:
    """A client's frame (RFC 6455 §5.2): masked, with a 64-bit length."""
    mask = b"\x01\x02\x03\x04"
    key = int.from_bytes(mask * (len(payload) // 4 + 1), "big") >> (
        8 * (4 - len(payload) % 4) if len(payload) % 4 else 0)
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")
    return bytes([first_byte, 0x80 | 127]) + len(payload).to_bytes(8, "big") + mask + masked


def test_a_deflate_bomb_is_closed_with_1009_before_it_is_inflated() -> None:
    """The message cap counts inflated bytes, and inflating stops at it: a 256 KiB
    compressed frame of 256 MiB of zeros never becomes 256 MiB in the worker."""
    import tracemalloc
    import zlib

    compressor = zlib.compressobj(wbits=-15)
    payload = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(256))
    payload += compressor.flush(zlib.Z_SYNC_FLUSH)
    assert payload.endswith(b"\x00\x00\xff\xff") and len(payload) < 512 * 1024
    frame = _masked_frame(0x80 | 0x40 | 0x2, payload[:-4])  # FIN, RSV1 (compressed), binary
    with serve(ws_echo_app) as server, server.connect() as client:
        client.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(4096)
        assert head.startswith(b"HTTP/1.1 101") and b"permessage-deflate" in head, head
        tracemalloc.start()
        try:
            client.sendall(frame)
            answer = b""
            client.settimeout(5)
            while len(answer) < 4:
                part = client.recv(4096)
                if not part:
                    break
                answer += part
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert answer[:1] == b"\x88" and answer[2:4] == (1009).to_bytes(2, "big"), answer
        assert peak < 64 * 1024 * 1024, f"{peak / 2**20:.0f} MiB"
