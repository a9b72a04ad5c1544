"""Issue 14's cases, black box, for unbroken's engines beside gunicorn gthread and uvicorn.

Run: python bench/hardening.py [--servers NAME,...] [--cases NAME,...] [--out DIR]

Each server starts on a free 127.0.0.1 port with 2 workers and the same app (below): at
`/read` it reads the whole body first, anywhere else it reads nothing. Each case sends
its exact bytes on fresh connections, records what came back (the statuses in order,
and whether and when the server closed), and, where CPU is the point, the workers'
utime + stime from /proc (the master serves nothing and is left out). Every socket op
has a timeout, every case a bound. The table is printed and written to
bench/results/hardening-<date>.md (a suffix is added rather than overwrite a file).

Peers run from bench/.venv-peers (bench/servers.py `ensure_peers` creates it); unbroken
from this checkout's src/.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS = BENCH / ".venv-peers" / "bin"

APP = '''
def app(environ, start_response):
    if environ["PATH_INFO"] == "/read":
        environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\\n"]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/read":
        while (await receive()).get("more_body"):
            pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"ok\\n"})
'''


def _unbroken(*args: str) -> Callable[[int, Path], list[str]]:
    def argv(port: int, app_dir: Path) -> list[str]:
        kind = "asgi" if "asgi" in args else "wsgi"
        return [sys.executable, "-m", "unbroken", "serve",
                "hb_app:asgi" if kind == "asgi" else "hb_app:app", "--chdir", str(app_dir),
                "-b", f"127.0.0.1:{port}", "-w", "2", "--control", str(app_dir / f"c{port}"),
                *args]
    return argv


SERVERS: dict[str, Callable[[int, Path], list[str]]] = {
    "unbroken-wsgi": _unbroken("-k", "wsgi"),
    "unbroken-wsgi-t4": _unbroken("-k", "wsgi", "--threads", "4"),
    "unbroken-asgi": _unbroken("-k", "asgi"),
    "gunicorn-gthread": lambda port, app_dir: [
        str(PEERS / "gunicorn"), "-k", "gthread", "--threads", "4", "-w", "2",
        "-b", f"127.0.0.1:{port}", "--chdir", str(app_dir), "hb_app:app"],
    "uvicorn": lambda port, app_dir: [
        str(PEERS / "uvicorn"), "--workers", "2", "--host", "127.0.0.1", "--port", str(port),
        "--app-dir", str(app_dir), "--log-level", "warning", "hb_app:asgi"],
}

HEAD = b"POST /read HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
AFTER = b"GET /after HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
GET_CLOSE = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"


def chunks(count: int, size: int) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (size, b"x" * size) for _ in range(count)) + b"0\r\n\r\n"


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]

    def workers(self) -> list[int]:
        """The master's descendants (uvicorn's spawn children included)."""
        found, frontier = [], [self.process.pid]
        while frontier:
            pid = frontier.pop()
            try:
                kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            found += [int(kid) for kid in kids]
            frontier += [int(kid) for kid in kids]
        return found

    def cpu(self) -> float:
        """The workers' CPU seconds so far (utime + stime)."""
        total = 0
        for pid in self.workers():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")


def start(name: str, app_dir: Path) -> Server:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{app_dir}"}
    process = subprocess.Popen(SERVERS[name](port, app_dir), env=env, cwd=app_dir,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    server = Server(name, port, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if b"200" in exchange(server, GET_CLOSE, 1.0)[0][:20]:
            time.sleep(1.0)  # every worker up, not only the first
            return server
        time.sleep(0.2)
    stop(server)
    raise RuntimeError(f"{name} did not answer within 30 s")


def stop(server: Server) -> None:
    try:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=5)


def exchange(server: Server, data: bytes, bound: float) -> tuple[bytes, float | None]:
    """Send `data` in one write; what came back until close (and when), within `bound`."""
    started = time.monotonic()
    try:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=bound)
    except OSError as error:
        return f"connect failed: {error}".encode(), None
    with sock:
        sock.sendall(data)
        return read_until_closed(sock, started, bound)


def read_until_closed(sock: socket.socket, started: float,
                      bound: float) -> tuple[bytes, float | None]:
    received = b""
    sock.settimeout(0.25)
    while time.monotonic() - started < bound:
        try:
            part = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return received, time.monotonic() - started
        if not part:
            return received, time.monotonic() - started
        received += part
    return received, None


def statuses(data: bytes) -> str:
    found = re.findall(rb"HTTP/1\.[01] (\d{3})", data)
    return ",".join(code.decode() for code in found) or "-"


def verdict(data: bytes, closed: float | None) -> str:
    after = f"closed at {closed:.1f} s" if closed is not None else "still open"
    return f"{statuses(data)}; {after}"


def case_pipelined(server: Server) -> str:
    data, closed = exchange(server, HEAD + chunks(4, 16384) + AFTER, 10)
    return verdict(data, closed)


def case_tiny_chunks(server: Server) -> str:
    before = server.cpu()
    data, closed = exchange(server, HEAD + b"1\r\nx\r\n" * 20_000 + b"0\r\n\r\n" + AFTER, 60)
    time.sleep(0.3)
    return f"{verdict(data, closed)}; worker CPU {server.cpu() - before:.2f} s"


