"""The master's own promises: one PID, no orphans, clear errors, the control surfaces."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from processes import stop_process
from release import point_current, write_release
from waiting import wait_until

from unbroken.loadgen import Load, summarize


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_workers_exit_when_the_master_is_killed(service_factory: Any) -> None:
    service = service_factory()
    service.wait_serving()
    workers = service.worker_pids()
    os.kill(service.process.pid, signal.SIGKILL)
    service.process.wait(5)
    killed_at = time.monotonic()
    wait_until(lambda: not any(alive(pid) for pid in workers), timeout=5)
    assert time.monotonic() - killed_at < 2.0


def test_master_pid_is_stable_and_pidfile_is_managed(service_factory: Any,
                                                     releases: Path) -> None:
    pidfile = releases / "unbroken.pid"
    service = service_factory("--pid", str(pidfile))
    state = service.wait_serving()
    assert int(pidfile.read_text()) == service.process.pid == state["master_pid"]
    for generation in (2, 3):  # one at a time: the kernel merges pending HUPs
        os.kill(service.process.pid, signal.SIGHUP)
        wait_until(lambda g=generation: service.status()["generation"] == g)
    assert service.status()["master_pid"] == service.process.pid
    service.stop()
    assert service.process.returncode == 0
    assert not pidfile.exists()


def test_graceful_stop_finishes_in_flight_requests(service_factory: Any) -> None:
    service = service_factory("--threads", "2")
    service.wait_serving()
    slow = Load(service.address, clients=2, keep_alive=False, path="/slow?s=2",
                max_requests=2, duration=20).start()
    # Both are in flight (a heartbeat within 1 s says so; they last 2 s, time enough
    # for `unbroken stop` to start and ask while they still run).
    wait_until(lambda: sum(w["in_flight"] for w in service.status()["workers"]) == 2,
               message="the two slow requests in flight")
    result = subprocess.run([sys.executable, "-m", "unbroken", "stop", "--control",
                             service.control], capture_output=True, text=True, timeout=60)
    samples = slow.stop()
    assert result.returncode == 0, result.stderr
    assert [s.error for s in samples] == [None, None]
    service.process.wait(10)
    assert service.process.returncode == 0


def test_master_fifo_and_signals_scale_and_reload(service_factory: Any,
                                                  releases: Path) -> None:
    fifo = releases / "master.fifo"
    service = service_factory("--master-fifo", str(fifo), workers=1)
    service.wait_serving()
    with open(fifo, "w") as commands:
        commands.write("+")
    wait_until(lambda: len([w for w in service.status()["workers"]
                            if w["state"] == "ready"]) == 2)
    os.kill(service.process.pid, signal.SIGTTOU)
    wait_until(lambda: len(service.status()["workers"]) == 1)
    write_release(releases, "v2")
    point_current(releases, "v2")
    with open(fifo, "w") as commands:
        commands.write("r")
    wait_until(lambda: service.status()["generation"] == 2)
    reply = subprocess.run([sys.executable, "-m", "unbroken", "scale", "3", "--control",
                            service.control], capture_output=True, text=True, timeout=30)
    assert reply.returncode == 0
    wait_until(lambda: sum(w["state"] == "ready" for w in service.status()["workers"]) == 3)


def test_max_requests_recycles_workers_without_failures(service_factory: Any) -> None:
    service = service_factory("--max-requests", "100", "--max-requests-jitter", "20")
    service.wait_serving()
    first = set(service.worker_pids())
    # New-connection clients too: keep-alive ones alone may all land on one worker,
    # and the other would never reach its --max-requests.
    with Load(service.address, clients=2, keep_alive=True, duration=60,
              max_requests=1500) as kept, Load(service.address, clients=2,
                                                keep_alive=False, duration=60,
                                                max_requests=1500) as fresh:
        wait_until(lambda: not first & set(service.worker_pids()), timeout=30)
    samples = kept.wait() + fresh.wait()
    summary = summarize(samples)
    assert summary.failures == 0, (summary, service.output()[-2000:])


def test_status_cli_shows_workers(service_factory: Any) -> None:
    service = service_factory()
    service.wait_serving()
    result = subprocess.run([sys.executable, "-m", "unbroken", "status", "--control",
                             service.control], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "generation 1" in result.stdout
    assert result.stdout.count(" ready ") == 2


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "unbroken", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def test_bad_app_path_is_one_line(tmp_path: Path) -> None:
    write_release(tmp_path, "v1")
    result = run_cli("serve", "nosuchmodule:app", "--chdir", str(tmp_path / "releases/v1"),
                     "-b", "127.0.0.1:0", "--control", str(tmp_path / "c.sock"))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    expected = (r"unbroken: startup failed: worker \d+: app module 'nosuchmodule' not found "
                r"\(in .*releases/v1\)")
    assert re.fullmatch(expected, last), last
    assert "Traceback" not in result.stderr


def test_bad_flag_and_bad_address_are_one_line(tmp_path: Path) -> None:
    result = run_cli("serve", "app:app", "-w", "0")
    assert result.returncode == 2 and "must be at least 1" in result.stderr
    result = run_cli("serve", "app:app", "-b", "127.0.0.1:http")
    assert result.returncode == 2
    assert result.stderr.strip() == "unbroken: bind '127.0.0.1:http': port 'http' is not a number"


def test_port_in_use_names_the_address(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        result = run_cli("serve", "app:app", "-b", f"127.0.0.1:{port}", "--control",
                         str(tmp_path / "c.sock"))
    finally:
        holder.close()
    assert result.returncode == 2
    expected = f"unbroken: cannot bind 127.0.0.1:{port}: address already in use"
    assert result.stderr.strip() == expected


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--pid", "missing/dir/app.pid", "cannot write --pid {}: No such file or directory"),
    ("--master-fifo", "missing/dir/fifo", "cannot create --master-fifo {}: No such file or "
     "directory"),
    ("--master-fifo", "plain-file", "--master-fifo {}: exists and is not a FIFO"),
])
def test_a_bad_pid_or_fifo_path_is_one_line_and_leaves_nothing_behind(
        tmp_path: Path, flag: str, value: str, expected: str) -> None:
    write_release(tmp_path, "v1")
    (tmp_path / "plain-file").write_text("")
    path = str(tmp_path / value)
    result = run_cli("serve", "app:app", "--chdir", str(tmp_path / "releases/v1"),
                     "-b", f"unix:{tmp_path / 'app.sock'}", "--control", str(tmp_path / "c.sock"),
                     flag, path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"unbroken: {expected.format(path)}"
    assert "Traceback" not in result.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["plain-file", "releases"], left  # no control socket, no unix bind


def test_reload_without_a_service_says_so(tmp_path: Path) -> None:
    result = run_cli("reload", "--control", str(tmp_path / "none.sock"))
    assert result.returncode == 1
    assert "no unbroken service at" in result.stderr


@contextmanager
def unix_service(tmp_path: Path, releases: Path, *args: str, serving: bool = True,
                 stop_signal: int = signal.SIGTERM) -> Iterator[tuple[Any, str, str]]:
    """`unbroken serve app:app` on a unix socket in tmp_path; (process, socket, control).

    With serving=False it only waits for the control socket (the master is up and has
    bound its sockets), for tests of what happens before any worker is ready."""
    socket_path, control = str(tmp_path / "app.sock"), str(tmp_path / "ctl.sock")
    process = subprocess.Popen(
        [sys.executable, "-m", "unbroken", "serve", "app:app", "--chdir", str(releases / "current"),
         "-b", f"unix:{socket_path}", "--control", control, *args], stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: os.path.exists(control) and (not serving or _serving(control)))
        yield process, socket_path, control
    finally:
        stop_process(process, stop_signal, timeout=30)


def test_unix_socket_bind_access_log_and_log_reopen(tmp_path: Path, releases: Path) -> None:
    access_log = tmp_path / "access.log"
    with unix_service(tmp_path, releases, "-w", "1", "--access-logfile",
                      str(access_log)) as (process, socket_path, _):
        first = Load(socket_path, clients=1, keep_alive=True, max_requests=5, duration=10)
        samples = first.start().wait()
        assert len(samples) == 5 and all(s.error is None for s in samples)
        wait_until(lambda: access_log.exists() and access_log.read_text().count("GET / ") == 5)
        access_log.rename(tmp_path / "access.log.1")  # what logrotate does
        os.kill(process.pid, signal.SIGUSR1)
        wait_until(lambda: access_log.exists())
        Load(socket_path, clients=1, keep_alive=False, max_requests=3, duration=10).start().wait()
        wait_until(lambda: access_log.read_text().count("GET / ") == 3)
    assert not os.path.exists(socket_path)  # the master removes its unix socket on exit


def _unix_exchange(path: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(path)
        client.sendall(request)
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_json_access_log(tmp_path: Path, releases: Path) -> None:
    access_log = tmp_path / "access.log"
    with unix_service(tmp_path, releases, "-w", "1", "--access-logfile", str(access_log),
                      "--access-log-format", "json") as (_, socket_path, _control):
        answer = _unix_exchange(socket_path, b"GET /?x=1 HTTP/1.1\r\nHost: a\r\n"
                                b"User-Agent: t/1\r\nX-Request-Id: r-42\r\n"
                                b"Connection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200")
        _unix_exchange(socket_path, b"GET / HTTP/1.0\r\n\r\n")
        assert _unix_exchange(socket_path, b"BAD\x01 / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 4")
        wait_until(lambda: access_log.exists() and access_log.read_text().count("\n") == 3)
    first, second, rejected = [json.loads(line) for line in access_log.read_text().splitlines()]
    assert first["method"] == "GET" and first["path"] == "/?x=1" and first["version"] == "1.1"
    assert first["status"] == 200 and first["bytes"] > 0 and first["duration_ms"] >= 0
    assert first["user_agent"] == "t/1" and first["request_id"] == "r-42"
    assert first["time"].endswith("Z") and first["referer"] is None
    assert second["version"] == "1.0" and "request_id" not in second
    assert rejected["method"] is None and 400 <= rejected["status"] < 500


def _serving(control: str) -> bool:
    from unbroken.control.client import ControlUnavailable, call

    try:
        return call(control, "status", timeout=5).data["phase"] == "serving"
    except (ControlUnavailable, OSError):
        return False


def test_reload_on_touch_and_control_socket_mode(service_factory: Any, releases: Path) -> None:
    trigger = releases / "reload.trigger"
    trigger.write_text("")
    service = service_factory("--reload-on-touch", str(trigger))
    service.wait_serving()
    assert os.stat(service.control).st_mode & 0o777 == 0o600
    write_release(releases, "v2")
    point_current(releases, "v2")
    os.utime(trigger, (time.time() + 5, time.time() + 5))
    wait_until(lambda: service.status()["generation"] == 2
               and service.status()["phase"] == "serving")
    samples = Load(service.address, clients=1, keep_alive=False, max_requests=5,
                   duration=10).start().wait()
    assert [s.body.split()[0] for s in samples] == [b"v2"] * 5


def test_umask_sets_the_unix_socket_mode(tmp_path: Path, releases: Path) -> None:
    with unix_service(tmp_path, releases, "-w", "1", "--umask", "007") as (_, socket_path,
                                                                           control):
        assert os.stat(socket_path).st_mode & 0o777 == 0o660  # group may connect, not others
        assert os.stat(control).st_mode & 0o777 == 0o600  # the control socket stays private


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a socket to another user needs root")
def test_unix_socket_belongs_to_the_workers_user_and_group(tmp_path: Path,
                                                           releases: Path) -> None:
    # Only the socket's ownership is under test: the master binds it before any worker
    # exists, so the service is not waited for and is killed at the end.
    with unix_service(tmp_path, releases, "--umask", "007", "--user", "nobody", "--group",
                      "nogroup", serving=False, stop_signal=signal.SIGKILL) as (_, path, _c):
        info = os.stat(path)
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (65534, 65534, 0o660)


def test_a_request_longer_than_timeout_does_not_cost_the_worker(service_factory: Any) -> None:
    """With --threads 1 the app runs on the worker's event loop (engines/wsgi/engine.py); the
    heartbeat comes from its own thread, so --timeout replaces stuck processes, not
    workers whose request is slow."""
    service = service_factory("--timeout", "1", workers=1)
    service.wait_serving()
    [worker] = service.worker_pids()
    samples = Load(service.address, clients=1, keep_alive=False, max_requests=1,
                   duration=10, timeout=8, path="/slow?s=2.5").start().wait()
    assert [sample.status for sample in samples] == [200], summarize(samples)
    assert service.worker_pids() == [worker]
    assert "no heartbeat" not in service.output()
