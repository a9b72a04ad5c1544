"""--python: each generation runs with its own release's interpreter and packages.

Two releases, each with a venv of its own holding a different version of one
library; `--python .venv/bin/python` (relative to `--chdir current`) must follow the
symlink at the reload, as `--chdir` does, so the new release serves with its version.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from release import point_current, write_release

APP = '''\
import sys
import pinned


def app(environ, start_response):
    body = ("%s %s" % (pinned.VERSION, sys.prefix)).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


def _release_with_venv(root: Path, version: str, library_version: str) -> Path:
    directory = write_release(root, version)
    (directory / "app.py").write_text(APP)
    venv = directory / ".venv"
    # --system-site-packages: the venv sees the unbroken under test, as the deploy's
    # own install step would put it there.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(venv)], check=True, timeout=60)
    site = next((venv / "lib").glob("python3.*/site-packages"))
    (site / "pinned.py").write_text(f"VERSION = {library_version!r}\n")
    return directory


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return str(response.read().decode())


def test_each_generation_runs_its_own_release_interpreter(
        releases: Path, service_factory: Any) -> None:
    one = _release_with_venv(releases, "p1", "1.0")
    two = _release_with_venv(releases, "p2", "2.0")
    point_current(releases, "p1")
    service = service_factory("--python", ".venv/bin/python")
    state = service.wait_serving()
    assert state["generations"][str(state["generation"])]["python"] == str(
        one / ".venv" / "bin" / "python")
    assert _get(service.port) == f"1.0 {one / '.venv'}"

    point_current(releases, "p2")
    reply = service.reload()
    assert reply.ok, reply.message
    state = service.status()
    generation = state["generations"][str(state["generation"])]
    assert generation == {"directory": str(two),
                          "python": str(two / ".venv" / "bin" / "python")}
    assert _get(service.port) == f"2.0 {two / '.venv'}"


def test_check_uses_the_interpreter_given(releases: Path) -> None:
    _release_with_venv(releases, "p1", "1.0")
    point_current(releases, "p1")
    ok = subprocess.run([sys.executable, "-m", "unbroken", "check", "app:app", "--chdir",
                         str(releases / "current"), "--python", ".venv/bin/python"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run([sys.executable, "-m", "unbroken", "check", "app:app", "--chdir",
                              str(releases / "current"), "--python", "nope/bin/python"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2
    assert "--python" in missing.stderr and "nope/bin/python" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
