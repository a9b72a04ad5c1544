"""One ASGI `websocket` session: wsproto for the frames, the connection core for the bytes.

Rules:
1. Until `websocket.accept` the session is an ordinary exchange (an `ExchangeListener`);
   accepting writes wsproto's 101 through `Exchange.switch_protocols`, and from then
   on the session is the connection's `UpgradedStream`.
2. Closing `websocket.close` before accepting answers HTTP 403, as the ASGI spec asks.
3. At the drain deadline the server closes with 1012 (Service Restart) so clients
   reconnect to a new worker; the app's `receive` then gets `websocket.disconnect`
   with code 1012, and the core aborts the socket if the client does not answer
   within its CLOSE_HANDSHAKE_TIMEOUT.
4. Reading pauses while the application has more than `MAX_QUEUED` messages unread.
5. A message may be `MAX_MESSAGE_SIZE` bytes as the app gets it, i.e. after any
   permessage-deflate inflating, which stops at that cap (deflate.py): more is closed
   with 1009 before it is in memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from unbroken.engines.asgi.deflate import BoundedDeflate
from unbroken.engines.asgi.http import ASGIApp, ClientDisconnected, Message, WriteBackPressure
from unbroken.engines.core.exchange import Exchange
from unbroken.http.response import plan_response

error_log = logging.getLogger("unbroken.error")

SERVICE_RESTART = 1012  # RFC 6455 registry: "Service Restart", clients should reconnect
ABNORMAL_CLOSURE = 1006
INTERNAL_ERROR = 1011
MESSAGE_TOO_BIG = 1009
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
MAX_QUEUED = 16
# How long we wait for the client's answer to a close we started, before closing TCP.
CLOSE_TIMEOUT = 5.0


class WebSocketSession(WriteBackPressure):
    def __init__(self, exchange: Exchange, loop: asyncio.AbstractEventLoop) -> None:
        self._exchange = exchange
        self._connection = exchange.connection
        self._loop = loop
        self._ws = WSConnection(ConnectionType.SERVER)
        head = exchange.head
        self._ws.initiate_upgrade_connection(head.headers, head.target.decode("latin-1"))
        requests = [event for event in self._ws.events() if isinstance(event, Request)]
        self.subprotocols: list[str] = list(requests[0].subprotocols) if requests else []
        self._inbox: deque[Message] = deque([{"type": "websocket.connect"}])
        self._inbox_waiter: asyncio.Future[None] | None = None
        self._parts: list[Any] = []
        self._part_size = 0
        self._accepted = False
        self._close_sent = False
        self._gone: Message | None = None  # the disconnect message, once the session ended
        self._writable: asyncio.Future[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None

    # ----------------------------- ExchangeListener (before accept) and UpgradedStream

    def body_received(self, data: bytes) -> int:
        return 0  # a GET upgrade has no body

    def body_complete(self) -> None:
        pass

    def body_failed(self, error: Exception) -> None:
        self._disconnect(ABNORMAL_CLOSURE)

    def connection_lost(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._disconnect(ABNORMAL_CLOSURE)
        self.writing_resumed()

    def eof_received(self) -> None:
        self._disconnect(ABNORMAL_CLOSURE)

    def deadline_reached(self) -> None:
        """Rule 3: the worker is past its drain deadline."""
        self._start_close(SERVICE_RESTART, "server restarting")
        self._disconnect(SERVICE_RESTART)

    def data_received(self, data: bytes) -> None:
        try:
            self._ws.receive_data(data)
            for event in self._ws.events():
                self._on_event(event)
        except (LocalProtocolError, RemoteProtocolError):
            self._connection.close()
            self._disconnect(ABNORMAL_CLOSURE)

    def _on_event(self, event: Any) -> None:
        if isinstance(event, TextMessage | BytesMessage):
            self._on_message_part(event)
        elif isinstance(event, Ping):
            self._connection.write(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            if self._ws.state is ConnectionState.REMOTE_CLOSING:
                self._connection.write(self._ws.send(event.response()))
            elif self._ws.state is ConnectionState.OPEN:
                # Not the client's close: wsproto failed a frame (a bad one, or one
                # inflating past the cap: deflate.py) and names the code; say it.
                self._connection.write(self._ws.send(CloseConnection(event.code, event.reason)))
            self._connection.close()
            self._disconnect(event.code, event.reason or "")

    def _on_message_part(self, event: TextMessage | BytesMessage) -> None:
        self._parts.append(event.data)
        self._part_size += len(event.data)
        if self._part_size > MAX_MESSAGE_SIZE:
            self._start_close(MESSAGE_TOO_BIG, "message too big")
            self._disconnect(MESSAGE_TOO_BIG)
            return
        if not event.message_finished:
            return
        if isinstance(event, TextMessage):
            message: Message = {"type": "websocket.receive", "text": "".join(self._parts)}
        else:
            message = {"type": "websocket.receive", "bytes": b"".join(self._parts)}
        self._parts.clear()
        self._part_size = 0
        self._deliver(message)
        if len(self._inbox) > MAX_QUEUED:
            self._connection.pause_reading("websocket")

    def _deliver(self, message: Message) -> None:
        self._inbox.append(message)
        waiter, self._inbox_waiter = self._inbox_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _disconnect(self, code: int, reason: str = "") -> None:
        if self._gone is None:
            self._gone = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._deliver(self._gone)

    # --------------------------------------------------------------- the app's side

    async def receive(self) -> Message:
        while not self._inbox:
            if self._gone is not None:
                return self._gone
            self._inbox_waiter = waiter = self._loop.create_future()
            await waiter
        message = self._inbox.popleft()
        if len(self._inbox) <= MAX_QUEUED // 2:
            self._connection.resume_reading("websocket")
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self._gone is not None or self._close_sent:
            raise ClientDisconnected(f"{kind!r} on a closed WebSocket")
        if not self._accepted:
            self._handshake(message)
            return
        if kind == "websocket.send":
            text = message.get("text")
            event = TextMessage(data=text) if text is not None else \
                BytesMessage(data=message.get("bytes") or b"")
            self._connection.write(self._ws.send(event))
            if self._writable is not None:
                await self._writable
        elif kind == "websocket.close":
            self._start_close(message.get("code") or 1000, message.get("reason") or "")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on an open WebSocket")

    def _handshake(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            headers = [(bytes(n).lower(), bytes(v)) for n, v in message.get("headers", ())]
            response = self._ws.send(AcceptConnection(
                subprotocol=message.get("subprotocol"),
                extensions=[BoundedDeflate(MAX_MESSAGE_SIZE)], extra_headers=headers))
            if not self._exchange.switch_protocols(response, 101, self):
                self._disconnect(ABNORMAL_CLOSURE)
                raise ClientDisconnected("the client left before the handshake")
            self._accepted = True
        elif kind == "websocket.close":
            self._reject(403, b"Forbidden")
        else:
            raise RuntimeError(f"expected 'websocket.accept' or 'websocket.close', got {kind!r}")

    def _reject(self, status: int, reason: bytes) -> None:
        """Answer the upgrade request with a plain HTTP error and end the session."""
        exchange = self._exchange
        body = b"%d %s\n" % (status, reason)
        plan = plan_response(status, reason, [(b"content-type", b"text/plain")],
                             request_method=b"GET", request_version=exchange.head.version,
                             date_field=exchange.server.date_field(), length_hint=len(body))
        exchange.send(plan, body, True)
        self._close_sent = True
        self._disconnect(ABNORMAL_CLOSURE)

    def _start_close(self, code: int, reason: str) -> None:
        if self._close_sent or not self._accepted or self._ws.state is not ConnectionState.OPEN:
            return
        self._close_sent = True
        self._connection.write(self._ws.send(CloseConnection(code=code, reason=reason)))
        self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, self._connection.close)

    async def run(self, app: ASGIApp, scope: dict[str, Any], running: dict[object, Any]) -> None:
        """Run the app for this session; remove self from `running` when it returns."""
        try:
            await app(scope, self.receive, self.send)
        except ClientDisconnected:
            self._finish(1000, 403)
        except Exception:
            error_log.exception("error in WebSocket application %r", scope["path"])
            self._finish(INTERNAL_ERROR, 500)
        else:
            self._finish(1000, 403)
        finally:
            running.pop(self, None)

    def _finish(self, close_code: int, http_status: int) -> None:
        """The app returned: close what it left open."""
        if not self._accepted:
            if self._gone is None:
                self._reject(http_status, b"Forbidden" if http_status == 403 else
                             b"Internal Server Error")
            return
        self._start_close(close_code, "")
