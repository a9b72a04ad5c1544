"""A bounded HTTP load generator for reload tests, benchmarks and `unbroken drill`.

Rules this module keeps:

1. No retries, ever. A request that failed is recorded as failed; a retry would hide
   exactly the dropped requests a zero-downtime reload must not drop.
2. Loopback only. A target is a unix socket path or a loopback address (127.0.0.0/8,
   ::1, 'localhost'); anything else raises ValueError before a thread starts.
3. Every loop is bounded twice: by `duration` seconds and by `max_requests` in total;
   every socket operation by the remaining per-request `timeout`.
4. Standard library only, so the test suite and `drill` need nothing installed.

A keep-alive client holds one HTTP/1.1 connection. It reconnects when the server
answered `Connection: close` (a graceful handover, not a failure) or after a failed
request. A server that closes an idle keep-alive connection *without* having said
`Connection: close` makes the next request fail, and that request counts: a client of
a real server would see the same error.
"""

from __future__ import annotations

import http.client
import ipaddress
import math
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["ERROR_KINDS", "Load", "Sample", "Summary", "summarize"]

ERROR_KINDS = ("refused", "reset", "timeout", "5xx", "4xx", "protocol", "other")
BODY_PREFIX_BYTES = 100
# Threads finish their in-flight request before they notice the stop; give them that
# long (plus this margin) to do so, then return what was recorded.
JOIN_MARGIN = 1.0


@dataclass(frozen=True)
class Sample:
    """One request: when it started (time.monotonic), how long it took and how it ended."""

    start: float
    latency: float
    status: int | None
    error: str | None
    body: bytes


@dataclass(frozen=True)
class Summary:
    """Counts and latency percentiles (seconds) over a set of samples."""

    requests: int
    failures: int
    by_kind: dict[str, int]
    p50: float
    p99: float
    max: float


class _UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection that dials a unix socket path instead of host:port."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def check_loopback(target: tuple[str, int] | str) -> tuple[str, int] | str:
    """Return the target to dial, or raise ValueError if it is not on this machine.

    'localhost' is pinned to 127.0.0.1 rather than resolved: a resolver is free to
    answer with any address, and this tool must never send traffic off the host.
    """
    if isinstance(target, str):
        if not target:
            raise ValueError("empty unix socket path")
        return target
    host, port = target
    if host == "localhost":
        return ("127.0.0.1", port)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"refusing non-loopback target {host!r}: not an IP literal") from None
    if not address.is_loopback:
        raise ValueError(f"refusing non-loopback target {host!r}")
    return (host, port)


def classify_error(exc: BaseException) -> str:
    """Map an exception raised by a request to one of ERROR_KINDS.

    RemoteDisconnected (the peer closed before any status line) counts as "reset":
    to the client it is a connection dropped under an accepted request.
    """
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, http.client.HTTPException):
        return "protocol"
    return "other"


def classify_status(status: int) -> str | None:
    """Return the error kind for an HTTP status, None for a success."""
    if status >= 500:
        return "5xx"
    if status >= 400:
        return "4xx"
    return None


@dataclass
class _Shared:
    """State shared by the client threads of one Load, guarded by `lock`."""

    deadline: float
    max_requests: int
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    issued: int = 0
    samples: list[Sample] = field(default_factory=list)

    def claim(self) -> bool:
        """Take one request from the budget; False once time or count is spent."""
        if self.stop.is_set() or time.monotonic() >= self.deadline:
            return False
        with self.lock:
            if self.issued >= self.max_requests:
                return False
            self.issued += 1
            return True

    def record(self, sample: Sample) -> None:
        with self.lock:
            self.samples.append(sample)


