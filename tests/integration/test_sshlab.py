"""The deploy lab itself: if these fail, a failing deploy test says nothing about deploy.

One lab for the module (starting it wipes three homes and starts three sshd), used by
the tests in order; each test leaves the hosts as it found them (resumed, re-trusted).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleetload import FleetLoad
from haproxy import HAProxy, free_port
from processes import stop_process
from sshlab import SSHLab, skip_reason

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

SYSTEM_PYTHON = "/usr/bin/python3"  # readable by the host users, unlike /root/.pyenv


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHLab]:
    with SSHLab(tmp_path_factory.mktemp("sshlab")) as started:
        yield started


def test_strict_ssh_reaches_each_host_as_its_user(lab: SSHLab) -> None:
    for host in lab.hosts:
        result = lab.ssh(host.index, "whoami; pwd")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [host.user, str(host.home)]
    assert lab.run_as(1, ["id", "-un"]).stdout.strip() == "ubhost1"


def test_a_rotated_host_key_is_refused(lab: SSHLab) -> None:
    fingerprint = lab.rotate_host_key(2)
    assert fingerprint.startswith("SHA256:")
    refused = lab.ssh(2, "true", timeout=10)
    assert refused.returncode == 255
    assert ("REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr
            or "Host key verification failed" in refused.stderr), refused.stderr
    assert lab.ssh(1, "true").returncode == 0  # the other hosts are untouched
    lab.trust(2)
    assert lab.ssh(2, "whoami").stdout.strip() == "ubhost2"


def test_a_hung_host_times_out_and_comes_back(lab: SSHLab) -> None:
    lab.hang(3)
    try:
        started = time.monotonic()
        try:
            hung = lab.ssh(3, "true", options=("-o", "ConnectTimeout=2"), timeout=5)
            assert hung.returncode == 255, hung
        except subprocess.TimeoutExpired:
            pass  # also a failure to reach the host, only noticed later
        assert time.monotonic() - started < 5.5
    finally:
        lab.resume(3)
    assert lab.ssh(3, "whoami", options=("-o", "ConnectTimeout=5")).stdout.strip() == "ubhost3"


def test_hung_sessions_freeze_and_reap_clears_the_host(lab: SSHLab) -> None:
    client = subprocess.Popen([*lab.ssh_command, "h1", "sleep 30"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not _sleeping(lab) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sleeping(lab), "the remote sleep never started"
        frozen = lab.hang_sessions(1)
        assert set(lab.session_pids(1)) <= set(frozen)
        assert all(_state(pid) in ("T", "t", "") for pid in frozen)
        lab.resume_sessions(1)
        lab.reap(1)
        assert lab.user_pids(1) == [] and lab.session_pids(1) == []
        assert client.wait(timeout=5) == 255  # the session died under the client
    finally:
        stop_process(client, timeout=5)


@pytest.fixture
def web_hosts(lab: SSHLab, tmp_path: Path) -> Iterator[list[tuple[str, str, int]]]:
    """A stdlib http.server per host, run as the host's user on its own address."""
    servers: list[subprocess.Popen[bytes]] = []
    backends = []
    try:
        for host in lab.hosts:
            port = free_port(host.address)
            written = lab.run_as(host.index, ["sh", "-c", f"echo {host.alias} > index.html"])
            assert written.returncode == 0, written.stderr
            servers.append(lab.spawn_as(host.index, [
                SYSTEM_PYTHON, "-m", "http.server", "--bind", host.address, str(port),
                "--directory", str(host.home)], log=tmp_path / f"{host.alias}.log"))
            backends.append((host.alias, host.address, port))
        for server, (_name, address, port) in zip(servers, backends, strict=True):
            _wait_port(server, address, port)
        yield backends
    finally:
        for server in servers:
            stop_process(server, timeout=5)


def test_haproxy_spreads_load_over_the_hosts_without_failures(
        lab: SSHLab, web_hosts: list[tuple[str, str, int]], tmp_path: Path) -> None:
    with HAProxy(tmp_path / "haproxy", web_hosts) as haproxy:
        assert {haproxy.server_state(name) for name, _, _ in web_hosts} == {"no check"}
        load = FleetLoad(haproxy.port, clients=8, max_seconds=10, max_requests=5_000).start()
        time.sleep(2.0)
        result = load.stop()
        assert result.total > 50, result
        assert result.failed == 0, (result, haproxy.output())
        assert set(result.answers) == {"h1", "h2", "h3"}, result
        drained = haproxy.set_state("h1", "drain")
        assert drained.strip() == "", drained
        assert haproxy.server_state("h1") == "DRAIN"
        assert sum(int(row["stot"] or 0) for row in haproxy.show_stat()
                   if row["svname"] in ("h1", "h2", "h3")) >= result.ok


def _sleeping(lab: SSHLab) -> bool:
    return any(_comm(pid) == "sleep" for pid in lab.user_pids(1))


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, IndexError):
        return ""


def _wait_port(server: subprocess.Popen[bytes], address: str, port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"http.server on {address}:{port} exited {server.returncode}")
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"http.server on {address}:{port} not up in 10 s")
