"""The per-request path in one process, without sockets: parser, core, engine, app.

Run: PYTHONPATH=src python bench/inprocess.py [--kind wsgi|asgi] [--case hello|json|upload]
                                             [--requests N] [--loop uvloop|asyncio]
                                             [--profile] [--repeats N] [--piece BYTES]

For a figure that does not move with the machine's load, count instructions instead:
run it twice under `valgrind --tool=callgrind` (with 500 and 1,500 requests, the real
python binary, PYTHONHASHSEED=0) and divide the difference by 1,000.

A real WSGIEngine or ASGIEngine (default settings, so WSGI serves inline) gets one
`HTTPConnection` on a transport that only keeps what is written; a driver coroutine
feeds it one keep-alive request at a time (in parts of --piece bytes, 64 KiB by default,
as a loopback socket delivers them) and yields to the loop until the response is out,
so the loop turns the engine needs are counted too. It prints CPU-µs per request (the
best of --repeats), or with --profile the cProfile table of one run. No syscalls for
the socket are paid here: the figure is the Python part of what cpu_per_request.py
measures under wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "speed_apps"))

from unbroken.engines import EngineSettings
from unbroken.engines.core.connection import HTTPConnection

UPLOAD_BYTES = 64 * 1024
REQUESTS = {
    "hello": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
    "json": b"GET /json HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
    "upload": (b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
               b"Content-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n"
               % UPLOAD_BYTES) + b"x" * UPLOAD_BYTES,
}  # fmt: skip


class SinkTransport(asyncio.Transport):
    """Counts what the connection writes; never pauses, never closes on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def new_engine(kind: str, loop: asyncio.AbstractEventLoop) -> Any:
    settings = EngineSettings()
    if kind == "wsgi":
        from app_wsgi import app as wsgi_app

        from unbroken.engines.wsgi.engine import WSGIEngine

        return WSGIEngine(wsgi_app, settings, loop)
    from app_asgi import app as asgi_app

    from unbroken.engines.asgi.engine import ASGIEngine

    engine = ASGIEngine(asgi_app, settings, loop)
    loop.run_until_complete(engine.startup())
    return engine


async def drive(connection: HTTPConnection, transport: SinkTransport, request: bytes,
                count: int, piece: int) -> None:  # fmt: skip
    """Feed `count` requests, each after the response to the one before, in `piece`-byte
    parts with a loop turn between them (as a socket delivers a large request)."""
    pieces = [request[at:at + piece] for at in range(0, len(request), piece)]
    for _ in range(count):
        written = transport.writes
        for data in pieces[:-1]:
            connection.data_received(data)
            await asyncio.sleep(0)
        connection.data_received(pieces[-1])
        while transport.writes == written:
            await asyncio.sleep(0)
            if transport.closed:
                raise RuntimeError("the connection closed")


def run(kind: str, case: str, count: int, loop_name: str, profile: bool,
        repeats: int, piece: int) -> float:  # fmt: skip
    loop = new_loop(loop_name)
    engine = new_engine(kind, loop)
    connection = HTTPConnection(engine._server)
    transport = SinkTransport()
    connection.connection_made(transport)
    request = REQUESTS[case]
    loop.run_until_complete(drive(connection, transport, request, 2000, piece))  # warm
    best = float("inf")
    for _ in range(repeats):
        profiler = cProfile.Profile() if profile else None
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        loop.run_until_complete(drive(connection, transport, request, count, piece))
        if profiler is not None:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        best = min(best, (time.process_time() - started) * 1e6 / count)
    return best


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("wsgi", "asgi"), default="wsgi")
    parser.add_argument("--case", choices=tuple(REQUESTS), default="hello")
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--piece", type=int, default=65536,
                        help="bytes per data_received (a loopback socket gives about 64 KiB)")
    args = parser.parse_args()
    repeats = 1 if args.profile else args.repeats
    cost = run(args.kind, args.case, args.requests, args.loop, args.profile, repeats,
               args.piece)
    print(f"{args.kind} {args.case} ({args.loop}): {cost:.2f} CPU-µs per request in-process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
