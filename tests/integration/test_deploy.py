"""`unbroken deploy` against three real OpenSSH hosts behind a real HAProxy, under load.

The hosts are sshd daemons on 127.0.0.2-4, one unix user each, key login and strict
known_hosts (tests/support/sshlab.py); HAProxy on 127.0.0.1 balances over the three
hosts' app ports, and clients (half keep-alive) count every failed request through it
while the deploys run. The deploy is the CLI, run from the project's folder exactly
as a user types it. The fleet is set up and v1 deployed once for the module; each
test leaves every host serving one consistent release for the next.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from deployproject import APP_PORT, Project, Ran
from fleetload import FleetLoad, FleetResult
from haproxy import HAProxy
from sshlab import SSHLab, skip_reason

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))

REPO = Path(__file__).resolve().parents[2]
DEPLOY_BUDGET = 240.0  # seconds one deploy command may take before the test fails


@dataclass
class Fleet:
    lab: SSHLab
    project: Project
    haproxy: HAProxy
    commits: dict[str, str] = field(default_factory=dict)  # commit -> version it answers

    def deploy(self, *arguments: str, timeout: float = DEPLOY_BUDGET) -> Ran:
        started = time.monotonic()
        # `unbroken deploy ...` exactly as the docs write it: the installed command
        finished = subprocess.run(["unbroken", "deploy", *arguments],
                                  cwd=self.project.root, capture_output=True, text=True,
                                  timeout=timeout)
        return Ran(finished.returncode, finished.stdout, finished.stderr,
                   time.monotonic() - started)

    def deploy_background(self, *arguments: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["unbroken", "deploy", *arguments],
                                cwd=self.project.root, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    def deploy_acting(self, on: dict[str, str], act: Callable[[subprocess.Popen[str]], None],
                      *arguments: str) -> Ran:
        """`deploy --json` in the background; `act` once, at the first event that has
        every item of `on` (a fault injected at that moment of the deploy)."""
        started = time.monotonic()
        process = self.deploy_background("--json", *arguments)
        lines: list[str] = []
        acted = False
        try:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                if not acted and json.loads(line).items() >= on.items():
                    acted = True
                    act(process)
            _, err = process.communicate(timeout=DEPLOY_BUDGET)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=10)
        assert acted, "".join(lines[-3:])
        return Ran(process.returncode, "".join(lines), err, time.monotonic() - started)

    def status(self) -> list[dict[str, Any]]:
        ran = self.deploy("status", "--json")
        assert ran.code == 0, ran.stderr
        rows: list[dict[str, Any]] = json.loads(ran.stdout)
        return rows

    def answers(self) -> list[str]:
        """What each host's app port answers right now, in host order."""
        out = []
        for host in self.lab.hosts:
            url = f"http://{host.address}:{APP_PORT}/"
            with urllib.request.urlopen(url, timeout=10) as response:
                out.append(response.read().decode().strip())
        return out

    def consistent(self) -> str:
        """Every host: `current`, the master's serving generation and the HTTP answer
        all name one release, the same on every host. Returns that release id."""
        rows = self.status()
        currents = {row["current"] for row in rows}
        assert len(currents) == 1, rows
        (current,) = currents
        for row in rows:
            assert row["master"]["release"] == current, row
            assert row["master"]["phase"] == "serving", row
            assert row["lease"] is None, row
        manifest = self.manifest(1, current)
        version = manifest["commit"]
        answers = set(self.answers())
        assert len(answers) == 1, answers
        assert self.commits[version] in answers.pop()
        return str(current)

    def manifest(self, i: int, release: str) -> dict[str, Any]:
        path = self.lab.host(i).home / "shop" / "releases" / release / "RELEASE.json"
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def releases_on(self, i: int) -> set[str]:
        return set(os.listdir(self.lab.host(i).home / "shop" / "releases"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("deploy")
    lab = SSHLab(root / "lab").start()
    proxy: HAProxy | None = None
    try:
        project = Project(root, lab)
        for host in lab.hosts:
            project.shared_env(host.index, "APP_MODE=test\n")
        backends = [(h.alias, h.address, APP_PORT) for h in lab.hosts]
        proxy = HAProxy(root / "haproxy", backends).start()
        fleet = Fleet(lab, project, proxy)
        fleet.commits[project.commit("v1")] = "v1"
        setup = fleet.deploy("setup")
        assert setup.code == 0, setup.stderr
        first = fleet.deploy()
        assert first.code == 0, first.stderr
        fleet.consistent()
        yield fleet
    finally:
        if proxy is not None:
            proxy.stop()
        lab.stop()


def _under_load(fleet: Fleet, *arguments: str) -> tuple[Ran, FleetResult]:
    with FleetLoad(fleet.haproxy.port, clients=6, max_seconds=DEPLOY_BUDGET) as load:
        time.sleep(0.5)  # the clients are running before the deploy starts
        ran = fleet.deploy(*arguments)
        time.sleep(0.5)
    assert load.result is not None
    return ran, load.result


def test_setup_is_idempotent(fleet: Fleet) -> None:
    again = fleet.deploy("setup")
    assert again.code == 0, again.stderr
    assert "unchanged" in again.stderr
    check = fleet.deploy("check")
    assert check.code == 0, check.stderr
    assert all(f"{h.alias}: pre-flight ok" in check.stderr for h in fleet.lab.hosts)
    fleet.consistent()


def test_deploy_in_batches_under_load_fails_no_request(fleet: Fleet) -> None:
    before = fleet.consistent()
    fleet.commits[fleet.project.commit("v2", six="1.17.0")] = "v2"
    ran, load = _under_load(fleet, "--json")
    assert ran.code == 0, ran.stderr
    assert load.failed == 0, load.failures
    assert load.total > 100
    now = fleet.consistent()
    assert now != before
    assert fleet.answers() == ["v2 six=1.17.0"] * 3  # each release's own pinned library
    assert any(answer.startswith("v1") for answer in load.answers)  # the switch was live
    events = ran.events()
    switches = [e for e in events if e["event"] == "step" and e["step"] == "switch"
                and e["phase"] == "start"]
    # batches [1, "50%"] of 3 hosts: h1 first, alone, then one host at a time
    assert [e["host"] for e in switches] == ["h1", "h2", "h3"]
    summary = events[-1]
    assert summary["event"] == "summary" and summary["exit_code"] == 0
    assert all(row["release"] == now for row in summary["hosts"])
    for i in (1, 2, 3):
        assert fleet.manifest(i, now)["sha256"] == fleet.manifest(1, now)["sha256"]
        assert os.readlink(fleet.lab.host(i).home / "shop" / "previous") == \
            f"releases/{before}"


def test_import_error_on_one_host_is_caught_before_any_switch(fleet: Fleet) -> None:
    before = fleet.consistent()
    fleet.project.shared_env(2, "BREAK_HERE=1\n")
    try:
        fleet.commits[fleet.project.commit("v3-broken", fail_import=True)] = "v3-broken"
        ran, load = _under_load(fleet)
    finally:
        fleet.project.shared_env(2, "APP_MODE=test\n")
    assert ran.code == 1, ran.stderr
    assert "h2: check:" in ran.stderr
    assert "cannot import on this host" in ran.stderr  # the traceback's line
    assert load.failed == 0, load.failures
    assert fleet.consistent() == before
    for i in (1, 2, 3):  # nothing half-done: the unused release is gone everywhere
        assert fleet.releases_on(i) == fleet.releases_on(1)
        assert len(fleet.releases_on(i)) == 2


def test_a_failure_after_the_switch_rolls_back_every_switched_host(fleet: Fleet) -> None:
    before = fleet.consistent()
    fleet.project.shared_env(3, "BREAK_HERE=1\n")
    try:
        fleet.commits[fleet.project.commit("v4-crashes", crash_after=1.0)] = "v4-crashes"
        ran, load = _under_load(fleet, "--json")
    finally:
        fleet.project.shared_env(3, "APP_MODE=test\n")
    assert ran.code == 3, ran.stderr
    events = ran.events()
    summary = events[-1]
    assert summary["exit_code"] == 3
    assert "h3: switch:" in summary["message"] and "died" in summary["message"]
    rolled = {e["host"] for e in events if e["event"] == "step" and e["step"] == "rollback"
              and e["phase"] == "end" and e["outcome"] == "ok"}
    assert {"h1", "h2", "h3"} <= rolled | {"h3"}
    assert {"h1", "h2"} <= rolled
    assert fleet.consistent() == before
    # the crashing workers of h3 took their own requests with them; say how many
    print(f"\nafter-switch failure: {load.failed}/{load.total} failed {load.failures}")


def test_an_unsatisfiable_lock_file_fails_on_every_host_before_traffic(fleet: Fleet) -> None:
    before = fleet.consistent()
    fleet.commits[fleet.project.commit(
        "v5-unsat", requirements="six==1.16.0\nsix==1.17.0\n")] = "v5-unsat"
    ran = fleet.deploy()
    assert ran.code == 1, ran.stderr
    assert ": prepare: install failed:" in ran.stderr, ran.stderr
    assert "six" in ran.stderr
    assert fleet.consistent() == before


def test_an_unpinned_requirements_file_is_refused_before_connecting(fleet: Fleet) -> None:
    fleet.commits[fleet.project.commit("v5b", requirements="six\n")] = "v5b"
    ran = fleet.deploy()
    assert ran.code == 1
    assert "FAILED (exit 1): requirements.txt line 1 is not pinned ('six'): pin every " \
        "requirement (uv pip compile) so hosts install the same versions" in ran.stderr
    assert "connect ok" not in ran.stderr


def test_a_hung_host_fails_fast_and_blocks_nobody(fleet: Fleet) -> None:
    before = fleet.consistent()
    fleet.commits[fleet.project.commit("v6")] = "v6"
    fleet.lab.hang(2)
    try:
        ran = fleet.deploy()
    finally:
        fleet.lab.resume(2)
    assert ran.code == 1, ran.stderr
    assert ran.seconds < 15  # connect_timeout is 3 s
    assert "h2: connect: no SSH answer within 3s" in ran.stderr
    assert "h1: connect ok" in ran.stderr and "h3: connect ok" in ran.stderr
    assert fleet.consistent() == before


def test_a_second_deploy_at_once_exits_75_naming_the_holder(fleet: Fleet) -> None:
    before = fleet.consistent()
    fleet.commits[fleet.project.commit("v7", import_delay=1.5)] = "v7"
    first = fleet.deploy_background()
    try:
        deadline = time.monotonic() + 60
        lease = fleet.lab.host(1).home / "shop" / ".unbroken" / "lease.json"
        while not lease.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lease.exists()
        second = fleet.deploy("--json")
        _, err = first.communicate(timeout=DEPLOY_BUDGET)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate(timeout=10)
    assert second.code == 75, second.stdout
    summary = second.events()[-1]
    assert summary["event"] == "summary" and summary["exit_code"] == 75
    assert "locked by" in summary["message"] and "@" in summary["message"]
    refused = [e for e in second.events() if e["event"] == "locked"]
    assert refused and refused[0]["holder"]["deploy_id"] != summary["deploy_id"]
    assert first.returncode == 0, err
    now = fleet.consistent()
    assert now != before


def test_rollback_needs_no_package_index(fleet: Fleet) -> None:
    before = fleet.consistent()
    rows = fleet.status()
    previous = rows[0]["previous"]
    for host in fleet.lab.hosts:  # the index is unreachable from every host now
        fleet.project.uv_config(host.index, 'index-url = "http://127.0.0.1:9/simple"\n'
                                "native-tls = true\n")
    try:
        ran, load = _under_load(fleet, "rollback")
    finally:
        for host in fleet.lab.hosts:
            fleet.project.uv_config(host.index, "native-tls = true\n")
    assert ran.code == 0, ran.stderr
    assert load.failed == 0, load.failures
    assert fleet.consistent() == previous != before


def test_a_changed_host_key_refuses_the_deploy_showing_both_fingerprints(
        fleet: Fleet) -> None:
    before = fleet.consistent()
    old = fleet.lab.fingerprint(3)
    new = fleet.lab.rotate_host_key(3)
    try:
        fleet.commits[fleet.project.commit("v8")] = "v8"
        ran = fleet.deploy()
    finally:
        fleet.lab.trust(3)
    assert ran.code == 1, ran.stderr
    assert "h3: connect: HOST KEY CHANGED" in ran.stderr
    assert old in ran.stderr and new in ran.stderr
    assert fleet.consistent() == before


def test_a_killed_deploy_is_put_back_by_the_hosts_themselves(fleet: Fleet) -> None:
    """The orchestrator is SIGKILLed after h1 switched: no rollback can come from it.
    h1's watchdog puts it back once the lease goes silent (confirm_timeout 20 s)."""
    before = fleet.consistent()
    fleet.commits[fleet.project.commit("v9")] = "v9"
    fleet.deploy_acting({"event": "step", "step": "switch", "host": "h1", "phase": "end"},
                        lambda process: os.killpg(process.pid, signal.SIGKILL))
    assert fleet.status()[0]["current"] != before  # h1 alone on the new release
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = fleet.status()
        if all(row["current"] == before and row["lease"] is None for row in rows):
            break
        time.sleep(1)
    assert fleet.consistent() == before
    history = (fleet.lab.host(1).home / "shop" / ".unbroken" / "history.jsonl").read_text()
    assert "reverted by watchdog" in history


def test_dry_run_a_tag_and_the_releases_list(fleet: Fleet) -> None:
    before = fleet.consistent()
    tagged = fleet.project.commit("v11")
    fleet.commits[tagged] = "v11"
    fleet.project.tag("v1.4.2")
    fleet.commits[fleet.project.commit("v12-head")] = "v12-head"
    dry = fleet.deploy("--dry-run")
    assert dry.code == 0, dry.stderr
    assert "would switch batch 1: h1 (" in dry.stderr
    assert fleet.consistent() == before
    ran = fleet.deploy("v1.4.2")
    assert ran.code == 0, ran.stderr
    now = fleet.consistent()
    assert fleet.manifest(2, now)["commit"] == tagged  # the tag, not HEAD
    listed = fleet.deploy("releases")
    assert listed.code == 0, listed.stderr
    block = listed.stdout.split("h2:\n", 1)[1]
    current = next(line for line in block.splitlines() if line.strip().startswith(now))
    assert current.rstrip().endswith("current") and " MiB " in current
    assert f"{tagged[:12]}" in current


def test_the_example_fabfile_deploys_and_reports(fleet: Fleet) -> None:
    """examples/fabfile.py beside deploy.toml, run as its docstring says."""
    before = fleet.consistent()
    shutil.copy(REPO / "examples" / "fabfile.py", fleet.project.root / "fabfile.py")
    fleet.commits[fleet.project.commit("v10")] = "v10"
    ran = subprocess.run(["fab", "deploy"], cwd=fleet.project.root, capture_output=True,
                         text=True, timeout=DEPLOY_BUDGET)
    assert ran.returncode == 0, ran.stderr
    now = fleet.consistent()
    assert now != before
    status = subprocess.run(["fab", "status"], cwd=fleet.project.root, capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[0].startswith(f"h1: {now} (generation ")
    back = subprocess.run(["fab", "rollback"], cwd=fleet.project.root, capture_output=True,
                          text=True, timeout=DEPLOY_BUDGET)
    assert back.returncode == 0, back.stderr
    assert fleet.consistent() == before


def test_a_link_cut_during_a_switch_is_rolled_back_fleet_wide(fleet: Fleet) -> None:
    """h2's SSH connection is killed while its switch runs there (the remote step goes
    on: no PTY). The deploy must not take the dead link for a stopped step: it connects
    again, waits for the switch to end, undoes it, and rolls h1 back too."""
    before = fleet.consistent()
    fleet.commits[fleet.project.commit("v13", import_delay=0.5)] = "v13"
    def cut_link(_: subprocess.Popen[str]) -> None:
        time.sleep(0.3)
        for pid in fleet.lab.session_pids(2):
            os.kill(pid, signal.SIGKILL)

    with FleetLoad(fleet.haproxy.port, clients=6, max_seconds=DEPLOY_BUDGET) as load:
        ran = fleet.deploy_acting(
            {"event": "step", "step": "switch", "host": "h2", "phase": "start"}, cut_link)
    events = ran.events()
    assert ran.code == 3, (events[-3:], ran.stderr)
    summary = events[-1]
    assert "h2: switch:" in summary["message"], summary
    assert any(e["event"] == "note" and "connecting again" in e["message"] for e in events)
    assert fleet.consistent() == before
    assert load.result is not None
    print(f"\nlink cut mid-switch: {load.result.failed}/{load.result.total} failed")
    assert load.result.failed == 0, load.result.failures


def test_ctrl_c_rolls_back_then_exits_130(fleet: Fleet) -> None:
    before = fleet.consistent()
    fleet.commits[fleet.project.commit("v14")] = "v14"
    ran = fleet.deploy_acting({"event": "step", "step": "switch", "host": "h2",
                               "phase": "start"},
                              lambda process: os.kill(process.pid, signal.SIGINT))
    events = ran.events()
    assert ran.code == 130, (events[-3:], ran.stderr)
    assert events[-1]["event"] == "summary" and events[-1]["message"] == "interrupted"
    assert fleet.consistent() == before


def test_hooks_run_where_and_when_they_say(fleet: Fleet, tmp_path: Path) -> None:
    fleet.project.write_config(extra=f"""
[hooks]
local_pre = "echo pre $UNBROKEN_RELEASE > {tmp_path}/local_pre"
build = "python -c 'import six' && echo built > BUILT"
once = "echo $UNBROKEN_HOST $UNBROKEN_RELEASE >> ~/once.log"
local_post = "echo post $UNBROKEN_HOSTS > {tmp_path}/local_post"
""")
    fleet.commits[fleet.project.commit("v15")] = "v15"
    try:
        ran = fleet.deploy()
    finally:
        fleet.project.write_config()
        fleet.commits[fleet.project.commit("v15-plain")] = "v15-plain"
    assert ran.code == 0, ran.stderr
    now = fleet.consistent()
    assert (tmp_path / "local_pre").read_text() == f"pre {now}\n"
    assert (tmp_path / "local_post").read_text() == "post h1,h2,h3\n"
    # once: on the first host only, before its switch, in the new release
    assert (fleet.lab.host(1).home / "once.log").read_text() == f"h1 {now}\n"
    assert not (fleet.lab.host(2).home / "once.log").exists()
    for host in fleet.lab.hosts:  # build: in each release, its own venv on PATH
        assert (host.home / "shop" / "releases" / now / "BUILT").read_text() == "built\n"


def test_a_uv_project_deploys_from_its_lock_and_a_stale_lock_is_refused(
        fleet: Fleet) -> None:
    before = fleet.consistent()
    try:
        fleet.commits[fleet.project.use_uv_lock("v16-uv", ["six==1.17.0"])] = "v16-uv"
        ran = fleet.deploy()
        assert ran.code == 0, ran.stderr
        now = fleet.consistent()
        assert fleet.manifest(1, now)["lock"] == "uv.lock"
        assert fleet.answers() == ["v16-uv six=1.17.0"] * 3
        # the pins change, the lock does not: `uv sync --locked` refuses on every host
        fleet.commits[fleet.project.use_uv_lock("v17-stale", ["six==1.16.0"], lock=False)] = \
            "v17-stale"
        stale = fleet.deploy()
        assert stale.code == 1, stale.stderr
        for host in fleet.lab.hosts:
            assert f"{host.alias}: prepare failed" in stale.stderr
        assert "uv lock" in stale.stderr  # uv's own hint, quoted
        assert fleet.consistent() == now
    finally:
        fleet.project.drop_uv_lock()
        fleet.commits[fleet.project.commit("v18")] = "v18"
    assert before != now


def test_a_host_that_hangs_mid_step_fails_the_deploy_within_seconds(fleet: Fleet) -> None:
    """Every process of h2 (its sshd session, the agent) freezes while it prepares: the
    keepalives (1 s x 3) find it; the other hosts are cleaned up and nothing switched."""
    before = fleet.consistent()
    fleet.project.write_config(extra='[hooks]\nbuild = "sleep 3"\n')
    fleet.commits[fleet.project.commit("v19")] = "v19"
    hung_at: list[float] = []

    def hang(_: subprocess.Popen[str]) -> None:
        time.sleep(0.5)
        fleet.lab.hang_sessions(2)
        hung_at.append(time.monotonic())

    try:
        ran = fleet.deploy_acting(
            {"event": "step", "step": "prepare", "host": "h2", "phase": "start"}, hang)
        took = time.monotonic() - hung_at[0]
    finally:
        fleet.lab.resume_sessions(2)
        fleet.project.write_config()
        fleet.commits[fleet.project.commit("v19-plain")] = "v19-plain"
    events = ran.events()
    assert ran.code == 1, events[-2:]
    assert took < 15, took
    assert "h2: prepare:" in events[-1]["message"]
    assert "connection lost" in events[-1]["message"] or "no answer" in events[-1]["message"]
    for i in (1, 3):  # their unused release is gone (h2's goes at its next prepare)
        assert events[0]["release"] not in fleet.releases_on(i)
    deadline = time.monotonic() + 40  # h2's own watchdog lets its stale lease go (ttl 10)
    while time.monotonic() < deadline and fleet.status()[1]["lease"] is not None:
        time.sleep(1)
    assert fleet.consistent() == before


def test_max_fail_lets_one_host_go_back_alone_when_asked(fleet: Fleet) -> None:
    """max_fail = 1 opts out of all-or-nothing: h3's failed switch is put back on its
    own, the others keep the new release, and the summary names h3."""
    before = fleet.consistent()
    fleet.project.write_config(batches="[1]", max_fail=1)
    fleet.project.shared_env(3, "BREAK_HERE=1\n")
    try:
        fleet.commits[fleet.project.commit("v20-crashes", crash_after=1.0)] = "v20-crashes"
        ran = fleet.deploy("--json")
    finally:
        fleet.project.shared_env(3, "APP_MODE=test\n")
    assert ran.code == 0, ran.stdout[-3000:]
    summary = ran.events()[-1]
    assert summary["message"] == "h3 failed within max_fail and serve(s) the previous release"
    rows = {row["host"]: row for row in fleet.status()}
    assert rows["h1"]["current"] == rows["h2"]["current"] != before
    assert rows["h3"]["current"] == before and rows["h3"]["master"]["release"] == before
    fleet.project.write_config()
    fleet.commits[fleet.project.commit("v21")] = "v21"
    healed = fleet.deploy()  # and the next deploy brings the fleet together again
    assert healed.code == 0, healed.stderr
    fleet.consistent()


def test_lock_status_and_release(fleet: Fleet) -> None:
    lease = fleet.lab.host(2).home / "shop" / ".unbroken" / "lease.json"
    fleet.lab.run_as(2, ["sh", "-c", f"cat > {lease}"], input=json.dumps(
        {"deploy_id": "stuck", "holder": "someone@elsewhere", "started": time.time(),
         "heartbeat": time.time(), "ttl": 3600, "diverged": None}))
    status = fleet.deploy("lock", "status")
    assert status.code == 0
    assert "h2: held by someone@elsewhere (deploy stuck" in status.stdout
    assert "h1: free" in status.stdout
    refused = fleet.deploy()
    assert refused.code == 75 and "someone@elsewhere" in refused.stderr
    released = fleet.deploy("lock", "release", "--hosts", "h2")
    assert released.code == 0 and "h2: released" in released.stdout
    assert not lease.exists()
