"""The control path rule: the same answer for the master and for any client of the same
uid, whatever either's environment holds (`sudo -u` resets it)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from unbroken.control import paths
from unbroken.control.paths import choose_control_path, control_path_candidates


def test_a_system_runtime_directory_of_ours_wins(tmp_path: Path) -> None:
    # What systemd makes for RuntimeDirectory=unbroken/myapp with User=myapp.
    (tmp_path / "unbroken" / "myapp").mkdir(parents=True)
    uid = os.geteuid()
    assert choose_control_path("myapp", uid, run=str(tmp_path), tmp="/tmp") == \
        str(tmp_path / "unbroken" / "myapp" / "control.sock")


def test_someone_elses_directory_is_not_ours(tmp_path: Path) -> None:
    (tmp_path / "unbroken" / "myapp").mkdir(parents=True)
    other = os.geteuid() + 4242
    assert choose_control_path("myapp", other, run=str(tmp_path), tmp="/t") == \
        f"/t/unbroken-{other}/myapp.sock"


def test_root_creates_the_system_directory_others_fall_back(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert choose_control_path("myapp", 1000, run=str(run), tmp="/t") == \
        "/t/unbroken-1000/myapp.sock"
    if os.geteuid() == 0:
        assert choose_control_path("myapp", 0, run=str(run), tmp="/t") == \
            str(run / "unbroken" / "myapp" / "control.sock")


def test_logind_runtime_directory_next(tmp_path: Path) -> None:
    # Root may create the system directory, which comes first: as root, ask for another uid.
    uid = os.geteuid() or 4242
    (tmp_path / "user" / str(uid)).mkdir(parents=True)
    if os.geteuid() == 0:
        os.chown(tmp_path / "user" / str(uid), uid, uid)
    assert choose_control_path("myapp", uid, run=str(tmp_path), tmp="/t") == \
        str(tmp_path / "user" / str(uid) / "unbroken" / "myapp" / "control.sock")


def test_the_environment_never_moves_the_master(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    before = paths.default_control_path("myapp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/myapp")
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/somewhere")
    assert paths.default_control_path("myapp") == before


def test_candidates_in_the_masters_order_with_the_legacy_place() -> None:
    assert control_path_candidates("app", 1000, {"XDG_RUNTIME_DIR": "/x"},
                                   run="/r", tmp="/t") == [
        "/r/unbroken/app/control.sock", "/r/user/1000/unbroken/app/control.sock",
        "/x/unbroken/app.sock", "/t/unbroken-1000/app.sock"]
    assert control_path_candidates("app", 1000, {}, run="/r", tmp="/t")[-1] == \
        "/t/unbroken-1000/app.sock"


def test_a_client_finds_the_socket_where_it_is(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # A master of an older unbroken listening under the service's XDG_RUNTIME_DIR.
    name = f"paths-test-{os.getpid()}"
    legacy = tmp_path / "unbroken" / f"{name}.sock"
    legacy.parent.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert paths.find_control_path(name) == paths.default_control_path(name)  # none yet
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(legacy))
        assert paths.find_control_path(name) == str(legacy)
