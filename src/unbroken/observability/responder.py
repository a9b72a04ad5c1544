"""A tiny HTTP/1.0 responder served inside the master's selectors loop.

For the readiness and metrics endpoints only: GET of a path, one response, close.
It must never block or grow the master's loop, so:

1. Every socket is non-blocking; reads and writes happen only when select() said so.
2. A request head is at most MAX_HEAD bytes and must arrive within REQUEST_TIMEOUT;
   `sweep()` (called every tick) closes connections past their deadline.
3. At most MAX_CONNECTIONS at once; beyond that a new connection is closed at once
   (a scraper retries; a slowloris cannot starve the master).
4. The answer is computed by `answer(path)` in the loop, from state already in memory.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import time
from collections.abc import Callable

from unbroken.sockets import bind, describe_listener, parse_address

log = logging.getLogger("unbroken.observability")

MAX_HEAD = 8 * 1024
MAX_CONNECTIONS = 32
REQUEST_TIMEOUT = 5.0
BACKLOG = 64
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           503: "Service Unavailable"}

Answer = tuple[int, str, bytes]  # status, content type, body


class _Exchange:
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.inbox = b""
        self.outbox = b""


class Responder:
    def __init__(self, address: str, selector: selectors.BaseSelector,
                 answer: Callable[[str], Answer]) -> None:
        self.address = address
        self.selector = selector
        self.answer = answer
        self.listener: socket.socket | None = None
        self.exchanges: dict[int, _Exchange] = {}

    def open(self) -> None:
        self.listener = bind(parse_address(self.address), BACKLOG)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, self._on_accept)

    @property
    def where(self) -> str:
        return describe_listener(self.listener) if self.listener else self.address

    def _on_accept(self, events: int) -> None:
        assert self.listener is not None
        for _ in range(MAX_CONNECTIONS):
            try:
                sock, _peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                # Back-pressure (EMFILE and friends): the listener stays readable and
                # select() brings us back next tick; never crash the master for it.
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("%s: cannot accept (%s)", self.address, error.strerror)
                    return
                raise
            if len(self.exchanges) >= MAX_CONNECTIONS:
                sock.close()
                continue
            sock.setblocking(False)
            exchange = _Exchange(sock, time.monotonic() + REQUEST_TIMEOUT)
            self.exchanges[sock.fileno()] = exchange
            self.selector.register(sock, selectors.EVENT_READ,
                                   lambda events, e=exchange: self._on_event(e, events))

    def _on_event(self, exchange: _Exchange, events: int) -> None:
        try:
            if events & selectors.EVENT_READ and not exchange.outbox:
                self._read(exchange)
            if exchange.outbox:
                self._write(exchange)
        except OSError:
            self._close(exchange)

    def _read(self, exchange: _Exchange) -> None:
        data = exchange.sock.recv(MAX_HEAD)
        if not data:
            self._close(exchange)
            return
        exchange.inbox += data
        if b"\r\n\r\n" in exchange.inbox or b"\n\n" in exchange.inbox:
            self._respond(exchange, *self._route(exchange.inbox))
        elif len(exchange.inbox) > MAX_HEAD:
            self._respond(exchange, 400, "text/plain", b"request head too large\n")

    def _route(self, head: bytes) -> Answer:
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) < 2:
            return 400, "text/plain", b"bad request line\n"
        if parts[0] not in (b"GET", b"HEAD"):
            return 405, "text/plain", b"GET only\n"
        path = parts[1].decode("latin-1").split("?", 1)[0]
        status, content_type, body = self.answer(path)
        return status, content_type, b"" if parts[0] == b"HEAD" else body

    def _respond(self, exchange: _Exchange, status: int, content_type: str, body: bytes) -> None:
        head = (f"HTTP/1.0 {status} {REASONS.get(status, 'Unknown')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n")
        exchange.outbox = head.encode() + body
        self.selector.modify(exchange.sock, selectors.EVENT_WRITE,
                             lambda events, e=exchange: self._on_event(e, events))

    def _write(self, exchange: _Exchange) -> None:
        try:
            sent = exchange.sock.send(exchange.outbox)
        except BlockingIOError:
            return
        exchange.outbox = exchange.outbox[sent:]
        if not exchange.outbox:
            self._close(exchange)

    def _close(self, exchange: _Exchange) -> None:
        self.exchanges.pop(exchange.sock.fileno(), None)
        try:
            self.selector.unregister(exchange.sock)
        except (KeyError, ValueError):
            pass
        exchange.sock.close()

    def sweep(self, now: float) -> None:
        """Close every connection past its deadline (called once per master tick)."""
        for exchange in [e for e in self.exchanges.values() if now > e.deadline]:
            self._close(exchange)

    def close(self) -> None:
        for exchange in list(self.exchanges.values()):
            self._close(exchange)
        if self.listener is not None:
            self.selector.unregister(self.listener)
            self.listener.close()
            self.listener = None
