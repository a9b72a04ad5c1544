"""The directory and path checks of control/trust.py, on real folders."""

from __future__ import annotations

import os
from pathlib import Path

from unbroken.control.trust import directory_problem, path_problem


def test_our_private_directory_is_fine(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o700)
    assert directory_problem(str(tmp_path), os.geteuid()) is None
    os.chmod(tmp_path, 0o755)  # others may read and enter, not write
    assert directory_problem(str(tmp_path), os.geteuid()) is None


def test_group_or_world_writable_or_someone_elses_is_refused(tmp_path: Path) -> None:
    for mode in (0o770, 0o703, 0o1777):
        os.chmod(tmp_path, mode)
        problem = directory_problem(str(tmp_path), os.geteuid())
        assert problem is not None and f"mode {mode & 0o7777:04o}" in problem
    os.chmod(tmp_path, 0o700)
    assert "belongs to uid" in str(directory_problem(str(tmp_path), os.geteuid() + 1))


def test_a_symlinked_directory_and_odd_paths(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert "symbolic link" in str(directory_problem(str(tmp_path / "link"), os.geteuid()))
    assert "does not exist" in str(directory_problem(str(tmp_path / "nope"), os.geteuid()))
    assert path_problem(str(tmp_path / "free.sock")) is None
    (tmp_path / "file.sock").write_text("")
    assert "regular file" in str(path_problem(str(tmp_path / "file.sock")))
