"""systemd's protocols for real: a NOTIFY_SOCKET listener, and systemd-socket-activate."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from loadcheck import assert_no_failures, load_both, stop_both, versions
from processes import stop_process
from release import point_current, write_release
from stable_for import STABLE_FOR

from unbroken.control.client import ControlUnavailable, call


def receive(sock: socket.socket, timeout: float = 20.0) -> dict[str, str]:
    sock.settimeout(timeout)
    datagram = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in datagram.splitlines())


def until(sock: socket.socket, key: str) -> tuple[dict[str, str], list[str]]:
    """The next message carrying `key`, and the STATUS-only progress lines before it."""
    statuses = []
    while True:
        message = receive(sock)
        if key in message:
            return message, statuses
        statuses.append(message["STATUS"])


def test_notify_tells_the_truth(service_factory: Any, releases: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    write_release(releases, "v1", import_delay=1.0)
    started = time.monotonic()
    service = service_factory()
    first, booting = until(listener, "READY")
    assert booting == ["starting: generation 1 1/2 ready", "starting: generation 1 2/2 ready"]
    # READY=1 only once the workers imported the (slow) app, not when the master started.
    assert first["READY"] == "1" and time.monotonic() - started >= 1.0
    assert first["STATUS"].startswith("generation 1 serving")
    assert sum(w["state"] == "ready" for w in service.status()["workers"]) == 2

    write_release(releases, "v2")
    point_current(releases, "v2")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert service.reload().ok
    reloading = receive(listener)
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) >= before
    ready, progress = until(listener, "READY")
    assert progress == ["reloading: generation 2 1/2 ready", "reloading: generation 2 2/2 ready",
                        f"reloading: generation 2 ready, watched for {STABLE_FOR[1]}s"]
    assert ready["READY"] == "1" and ready["STATUS"].startswith("generation 2 serving")

    write_release(releases, "v3", broken=True)
    point_current(releases, "v3")
    assert not service.reload().ok
    assert receive(listener)["RELOADING"] == "1"
    aborted, _ = until(listener, "READY")
    assert aborted["READY"] == "1" and "aborted" in aborted["STATUS"]

    os.kill(service.process.pid, signal.SIGTERM)
    assert until(listener, "STOPPING")[0]["STOPPING"] == "1"
    listener.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_socket_activation_serves_and_reloads(releases: Path, tmp_path: Path) -> None:
    if shutil.which("systemd-socket-activate") is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-socket-activate is missing; scripts/install-test-deps installs it")
        pytest.skip("systemd-socket-activate is not installed")
    port = free_port()
    control = str(tmp_path / "ctl.sock")
    log = open(tmp_path / "service.log", "wb")  # noqa: SIM115 -- closed below
    process = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", sys.executable, "-m",
         "unbroken", "serve", "app:app", "--chdir", str(releases / "current"), "-w", "2",
         "--control", control], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    class Target:
        address = ("127.0.0.1", port)

        @staticmethod
        def output() -> str:
            return (tmp_path / "service.log").read_text(errors="replace")

    try:
        # The first connection makes systemd-socket-activate exec unbroken, which
        # adopts the socket; the request waits in the backlog, it is not refused.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(Target.address, timeout=10) as first:
                    first.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    assert first.recv(100).startswith(b"HTTP/1.1 200")
                break
            except ConnectionRefusedError:
                time.sleep(0.05)  # systemd-socket-activate is not listening yet
        status = call(control, "status", timeout=5).data
        assert status["master_pid"] == process.pid  # it exec'd in place: one PID
        assert status["binds"] == [f"127.0.0.1:{port}"]
        write_release(releases, "v2")
        loads = load_both(Target)
        time.sleep(0.3)
        point_current(releases, "v2")
        reply = call(control, "reload", timeout=60)
        time.sleep(0.3)
        samples = stop_both(loads)
        assert reply.ok, reply
        assert_no_failures(samples, Target)
        assert versions(samples)[-1] == "v2"
    except ControlUnavailable:
        raise AssertionError(Target.output()) from None
    finally:
        stop_process(process)
        log.close()
