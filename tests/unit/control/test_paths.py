"""The control path rule (the same answer for the master and for any client of the same
uid, whatever either's environment holds: `sudo -u` resets it), a path too long for a
unix socket, and what a wrong --name finds."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from unbroken.control import paths
from unbroken.control.paths import (
    UNIX_PATH_LIMIT,
    choose_control_path,
    control_path_candidates,
    control_path_problem,
    no_service,
    services_in,
)


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


def test_a_path_over_the_unix_limit_names_the_limit_and_the_path() -> None:
    fits = "/tmp/" + "x" * (UNIX_PATH_LIMIT - 5)
    assert control_path_problem(fits) is None
    long = fits + "y"
    assert control_path_problem(long) == (
        f"control socket path {long} is {UNIX_PATH_LIMIT + 1} bytes, over the "
        f"{UNIX_PATH_LIMIT}-byte limit of a unix socket path: give a shorter --name, or "
        "--control PATH")
    assert control_path_problem(long, named=False) == (
        f"control socket path {long} is {UNIX_PATH_LIMIT + 1} bytes, over the "
        f"{UNIX_PATH_LIMIT}-byte limit of a unix socket path: give a shorter --control")


def _listen(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    return server


def test_services_in_lists_the_answering_sockets_only(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with _listen(Path("web.sock")), _listen(Path("shop.sock")):
        stale = _listen(Path("gone.sock"))
        stale.close()  # the file stays, nothing answers: a service that was killed
        Path("notes.txt").write_text("")
        assert services_in(".") == ["shop", "web"]


def test_no_service_lists_what_runs_and_where_it_looked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    tried = str(tmp_path / "shpo.sock")
    uid = os.geteuid()
    elsewhere = f"/run/unbroken and /run/user/{uid}/unbroken and /tmp/unbroken-{uid}"
    with _listen(Path("shop.sock")), _listen(Path("web.sock")):
        line = no_service(tried)
    assert line.startswith(f"no unbroken service at {tried}; running: --name shop, --name "
                           f"web")
    assert line.endswith(f"(looked in {tmp_path} and {elsewhere})")


def test_services_in_per_name_directories_are_found(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    with _listen(tmp_path / "shop" / "control.sock"):
        assert services_in(str(tmp_path)) == ["shop"]


def test_no_service_says_none_is_running(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    # Not this machine's directories, where other services may be running.
    monkeypatch.setattr(os, "geteuid", lambda: 4_000_000)
    (tmp_path / "unbroken").mkdir()
    tried = str(tmp_path / "unbroken" / "shop.sock")
    line = no_service(tried)
    assert line.startswith(f"no unbroken service at {tried}; none is running (looked in "
                           f"{tmp_path}/unbroken and ")
    assert line.endswith("/run/user/4000000/unbroken and /tmp/unbroken-4000000)")
