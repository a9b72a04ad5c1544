"""--user/--group: a real child process really runs as the user, without root's groups."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from unbroken.config import ConfigError, load_config
from unbroken.master.pool import Generation, _popen

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


@needs_root
def test_worker_process_drops_to_the_user_and_its_groups_only() -> None:
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o777)
        generation = Generation(1, directory, 0.0, user="nobody")
        process = _popen(["/bin/sh", "-c", "id -u > ids; id -g >> ids; id -G >> ids; "
                          "echo $HOME >> ids"], generation, {}, ())
        assert process.wait(10) == 0
        uid, gid, groups, home = (Path(directory) / "ids").read_text().split("\n")[:4]
    assert (uid, gid, groups) == ("65534", "65534", "65534")
    assert home == "/nonexistent"


def test_identity_mistakes_are_one_line() -> None:
    with pytest.raises(ConfigError, match=r"no such user or group: .*nosuchuser"):
        load_config({"app": "a:b", "user": "nosuchuser"}, {})
    with pytest.raises(ConfigError, match="--user/--group with --cmd"):
        load_config({"cmd": "./server", "user": "nobody"}, {})


def test_umask_flag_is_octal() -> None:
    result = subprocess.run([sys.executable, "-m", "unbroken", "serve", "a:b", "--umask", "9"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "is not an octal mode" in result.stderr


def test_an_exit_is_described_with_the_worker_contracts_name_for_its_code() -> None:
    from unbroken.master.pool import describe_exit

    assert describe_exit(4, ours=True) == "exit code 4: the app failed to load"
    assert describe_exit(4, ours=False) == "exit code 4"  # a --cmd program's own codes
    assert describe_exit(1, ours=True) == "exit code 1"
    assert describe_exit(0, ours=True) == "exit code 0"
    assert describe_exit(-9, ours=True) == "killed by SIGKILL"
    assert describe_exit(None, ours=True) == "running"
