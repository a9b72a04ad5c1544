"""Control paths: one too long for a unix socket, and what a wrong --name finds."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from unbroken.control.paths import (
    UNIX_PATH_LIMIT,
    control_path_problem,
    no_service,
    services_in,
)


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
    elsewhere = f"/tmp/unbroken-{os.getuid()}"
    with _listen(Path("shop.sock")), _listen(Path("web.sock")):
        line = no_service(tried)
    assert line.startswith(f"no unbroken service at {tried}; running: --name shop, --name "
                           f"web")
    assert line.endswith(f"(looked in {tmp_path} and {elsewhere})")


def test_no_service_says_none_is_running(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    # Not this machine's /tmp/unbroken-<uid>, where other services may be running.
    monkeypatch.setattr(os, "getuid", lambda: 4_000_000)
    tried = str(tmp_path / "unbroken" / "shop.sock")
    assert no_service(tried) == (f"no unbroken service at {tried}; none is running (looked "
                                 f"in {tmp_path}/unbroken and /tmp/unbroken-4000000)")
