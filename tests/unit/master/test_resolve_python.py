"""The worker interpreter is resolved per generation, folder only (a venv's python is a
symlink to the base interpreter, which must not be followed)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from unbroken.master.pool import resolve_python


def test_default_is_the_masters_interpreter(tmp_path: Path) -> None:
    assert resolve_python(None, str(tmp_path)) == sys.executable


def test_relative_to_the_generation_directory_and_the_venv_link_kept(tmp_path: Path) -> None:
    release = tmp_path / "releases" / "r1"
    (release / ".venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, release / ".venv" / "bin" / "python")
    os.symlink("releases/r1", tmp_path / "current")
    resolved = resolve_python("current/.venv/bin/python", str(tmp_path))
    assert resolved == str(release / ".venv" / "bin" / "python")
    assert resolve_python(".venv/bin/python", str(release)) == resolved


def test_absolute_path_has_its_folder_resolved(tmp_path: Path) -> None:
    (tmp_path / "releases" / "r2" / "bin").mkdir(parents=True)
    os.symlink("releases/r2", tmp_path / "current")
    assert resolve_python(str(tmp_path / "current" / "bin" / "python"), "/") == str(
        tmp_path / "releases" / "r2" / "bin" / "python")
