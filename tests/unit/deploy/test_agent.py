"""The host agent's file-level steps, on a real folder: the lease, pruning, partials,
and the archive checks. (The switch itself needs a master: tests/integration.)"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from unbroken.deploy import install
from unbroken.deploy.agent import (
    AgentError,
    op_lock_acquire,
    op_lock_release,
    op_lock_renew,
    read_json,
)
from unbroken.deploy.layout import Layout, link_target, point


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(str(tmp_path / "shop"), "shop")
    for directory in layout.all_dirs():
        os.makedirs(directory)
    return layout


def test_lease_is_taken_held_renewed_and_released(layout: Layout) -> None:
    first = {"deploy_id": "d1", "holder": "ann@laptop", "ttl": 30}
    assert op_lock_acquire(layout, first)["decision"] == "taken"
    held = op_lock_acquire(layout, {"deploy_id": "d2", "holder": "bob@ci", "ttl": 30})
    assert held["held"] and held["holder"]["holder"] == "ann@laptop"
    op_lock_renew(layout, {"deploy_id": "d1"})
    with pytest.raises(AgentError, match="lease lost"):
        op_lock_renew(layout, {"deploy_id": "d2"})
    with pytest.raises(AgentError, match="not by this deploy"):
        op_lock_release(layout, {"deploy_id": "d2"})
    assert op_lock_release(layout, {"deploy_id": "d1"})["released"]
    assert read_json(layout.lease) is None


def test_a_stale_lease_is_taken_over_and_logged(layout: Layout) -> None:
    stale = {"deploy_id": "dead", "holder": "ann@laptop", "started": time.time() - 500,
             "heartbeat": time.time() - 100, "ttl": 10, "diverged": None}
    Path(layout.lease).write_text(json.dumps(stale))
    answer = op_lock_acquire(layout, {"deploy_id": "d2", "holder": "bob@ci", "ttl": 30})
    assert answer["decision"] == "taken over"
    assert answer["previous_holder"]["deploy_id"] == "dead"
    history = [json.loads(line) for line in Path(layout.history).read_text().splitlines()]
    assert history[-1]["event"] == "lock taken over"
    assert history[-1]["from"]["holder"] == "ann@laptop"
    op_lock_release(layout, {"deploy_id": "d2"})  # and its watchdog goes


def test_a_half_switched_host_is_not_taken_over(layout: Layout) -> None:
    """Its watchdog is about to put it back; a new deploy must wait for that."""
    stale = {"deploy_id": "dead", "holder": "ann", "started": 0, "heartbeat": 0, "ttl": 1,
             "diverged": None}
    Path(layout.lease).write_text(json.dumps(stale))
    Path(layout.journal("dead")).write_text(json.dumps(
        {"deploy_id": "dead", "state": "active", "confirmed": False}))
    assert op_lock_acquire(layout, {"deploy_id": "d2", "holder": "bob", "ttl": 30})["held"]


def _release(layout: Layout, name: str, prepared_at: float | None) -> None:
    os.makedirs(layout.release(name))
    if prepared_at is not None:
        Path(layout.manifest(name)).write_text(json.dumps({"prepared_at": prepared_at}))


def test_prune_keeps_the_newest_and_never_current_or_previous(layout: Layout) -> None:
    for number in range(1, 7):
        _release(layout, f"r{number}", float(number))
    point(layout.current, "r1")  # rolled back to the oldest
    point(layout.previous, "r2")
    pruned = install.prune(layout, 2, keep=["r3"])
    assert sorted(pruned) == ["r4"]
    assert sorted(os.listdir(layout.releases)) == ["r1", "r2", "r3", "r5", "r6"]
    assert link_target(layout.current) == "r1"


def test_a_partial_release_is_removed_by_the_next_prepare(layout: Layout) -> None:
    _release(layout, "complete", 1.0)
    _release(layout, "killed-halfway", None)
    install._clean_partials(layout)
    assert os.listdir(layout.releases) == ["complete"]


def _archive(path: Path, name: str, *, link: str | None = None) -> None:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        if link is not None:
            info.type, info.linkname = tarfile.SYMTYPE, link
            tar.addfile(info)
        else:
            info.size = 2
            tar.addfile(info, io.BytesIO(b"ok"))


@pytest.mark.parametrize(("name", "link"), [("../escape.py", None),
                                            ("evil", "/etc/passwd"), ("up", "../../x")])
def test_an_archive_member_outside_the_release_is_refused(
        tmp_path: Path, name: str, link: str | None) -> None:
    archive = tmp_path / "r.tar"
    _archive(archive, name, link=link)
    target = tmp_path / "release"
    target.mkdir()
    with pytest.raises((AgentError, tarfile.TarError, OSError)):
        install._extract(str(archive), str(target))
    assert not (tmp_path / "escape.py").exists()


def test_the_agent_answers_json_even_for_a_bad_request() -> None:
    ran = subprocess.run([sys.executable, "-m", "unbroken.deploy.agent", "nosuch"],
                         input="{}", capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1
    answer = json.loads(ran.stdout.strip().splitlines()[-1])
    assert answer["ok"] is False and "bad request" in answer["error"]


def test_a_rollback_before_the_switch_began_fences_it_off(layout: Layout) -> None:
    """An interrupt right as a switch was sent: the rollback can reach the host before
    the switch's own process takes the host lock (seen once under load: the host then
    switched after its rollback and stayed alone on the new release). The rollback
    leaves a fence; the late switch refuses and changes nothing."""
    from unbroken.deploy.switch import activate, rollback

    os.makedirs(os.path.dirname(layout.manifest("r2")), exist_ok=True)
    Path(layout.manifest("r2")).write_text("{}")
    answer = rollback(layout, {"deploy_id": "d9", "release": ""})
    assert answer == {"changed": False, "release": None}
    with pytest.raises(AgentError, match="deploy d9 was already rolled back on this host"):
        activate(layout, {"release": "r2", "deploy_id": "d9", "confirm_timeout": 30})
    assert link_target(layout.current) is None  # never switched
    assert read_json(layout.journal("d9"))["state"] == "reverted"
