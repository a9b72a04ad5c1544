"""The release made locally: lock files, pinning, the wheel of this unbroken."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from unbroken.deploy.config import parse_deploy_config
from unbroken.deploy.errors import DeployError, reason_of
from unbroken.deploy.source import build_release, build_wheel, check_pinned, lock_kind


def _tar(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_the_lock_file_is_found_in_order() -> None:
    assert lock_kind(_tar({"uv.lock": "", "pyproject.toml": "", "requirements.txt": ""})) \
        == "uv.lock"
    assert lock_kind(_tar({"pylock.toml": ""})) == "pylock.toml"
    assert lock_kind(_tar({"requirements.txt": "flask==3.0.0\n"})) == "requirements.txt"


def test_no_lock_file_and_uv_lock_alone_are_refused() -> None:
    with pytest.raises(DeployError, match="no lock file in the release"):
        lock_kind(_tar({"app.py": ""}))
    with pytest.raises(DeployError, match=r"uv\.lock but no pyproject\.toml"):
        lock_kind(_tar({"uv.lock": ""}))


def test_requirements_must_be_pinned() -> None:
    check_pinned("# comment\n-r base.txt\nflask==3.0.0 \\\n    --hash=sha256:abc\n"
                 "pkg @ https://example.invalid/pkg.whl\n\n")
    with pytest.raises(DeployError, match=r"line 2 is not pinned \('requests>=2'\)"):
        check_pinned("flask==3.0.0\nrequests>=2\n")


def test_a_release_from_git_refuses_a_dirty_tree(tmp_path: Path) -> None:
    def git(*arguments: str) -> None:
        subprocess.run(["git", *arguments], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    git("config", "user.email", "t@t")
    git("config", "user.name", "t")
    (tmp_path / "requirements.txt").write_text("six==1.16.0\n")
    git("add", ".")
    git("commit", "-qm", "one")
    config = parse_deploy_config({"app": "a", "deploy_to": "/d", "serve": "a:b",
                                  "hosts": {"web": ["h"]}}, tmp_path, "deploy.toml")
    release = build_release(config, None, allow_dirty=False)
    assert release.lock == "requirements.txt"
    assert release.manifest["commit"] and release.id.endswith(release.manifest["commit"][:8])
    (tmp_path / "requirements.txt").write_text("six==1.17.0\n")
    with pytest.raises(DeployError, match="uncommitted changes"):
        build_release(config, None, allow_dirty=False)
    assert build_release(config, None, allow_dirty=True).sha256 == release.sha256


def test_the_wheel_installs_and_runs(tmp_path: Path) -> None:
    wheel = build_wheel()
    assert wheel.name.startswith("unbroken-") and wheel.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(io.BytesIO(wheel.data)) as archive:
        names = archive.namelist()
    assert "unbroken/deploy/agent.py" in names
    assert not any("__pycache__" in name for name in names)
    assert build_wheel().sha256 == wheel.sha256  # same files, same wheel
    path = tmp_path / wheel.name
    path.write_bytes(wheel.data)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", "--target", str(target), str(path)], check=True,
                   timeout=120)
    ran = subprocess.run([sys.executable, "-c", "import unbroken.deploy.agent, sys; "
                          "print(unbroken.deploy.agent.__file__)"],
                         env={"PYTHONPATH": str(target)}, capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(str(target))


def test_the_reason_of_an_installer_failure_is_its_error_line() -> None:
    output = ("Using Python 3.11\nerror: Failed to fetch: https://pypi.org/simple/x/\n"
              "  cause: error sending request\n  cause: invalid peer certificate\n")
    assert reason_of(output, "?") == ("error: Failed to fetch: https://pypi.org/simple/x/ "
                                      "(invalid peer certificate)")
    assert reason_of("just this\nand that\n", "?") == "and that"
    assert reason_of("", "exit 2") == "exit 2"
