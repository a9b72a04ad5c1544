"""Integration harness: the real `unbroken serve` in a subprocess on 127.0.0.1.

The test binds port 0 itself and hands the socket over as `fd://N`, so there is
no free-port race; readiness is read from the control socket, never a bare sleep;
every process is stopped by PID.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from processes import stop_process
from release import point_current, write_release
from stable_for import STABLE_FOR

from unbroken.control.client import ControlUnavailable, call
from unbroken.control.protocol import Reply

STOP_BUDGET = 10.0  # seconds; the tests' servers have nothing left in flight when stopped


class Service:
    def __init__(self, root: Path, *args: str, workers: int | None = 2,
                 app: str | None = "app:app") -> None:
        self.root = root
        self.control = str(root / "ctl.sock")
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(2048)
        self.port = self.listener.getsockname()[1]
        fd = self.listener.fileno()
        self.log_path = root / "service.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 -- closed in stop()
        command = [sys.executable, "-m", "unbroken", "serve", *([app] if app else []),
                   "--chdir", str(root / "current"), "-b", f"fd://{fd}",
                   *(["-w", str(workers)] if workers else []), "--control", self.control,
                   "--keep-alive", "5", *STABLE_FOR, *args]
        self.process = subprocess.Popen(command, pass_fds=(fd,), stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def status(self) -> dict[str, Any]:
        return call(self.control, "status", timeout=5).data

    def wait_serving(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"unbroken exited:\n{self.output()}")
            try:
                state = self.status()
                if state["phase"] == "serving":
                    return state
            except (ControlUnavailable, OSError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"not serving within {timeout}s:\n{self.output()}")

    def reload(self) -> Reply:
        return call(self.control, "reload", timeout=120)

    def reload_cli(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "unbroken", "reload", "--control",
                               self.control], capture_output=True, text=True, timeout=120)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.status()["workers"]]

    def stop(self) -> None:
        """Graceful stop by PID; a stop slower than STOP_BUDGET is a bug worth a failure."""
        started = time.monotonic()
        stop_process(self.process, timeout=40)
        took = time.monotonic() - started
        self.log.close()
        self.listener.close()
        if took > STOP_BUDGET:
            raise AssertionError(f"stopping took {took:.1f}s:\n{self.output()[-4000:]}")


@pytest.fixture
def releases(tmp_path: Path) -> Path:
    write_release(tmp_path, "v1")
    point_current(tmp_path, "v1")
    return tmp_path


@pytest.fixture
def service_factory(releases: Path) -> Iterator[Any]:
    started: list[Service] = []

    def start(*args: str, workers: int | None = 2, app: str | None = "app:app") -> Service:
        service = Service(releases, *args, workers=workers, app=app)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()
