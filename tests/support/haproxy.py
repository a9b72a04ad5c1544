"""HAProxy in front of the lab hosts, as the external load balancer of a real fleet.

A deploy is judged by what clients of the balancer see, so tests put load on HAProxy's
frontend and steer it through the admin socket (drain, ready, maint) the way a deploy
tool would. Health checks are off unless asked for: a plain config has none, and the
baselines must show what that costs.

HAProxy runs as our child (`haproxy -db`, no daemon, no master-worker), on 127.0.0.1
only, and is stopped by PID.
"""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from processes import stop_process

__all__ = ["HAProxy", "free_port"]

READY_TIMEOUT = 10.0
SOCKET_TIMEOUT = 5.0
POLL = 0.05


def free_port(address: str = "127.0.0.1") -> int:
    """A port that was free a moment ago on `address`.

    HAProxy binds by itself, so a socket cannot be handed over as fd://; the small race
    with another binder is accepted and shows as a start error.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


class HAProxy:
    """One HTTP frontend on 127.0.0.1:port, one round-robin backend `app`.

    backends: (server name, address, port) each. health_path: when given, HAProxy
    checks each server with `GET <path>` every 500 ms (down after 2 failures, up after
    1 success), sending `Host: <health_host>` if that is given, since apps that
    validate Host (Django ALLOWED_HOSTS) refuse a check without it.
    """

    backend = "app"

    def __init__(self, root: Path, backends: list[tuple[str, str, int]], *,
                 port: int | None = None, health_path: str | None = None,
                 health_host: str | None = None, extra_backend_lines: tuple[str, ...] = ()
                 ) -> None:
        if not backends:
            raise ValueError("HAProxy needs at least one backend server")
        if health_path is not None and not health_path.startswith("/"):
            raise ValueError(f"health_path must start with '/': {health_path!r}")
        self.root = Path(root)
        self.backends = list(backends)
        self.port = port if port is not None else free_port()
        self.health_path = health_path
        self.health_host = health_host
        self.extra_backend_lines = extra_backend_lines
        self.config = self.root / "haproxy.cfg"
        self.stats_socket = self.root / "haproxy.sock"
        self.log_path = self.root / "haproxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def render(self) -> str:
        """The configuration text; kept a method so a test can print what it ran."""
        check = ""
        lines = [
            "global",
            f"    stats socket {self.stats_socket} mode 600 level admin",
            "    maxconn 4096",
            "",
            "defaults",
            "    mode http",
            "    timeout connect 2s",
            "    timeout client 30s",
            "    timeout server 30s",
            "    option http-keep-alive",
            "",
            "frontend fe",
            f"    bind 127.0.0.1:{self.port}",
            f"    default_backend {self.backend}",
            "",
            f"backend {self.backend}",
            "    balance roundrobin",
        ]
        if self.health_path is not None:
            lines.append(f"    option httpchk GET {self.health_path}")
            if self.health_host is not None:
                lines.append(f"    http-check send hdr Host {self.health_host}")
            check = " check inter 500ms fall 2 rise 1"
        lines += [f"    {line}" for line in self.extra_backend_lines]
        lines += [f"    server {name} {address}:{port}{check}"
                  for name, address, port in self.backends]
        return "\n".join([*lines, ""])

    def start(self) -> HAProxy:
        """Check the config, start HAProxy, wait until the frontend accepts (bounded)."""
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.render())
        checked = subprocess.run([haproxy, "-c", "-q", "-f", str(self.config)],
                                 capture_output=True, text=True, timeout=10, check=False)
        if checked.returncode != 0:
            raise RuntimeError(f"haproxy refused {self.config}:\n{checked.stderr}")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([haproxy, "-db", "-f", str(self.config)],
                                            stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited {self.process.returncode}:\n{self.output()}")
            try:
                with socket.create_connection(self.address, timeout=1.0):
                    pass
                if self.stats_socket.exists():
                    return
            except OSError:
                pass
            time.sleep(POLL)
        raise RuntimeError(f"haproxy not accepting on {self.port} within "
                           f"{READY_TIMEOUT}s:\n{self.output()}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=5.0)

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    # -- the admin socket --------------------------------------------------------------

    def command(self, text: str, timeout: float = SOCKET_TIMEOUT) -> str:
        """Send one runtime API command and return HAProxy's whole answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.stats_socket))
            sock.sendall(text.rstrip("\n").encode() + b"\n")
            chunks = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:  # HAProxy closes after one command
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks).decode(errors="replace")

    def show_stat(self) -> list[dict[str, str]]:
        """`show stat` as one dict per row, keyed by the CSV header (pxname, svname, ...)."""
        text = self.command("show stat")
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines or not lines[0].startswith("# "):
            raise RuntimeError(f"unexpected 'show stat' answer: {text[:200]!r}")
        lines[0] = lines[0][2:]
        return [dict(row) for row in csv.DictReader(lines)]

    def server_stat(self, name: str) -> dict[str, str]:
        for row in self.show_stat():
            if row["pxname"] == self.backend and row["svname"] == name:
                return row
        raise KeyError(f"no server {name!r} in backend {self.backend}")

    def server_state(self, name: str) -> str:
        """The server's status column: UP, DOWN, MAINT, DRAIN, 'no check', ..."""
        return self.server_stat(name)["status"]

    def set_state(self, name: str, state: str) -> str:
        """`set server app/<name> state ready|drain|maint`, as a deploy tool drains."""
        if state not in ("ready", "drain", "maint"):
            raise ValueError(f"state must be ready, drain or maint, not {state!r}")
        return self.command(f"set server {self.backend}/{name} state {state}")