def case_slow_bodies(server: Server) -> str:
    """4 x `Content-Length: 100000` then a byte every 2 s, 20 fresh GETs meanwhile."""
    socks = []
    for _ in range(4):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(b"POST /read HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n")
        socks.append(sock)
    stop_trickle = threading.Event()

    def trickle() -> None:
        while not stop_trickle.wait(2.0):
            for sock in socks:
                try:
                    sock.send(b"x")
                except OSError:
                    pass

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    answered, worst = 0, 0.0
    for _ in range(20):
        started = time.monotonic()
        data, _ = exchange(server, GET_CLOSE, 5.0)
        worst = max(worst, time.monotonic() - started)
        answered += statuses(data) == "200"
        time.sleep(0.25)
    started = time.monotonic()
    cuts = [read_until_closed(sock, started, max(0.1, 26.0 - 5.0 - worst)) for sock in socks]
    stop_trickle.set()
    thread.join()
    for sock in socks:
        sock.close()
    cut = ", ".join(sorted({verdict(data, None if closed is None else closed)
                            for data, closed in cuts}))
    return f"fresh GETs {answered}/20, max {worst:.2f} s; slow ones: {cut}"


def case_unread_never_comes(server: Server) -> str:
    data, closed = exchange(
        server, b"POST /noread HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n", 30)
    return verdict(data, closed)


def case_unread_then_garbage(server: Server) -> str:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    with sock:
        started = time.monotonic()
        sock.sendall(HEAD.replace(b"/read", b"/noread") + b"5\r\nhello\r\n")
        time.sleep(0.3)
        try:
            sock.sendall(b"zz\r\n\r\n")
        except OSError:
            pass
        data, closed = read_until_closed(sock, started, 10)
    return verdict(data, closed)


def one_shot(data: bytes) -> Callable[[Server], str]:
    def case(server: Server) -> str:
        answer, closed = exchange(server, data, 5)
        return verdict(answer, closed)
    return case


def case_hello(server: Server) -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        return "wrk not installed"
    before = server.cpu()
    out = subprocess.run([wrk, "-t2", "-c32", "-d3s", f"http://127.0.0.1:{server.port}/"],
                         capture_output=True, text=True, timeout=30).stdout
    cpu = server.cpu() - before
    total = re.search(r"(\d+) requests in", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not total or not rate:
        return "wrk failed"
    return f"{float(rate.group(1)):,.0f} req/s; {cpu / int(total.group(1)) * 1e6:.1f} CPU-µs/req"


CASES: dict[str, tuple[str, Callable[[Server], str]]] = {
    "chunked-64k+get": ("4 x 16 KiB chunks + a pipelined GET, one write", case_pipelined),
    "tiny-chunks": ("20,000 x `1\\r\\nx\\r\\n` to /read + a GET", case_tiny_chunks),
    "slow-bodies": ("4 bodies at 1 byte / 2 s, 20 fresh GETs", case_slow_bodies),
    "unread-never-comes": ("/noread, Content-Length: 100000, no body", case_unread_never_comes),
    "unread-then-zz": ("/noread chunked, `zz` 0.3 s later", case_unread_then_garbage),
    "connect": ("`CONNECT h:443`", one_shot(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n")),
    "host-a-b": ("`Host: a b`", one_shot(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n")),
    "double-space": ("`GET  / HTTP/1.1`", one_shot(b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n")),
    "chunk-ext-5k": ("a 5,000-byte chunk extension", one_shot(
        HEAD + b"1;a=" + b"b" * 4996 + b"\r\nx\r\n0\r\n\r\n")),
    "cl-2g": ("`Content-Length: 2147483648`", one_shot(
        b"POST /read HTTP/1.1\r\nHost: h\r\nContent-Length: 2147483648\r\n\r\n")),
    "hello": ("hello world, wrk -t2 -c32 -d3s", case_hello),
}


def run(servers: list[str], cases: list[str]) -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = {case: {} for case in cases}
    with tempfile.TemporaryDirectory(prefix="hardening-") as scratch:
        app_dir = Path(scratch)
        (app_dir / "hb_app.py").write_text(APP)
        for name in servers:
            print(f"{name} ...", file=sys.stderr)
            try:
                server = start(name, app_dir)
            except (OSError, RuntimeError) as error:
                for case in cases:
                    table[case][name] = f"not run: {error}"
                continue
            try:
                for case in cases:
                    table[case][name] = CASES[case][1](server)
                    print(f"  {case}: {table[case][name]}", file=sys.stderr)
            finally:
                stop(server)
    return table


def render(servers: list[str], cases: list[str], table: dict[str, dict[str, str]]) -> str:
    lines = [f"# Issue 14 cases, {datetime.date.today()} (`python bench/hardening.py`)", "",
             "| case | bytes in | " + " | ".join(servers) + " |",
             "|---|---|" + "---|" * len(servers)]
    for case in cases:
        cells = " | ".join(table[case].get(name, "") for name in servers)
        lines.append(f"| {case} | {CASES[case][0]} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    servers = [name for name in args.servers.split(",") if name]
    cases = [name for name in args.cases.split(",") if name]
    unknown = [name for name in servers if name not in SERVERS] + [
        name for name in cases if name not in CASES]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    report = render(servers, cases, run(servers, cases))
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    path, suffix = args.out / f"hardening-{datetime.date.today()}.md", 1
    while path.exists():
        suffix += 1
        path = args.out / f"hardening-{datetime.date.today()}-{suffix}.md"
    path.write_text(report)
    print(f"written: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
