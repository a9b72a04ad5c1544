"""The cases of bench/speed.py and the wrk runs that measure them.

wrk (the Debian package) is the load: a separate C process, so the bench's own Python
costs the server nothing while it runs. Its text report is parsed here.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

WRK = "/usr/bin/wrk"
WRK_THREADS = 2
WRK_CONNECTIONS = 32
# A response slower than this counts as a wrk `timeout` error and leaves the latency
# figures; the slowest honest case (gunicorn sync, 32 clients on 50 ms sleeps, 2
# workers) stays near 0.8 s.
WRK_TIMEOUT = 5.0
# Beyond -d: wrk's start-up and its report, before the run is declared hung.
WRK_GRACE = 15.0
SAMPLE_EVERY = 0.5
UPLOAD_BYTES = 64 * 1024
PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    path: str
    close: bool = False  # send `Connection: close`: one connection per request
    upload: bool = False  # POST UPLOAD_BYTES
    # The app waits, so more threads serve more: unbroken's WSGI ratio comes from its
    # --threads 4 row here (as every peer has 4), from its default --threads 1 elsewhere.
    threads_matter: bool = False


CASES = (
    Case("hello", "hello world, keep-alive", "/"),
    Case("close", "hello world, connection per request", "/", close=True),
    Case("json", "16 KiB JSON", "/json"),
    Case("stream", "1 MiB streamed in 64 KiB chunks", "/stream"),
    Case("upload", "POST with a 64 KiB body", "/upload", upload=True),
    Case("sleep", "app sleeps 50 ms", "/sleep", threads_matter=True),
)


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]  # connect, read, write, timeout

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    def error_kinds(self) -> dict[str, int]:
        kinds = {"non-2xx": self.non_2xx, **self.socket_errors}
        return {kind: count for kind, count in kinds.items() if count}


class WrkFailed(Exception):
    """wrk did not produce a report we can read."""


def wrk_version() -> str:
    if not shutil.which(WRK):
        return "missing"
    done = subprocess.run([WRK, "-v"], capture_output=True, text=True, timeout=10)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "unknown"


def write_upload_script(directory: Path) -> Path:
    """wrk sets Content-Length itself when a Lua script gives it a body."""
    script = directory / "upload.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = string.rep("x", {UPLOAD_BYTES})\n'
        'wrk.headers["Content-Type"] = "application/octet-stream"\n'
    )
    return script


def wrk_argv(case: Case, port: int, duration: float, upload_script: Path) -> list[str]:
    argv = [
        WRK, f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{duration:g}s",
        f"--timeout={WRK_TIMEOUT:g}s", "--latency",
    ]  # fmt: skip
    if case.close:
        argv += ["-H", "Connection: close"]
    if case.upload:
        argv += ["-s", str(upload_script)]
    return [*argv, f"http://127.0.0.1:{port}{case.path}"]


def run_wrk(
    argv: list[str], duration: float, sample: Callable[[], None] | None = None
) -> WrkResult:
    """Run wrk to its end (bounded), calling `sample` every SAMPLE_EVERY s meanwhile."""
    deadline = time.monotonic() + duration + WRK_GRACE
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as wrk:
        while True:
            try:
                stdout, stderr = wrk.communicate(timeout=SAMPLE_EVERY)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    wrk.kill()
                    wrk.communicate()
                    raise WrkFailed(f"wrk hung past {duration + WRK_GRACE:.0f} s") from None
                if sample:
                    sample()
    if wrk.returncode != 0:
        raise WrkFailed(f"wrk exited {wrk.returncode}: {stderr.strip()[:160]}")
    return parse_wrk(stdout)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = r"([\d.]+)(us|ms|s|m|h)"


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def _search(pattern: str, text: str) -> re.Match[str]:
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise WrkFailed(f"no {pattern!r} in wrk's report: {text.strip()[-200:]!r}")
    return match


def parse_wrk(text: str) -> WrkResult:
    """Read wrk 4's --latency report; an absent errors line means none of that kind."""
    latency = _search(rf"^\s+Latency\s+{_DURATION}\s+{_DURATION}\s+{_DURATION}", text)
    p50 = _search(rf"^\s+50%\s+{_DURATION}", text)
    p99 = _search(rf"^\s+99%\s+{_DURATION}", text)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    kinds = ("connect", "read", "write", "timeout")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(
        rps=float(_search(r"^Requests/sec:\s+([\d.]+)", text)[1]),
        p50_ms=_ms(p50[1], p50[2]),
        p99_ms=_ms(p99[1], p99[2]),
        max_ms=_ms(latency[5], latency[6]),
        requests=int(_search(r"^\s+(\d+) requests in", text)[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors={k: int(errors[i + 1]) if errors else 0 for i, k in enumerate(kinds)},
    )


@dataclass(frozen=True)
class ProtocolCheck:
    """What in the server's answer changes what wrk measures; comparable is False when
    the row does not measure the case at all."""

    note: str = ""
    comparable: bool = True
    # False when the server closes after each answer: then clients waiting in the
    # listen queue take turns and are served, rather than being left out.
    keeps_alive: bool = True


def check_protocol(case: Case, port: int) -> ProtocolCheck:
    """Read one response head for the case and say whether wrk can measure it fairly.

    wrk reuses a connection unless the *response* says `Connection: close`, so a server
    that ignores the request's close turns the connection-per-request case into
    keep-alive; and a body with neither Content-Length nor chunked framing on a kept
    connection has no end a client can see, so every request waits for the server to
    close. The head tells both, without waiting for either.
    """
    head = _response_head(case, port)
    if head is None:
        return ProtocolCheck("no response head to a probe")
    closes = "connection: close" in head
    if case.close and not closes:
        note = "ignores `Connection: close`: wrk kept its connections, so not per request"
        return ProtocolCheck(note, comparable=False)
    framed = "content-length:" in head or "transfer-encoding: chunked" in head
    if not framed and not closes:
        return ProtocolCheck("body sent with no length, no chunking, connection kept open")
    if closes and not case.close:
        return ProtocolCheck("no keep-alive: answers `Connection: close`", keeps_alive=False)
    return ProtocolCheck(keeps_alive=not closes)


def _response_head(case: Case, port: int) -> str | None:
    method = "POST" if case.upload else "GET"
    body = b"x" * UPLOAD_BYTES if case.upload else b""
    headers = f"Host: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
    if case.close:
        headers += "Connection: close\r\n"
    request = f"{method} {case.path} HTTP/1.1\r\n{headers}\r\n".encode() + body
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as sock:
            sock.sendall(request)
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
    except OSError:
        return None
    head, separator, _ = received.partition(b"\r\n\r\n")
    return head.decode("latin-1").lower() if separator else None