class _Client:
    """One client thread's loop: claim, request, record, pause; never retry."""

    def __init__(self, load: Load, shared: _Shared) -> None:
        self.load = load
        self.shared = shared
        self.connection: http.client.HTTPConnection | None = None

    def run(self) -> None:
        try:
            while self.shared.claim():
                self.shared.record(self.request_once())
                if self.load.pause > 0 and self.shared.stop.wait(self.load.pause):
                    break
        finally:
            self.drop_connection()

    def open_connection(self) -> http.client.HTTPConnection:
        target, timeout = self.load.target, self.load.timeout
        if isinstance(target, str):
            return _UnixHTTPConnection(target, timeout)
        if self.load.ssl_context is not None:
            return http.client.HTTPSConnection(target[0], target[1], timeout=timeout,
                                               context=self.load.ssl_context)
        return http.client.HTTPConnection(target[0], target[1], timeout=timeout)

    def drop_connection(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def request_once(self) -> Sample:
        start = time.monotonic()
        if self.connection is None:
            self.connection = self.open_connection()
        try:
            status, will_close, body = self.exchange(self.connection, start)
        except (OSError, http.client.HTTPException) as exc:
            # The connection is in an unknown state; the next request gets a fresh one.
            self.drop_connection()
            return Sample(start, time.monotonic() - start, None, classify_error(exc), b"")
        if will_close or not self.load.keep_alive:
            self.drop_connection()
        latency = time.monotonic() - start
        return Sample(start, latency, status, classify_status(status), body)

    def exchange(
        self, connection: http.client.HTTPConnection, start: float
    ) -> tuple[int, bool, bytes]:
        """Send one GET and read the whole response within the request's time budget."""
        deadline = start + self.load.timeout
        headers = {} if self.load.keep_alive else {"Connection": "close"}
        _set_timeout(connection, deadline)
        connection.request("GET", self.load.path, headers=headers)
        _set_timeout(connection, deadline)
        response = connection.getresponse()
        _set_timeout(connection, deadline)
        body = response.read()
        return response.status, response.will_close, body[:BODY_PREFIX_BYTES]


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("request deadline passed")
    return remaining


def _set_timeout(connection: http.client.HTTPConnection, deadline: float) -> None:
    """Shrink the connect and socket timeouts to what is left of the request's budget."""
    remaining = _remaining(deadline)
    connection.timeout = remaining
    if connection.sock is not None:
        connection.sock.settimeout(remaining)


class Load:
    """A set of client threads sending GET requests to one loopback target.

    Use as a context manager (`with Load(...) as load:`), or call start() and stop().
    """

    def __init__(
        self,
        target: tuple[str, int] | str,
        *,
        clients: int = 4,
        keep_alive: bool = True,
        path: str = "/",
        duration: float = 30.0,
        max_requests: int = 1_000_000,
        timeout: float = 10.0,
        pause: float = 0.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.target = check_loopback(target)
        self.ssl_context = ssl_context  # HTTPS to a TCP target when given
        if clients < 1 or duration <= 0 or max_requests < 1 or timeout <= 0 or pause < 0:
            raise ValueError("clients, duration, max_requests, timeout must be > 0; pause >= 0")
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        self.clients = clients
        self.keep_alive = keep_alive
        self.path = path
        self.duration = duration
        self.max_requests = max_requests
        self.timeout = timeout
        self.pause = pause
        self._shared: _Shared | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> Load:
        """Start the client threads and return self; a Load starts only once."""
        if self._shared is not None:
            raise RuntimeError("Load already started")
        self._shared = _Shared(time.monotonic() + self.duration, self.max_requests)
        for index in range(self.clients):
            # Daemon threads: a client stuck past the join deadline must not keep
            # the test process alive.
            thread = threading.Thread(
                target=_Client(self, self._shared).run, name=f"loadgen-{index}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> list[Sample]:
        """Tell the clients to stop, wait for them with a deadline, return samples by start."""
        if self._shared is None:
            return []
        self._shared.stop.set()
        deadline = time.monotonic() + self.timeout + JOIN_MARGIN
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._shared.lock:
            samples = list(self._shared.samples)
        return sorted(samples, key=lambda sample: sample.start)

    def wait(self) -> list[Sample]:
        """Wait until the duration or request budget runs out, then stop()."""
        if self._shared is not None:
            deadline = self._shared.deadline + self.timeout + JOIN_MARGIN
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        return self.stop()

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list; 0.0 for an empty list."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(samples: list[Sample], window: tuple[float, float] | None = None) -> Summary:
    """Count failures by kind and compute latency percentiles over all samples.

    With a window (monotonic start, end), only requests in flight during it count:
    a request that began just before a reload and stalled through it is exactly
    the one the window is meant to catch. Latencies include failed requests.
    """
    if window is not None:
        low, high = window
        samples = [s for s in samples if s.start <= high and s.start + s.latency >= low]
    by_kind: dict[str, int] = {}
    for sample in samples:
        if sample.error is not None:
            by_kind[sample.error] = by_kind.get(sample.error, 0) + 1
    latencies = sorted(sample.latency for sample in samples)
    return Summary(
        requests=len(samples),
        failures=sum(by_kind.values()),
        by_kind=by_kind,
        p50=percentile(latencies, 0.50),
        p99=percentile(latencies, 0.99),
        max=latencies[-1] if latencies else 0.0,
    )
