"""Services run as a throwaway system user, as the docs run them (`user=myapp`, `sudo -u`).

A test running as root makes the user (and removes it after). That user must be able to
run this very interpreter; where it lives under a directory only root may enter (pyenv
under a 0700 /root), `traversable` runs a command in a mount namespace of its own whose
/root is a 0711 tmpfs with the interpreter's tree bound back in: same paths, nothing
changed outside.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def need_root_tools(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("a system user needs root")
    missing = [tool for tool in ("useradd", "userdel", "runuser", "unshare", *tools)
               if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"missing {missing}; scripts/install-test-deps installs them")
        pytest.skip(f"missing {missing}")


@contextlib.contextmanager
def system_user(name: str, groups: tuple[str, ...] = ()) -> Iterator[str]:
    subprocess.run(["userdel", name], capture_output=True)  # a leftover of a killed run
    subprocess.run(["groupdel", name], capture_output=True)
    subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                    "--shell", "/usr/sbin/nologin", "--home-dir", "/nonexistent",
                    *(["--groups", ",".join(groups)] if groups else []), name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)


def _hidden_root(user: str) -> bool:
    """Whether `user` cannot run this interpreter because of /root's mode."""
    if not sys.prefix.startswith("/root/"):
        return False
    return subprocess.run(["runuser", "-u", user, "--", sys.executable, "-c", "pass"],
                          capture_output=True).returncode != 0


def traversable(user: str, argv: list[str], scratch: Path) -> list[str]:
    """`argv`, wrapped (if needed) so that `user` can run this interpreter from it;
    `scratch` is a directory of the test's for the mount point."""
    if not _hidden_root(user):
        return argv
    keep = tempfile.mkdtemp(prefix="root-", dir=scratch)
    top = "/root/" + Path(sys.prefix).relative_to("/root").parts[0]
    script = (f"mount --bind {top} {keep} && mount -t tmpfs -o mode=0711 tmpfs /root && "
              f"mkdir -p {top} && mount --bind {keep} {top} && exec \"$@\"")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]


def need_runnable(user: str, scratch: Path) -> None:
    """Skip unless `user` can import this checkout's unbroken with this interpreter (a
    checkout under a home directory others may not enter cannot be run as another user)."""
    argv = traversable(user, ["runuser", "-u", user, "--", sys.executable, "-c",
                              "import unbroken"], scratch)
    ran = subprocess.run(argv, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(SRC)})
    if ran.returncode != 0:
        pytest.skip(f"{user} cannot run {sys.executable} with {SRC}: {ran.stderr[-300:]}")


def unbroken_wrapper(directory: Path) -> Path:
    """An `unbroken` executable that runs this checkout's code with this interpreter,
    whatever the environment (sudo resets PYTHONPATH): the docs' `venv/bin/unbroken`."""
    path = directory / "unbroken"
    path.write_text(f"#!/bin/sh\nPYTHONPATH={SRC} exec {sys.executable} -m unbroken \"$@\"\n")
    path.chmod(0o755)
    return path


def open_directory(prefix: str) -> Path:
    """A fresh directory under /tmp that other users may enter (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path
