"""A small app project in a git repository, with a deploy.toml for the SSH lab's hosts.

Each commit is a release whose app answers `<version> six=<six version>`, so a test
can tell which release, and which pinned library, served each request. The knobs a
release can carry are the failures a deploy must catch: an import error on the one
host whose shared `.env` says so, a crash a moment after Ready on such a host, a
requirements.txt that cannot be satisfied.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sshlab import SSHLab

APP_PORT = 18000
SERVE_FLAGS = "--keep-alive 5 --graceful-timeout 10"
APP = '''\
import os
import sys
import threading
import time

import six

VERSION = {version!r}
ENV = open(".env").read() if os.path.exists(".env") else ""
if {fail_import!r} and "BREAK_HERE=1" in ENV:
    raise ImportError("release {version} cannot import on this host (BREAK_HERE=1)")
# a serving worker (python -m unbroken.worker), not `unbroken check`'s throwaway one
if {crash_after!r} and "BREAK_HERE=1" in ENV and sys.argv[0].endswith("__main__.py"):
    def _crash():
        time.sleep({crash_after!r})
        os._exit(1)
    threading.Thread(target=_crash, daemon=True).start()
time.sleep({import_delay!r})


def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(2)
    body = ("%s six=%s\\n" % (VERSION, six.__version__)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


@dataclass
class Ran:
    """One `unbroken deploy` command: its exit code, output and wall time."""

    code: int
    stdout: str
    stderr: str
    seconds: float

    def events(self) -> list[dict[str, Any]]:
        """The `--json` events, one per stdout line."""
        events = []
        for line in self.stdout.splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    events.append(json.loads(line))
        return events

    def summary(self) -> dict[str, Any]:
        events = self.events()
        return events[-1] if events and events[-1].get("event") == "summary" else {}


def uv() -> list[str]:
    """The uv of the deploy extra, as the tests' own tool."""
    from uv import find_uv_bin

    return [find_uv_bin()]


class Project:
    """A git repository in `root/project` whose commits are the releases."""

    def __init__(self, root: Path, lab: SSHLab, **deploy: str) -> None:
        self.root = root / "project"
        self.root.mkdir(parents=True)
        self.lab = lab
        self._git("init", "-q", "-b", "main")
        self._git("config", "user.email", "deploy@test")
        self._git("config", "user.name", "deploy test")
        self.write_config(**deploy)
        for host in lab.hosts:
            # The host's own uv settings: this machine reaches the package index through
            # a CA that is in the system store only (root gets SSL_CERT_FILE).
            self.uv_config(host.index, "native-tls = true\n")

    def uv_config(self, i: int, text: str) -> None:
        home = self.lab.host(i).home
        self.lab.run_as(i, ["mkdir", "-p", f"{home}/.config/uv"])
        self.lab.run_as(i, ["sh", "-c", f"cat > {home}/.config/uv/uv.toml"], input=text)

    def _git(self, *arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=self.root, check=True,
                              capture_output=True, text=True, timeout=60).stdout

    def write_config(self, batches: str = '[1, "50%"]', soak: str = "2",
                     extra: str = "", max_fail: int = 0) -> None:
        hosts = ", ".join(f'"{h.alias}"' for h in self.lab.hosts)
        (self.root / "deploy.toml").write_text(textwrap.dedent(f"""\
            app = "shop"
            deploy_to = "~/shop"
            serve = "app:app -b {{host}}:{APP_PORT} -w 2 --health-path /healthz {SERVE_FLAGS}"
            python = "/usr/bin/python3"
            keep_releases = 3
            linked_files = [".env"]

            [hosts]
            web = [{hosts}]

            [ssh]
            config = "{self.lab.ssh_config}"
            known_hosts = "{self.lab.known_hosts}"
            connect_timeout = 3
            keepalive_interval = 1
            keepalive_count = 3
            step_timeout = 120

            [rollout]
            batches = {batches}
            max_fail = {max_fail}
            confirm_timeout = 20
            soak = {soak}

            [lock]
            ttl = 10

            [health]
            path = "/healthz"
            host = "shop.example.com"
            """) + extra)
        self._git("add", "deploy.toml")

    def commit(self, version: str, *, six: str = "1.16.0", fail_import: bool = False,
               crash_after: float = 0.0, import_delay: float = 0.0,
               requirements: str | None = None) -> str:
        (self.root / "app.py").write_text(APP.format(
            version=version, fail_import=fail_import, crash_after=crash_after,
            import_delay=import_delay))
        (self.root / "requirements.txt").write_text(requirements or f"six=={six}\n")
        self._git("add", "app.py", "requirements.txt")
        self._git("commit", "-q", "--allow-empty", "-m", version)
        return self._git("rev-parse", "HEAD").strip()

    def use_uv_lock(self, version: str, dependencies: list[str], *, lock: bool = True) -> str:
        """Make the release a uv project: pyproject.toml, and uv.lock from `uv lock` run
        here (lock=False leaves the previous uv.lock: stale when the pins changed)."""
        deps = ", ".join(f'"{d}"' for d in dependencies)
        (self.root / "pyproject.toml").write_text(
            f'[project]\nname = "shop"\nversion = "0"\nrequires-python = ">=3.11"\n'
            f"dependencies = [{deps}]\n")
        if lock:
            subprocess.run([*uv(), "lock", "--quiet"], cwd=self.root, check=True,
                           timeout=120)
        self._git("add", "pyproject.toml", "uv.lock")
        (self.root / "app.py").write_text(APP.format(version=version, fail_import=False,
                                                      crash_after=0.0, import_delay=0.0))
        self._git("add", "app.py")
        self._git("commit", "-q", "-m", version)
        return self._git("rev-parse", "HEAD").strip()

    def drop_uv_lock(self) -> None:
        self._git("rm", "-q", "pyproject.toml", "uv.lock")

    def tag(self, name: str) -> None:
        self._git("tag", name)

    def shared_env(self, i: int, text: str) -> None:
        """Write host i's `shared/.env` as its owner would (linked into every release)."""
        host = self.lab.host(i)
        self.lab.run_as(i, ["mkdir", "-p", f"{host.home}/shop/shared"])
        self.lab.run_as(i, ["sh", "-c", f"printf '%s' '{text}' > {host.home}/shop/shared/.env"])
