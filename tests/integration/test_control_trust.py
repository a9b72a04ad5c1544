"""Only the service's owner can stand behind its control socket (issue 12, item 5).

Real processes and real uids: the other user is 65534 (nobody), made with setpriv,
as an attacker on the same machine would be.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from unbroken.control.protocol import VERSION

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv to act as another uid")
NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]


@pytest.fixture
def world() -> Iterator[Path]:
    """A folder like /tmp: anyone may create things in it (sticky, 1777)."""
    path = Path(tempfile.mkdtemp(prefix="unbroken-trust-", dir="/tmp"))
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _serve(control: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "app.py").write_text("def app(environ, start_response):\n    return []\n")
    return subprocess.run([sys.executable, "-m", "unbroken", "serve", "app:app", "--chdir",
                           str(tmp_path), "-b", "127.0.0.1:0", "--control", str(control)],
                          capture_output=True, text=True, timeout=60)


@needs_root
def test_a_control_directory_made_first_by_another_user_is_refused(
        tmp_path: Path, world: Path) -> None:
    shared = world / "unbroken-0"
    subprocess.run([*NOBODY, "mkdir", "-m", "0777", str(shared)], check=True, timeout=10)
    ran = _serve(shared / "shop.sock", tmp_path)
    assert ran.returncode == 2
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    assert lines[0] == (
        f"unbroken: control directory {shared} belongs to uid 65534 (nobody) with mode "
        "0777; it must be uid 0 (root)'s and not writable by others: remove it (or chmod "
        "go-w it if it is yours), or pass --control in a directory of yours")
    assert os.listdir(shared) == []  # nothing was bound there


@needs_root
def test_our_own_directory_writable_by_others_is_refused_too(tmp_path: Path) -> None:
    open_dir = tmp_path / "ctl"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    ran = _serve(open_dir / "shop.sock", tmp_path)
    assert ran.returncode == 2
    assert "with mode 0777" in ran.stderr


@pytest.mark.parametrize("kind", ["regular file", "symbolic link"])
def test_a_non_socket_at_the_control_path_is_named_as_such(tmp_path: Path, kind: str) -> None:
    control = tmp_path / "ctl" / "shop.sock"
    control.parent.mkdir(mode=0o700)
    if kind == "regular file":
        control.write_text("")
    else:
        control.symlink_to(tmp_path / "elsewhere")
    ran = _serve(control, tmp_path)
    assert ran.returncode == 2
    assert ran.stderr.strip() == f"unbroken: control socket {control} is a {kind}, not a " \
        "socket: remove it"


IMPOSTOR = textwrap.dedent('''\
    import json, os, socket, sys
    path = sys.argv[1]
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    open(path + ".ready", "w").close()
    connection, _ = listener.accept()
    connection.recv(65536)
    connection.sendall(json.dumps({{"v": {version}, "kind": "result", "ok": True,
                                   "message": "generation 99 serving", "data": {{}}}}
                                  ).encode() + b"\\n")
    connection.close()
    ''')


@needs_root
def test_a_reply_from_a_socket_of_another_uid_is_refused(world: Path) -> None:
    """The hijack of issue 12: someone else's socket in place of the service's. Its
    "ok" must not become root's exit 0."""
    theirs = world / "theirs"
    subprocess.run([*NOBODY, "mkdir", "-m", "0700", str(theirs)], check=True, timeout=10)
    script = world / "impostor.py"
    script.write_text(IMPOSTOR.format(version=VERSION))
    control = theirs / "shop.sock"
    impostor = subprocess.Popen([*NOBODY, sys.executable, "-I", str(script), str(control)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not Path(f"{control}.ready").exists():
            assert time.monotonic() < deadline and impostor.poll() is None, \
                impostor.stderr.read() if impostor.stderr else ""
            time.sleep(0.05)
        ran = subprocess.run([sys.executable, "-m", "unbroken", "reload", "--control",
                              str(control)], capture_output=True, text=True, timeout=60)
    finally:
        impostor.kill()
        impostor.communicate(timeout=10)
    assert ran.returncode == 1
    assert "ok" not in ran.stdout
    assert ran.stderr.strip() == (
        f"unbroken: refusing {control}: it is served by uid 65534 (nobody), not by you or "
        "root; run the command as that user (sudo -u USER unbroken ...)")
