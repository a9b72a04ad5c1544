"""Where everything lives on a host, in one place.

    <deploy_to>/releases/<id>/        immutable once RELEASE.json is written (written last,
                                      so a folder without it is a partial and never used)
    <deploy_to>/current  -> releases/<id>   switched with symlink + rename(2)
    <deploy_to>/previous -> releases/<id>
    <deploy_to>/shared/               files linked into every release (.env)
    <deploy_to>/run/<app>.sock        the master's control socket
    <deploy_to>/cache/uv              uv's cache: same filesystem, so installs hard-link
    <deploy_to>/.unbroken/            the host's own unbroken (venv/), uv (bin/), the lease,
                                      the journal of each deploy, history.jsonl, logs

The master runs from `.unbroken/venv`, never from inside a release, so pruning a
release can never strand it (the Zulip lesson in ../shared/DEPLOY.md §2.1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MANIFEST = "RELEASE.json"


@dataclass(frozen=True)
class Layout:
    deploy_to: str
    app: str

    def _at(self, *parts: str) -> str:
        return os.path.join(self.deploy_to, *parts)

    @property
    def releases(self) -> str:
        return self._at("releases")

    def release(self, release_id: str) -> str:
        return self._at("releases", release_id)

    def manifest(self, release_id: str) -> str:
        return self._at("releases", release_id, MANIFEST)

    def venv_python(self, release_id: str) -> str:
        return self._at("releases", release_id, ".venv", "bin", "python")

    @property
    def current(self) -> str:
        return self._at("current")

    @property
    def previous(self) -> str:
        return self._at("previous")

    @property
    def shared(self) -> str:
        return self._at("shared")

    @property
    def run(self) -> str:
        return self._at("run")

    @property
    def control(self) -> str:
        return self._at("run", f"{self.app}.sock")

    @property
    def uv_cache(self) -> str:
        return self._at("cache", "uv")

    @property
    def state(self) -> str:
        return self._at(".unbroken")

    @property
    def tool_venv(self) -> str:
        return self._at(".unbroken", "venv")

    @property
    def tool_python(self) -> str:
        return self._at(".unbroken", "venv", "bin", "python")

    @property
    def uv(self) -> str:
        return self._at(".unbroken", "bin", "uv")

    @property
    def uploads(self) -> str:
        return self._at(".unbroken", "uploads")

    def wheel_dir(self, digest: str) -> str:
        return self._at(".unbroken", "wheels", digest[:16])

    @property
    def lease(self) -> str:
        return self._at(".unbroken", "lease.json")

    @property
    def host_lock(self) -> str:
        return self._at(".unbroken", "host.lock")

    def journal(self, deploy_id: str) -> str:
        return self._at(".unbroken", "journal", f"{deploy_id}.json")

    @property
    def history(self) -> str:
        return self._at(".unbroken", "history.jsonl")

    @property
    def logs(self) -> str:
        return self._at(".unbroken", "logs")

    def all_dirs(self) -> list[str]:
        return [self.releases, self.shared, self.run, self.uv_cache, self.uploads, self.logs,
                os.path.dirname(self.journal("x")), os.path.dirname(self.uv),
                os.path.dirname(self.wheel_dir("x"))]


def link_target(path: str) -> str | None:
    """The release id a `current`/`previous` link names, or None."""
    try:
        return os.path.basename(os.readlink(path).rstrip("/"))
    except OSError:
        return None


def point(link: str, release_id: str) -> None:
    """Switch `link` to `releases/<id>` atomically: a new symlink renamed over the old one
    (`ln -sfn` unlinks first, leaving a moment with no `current`)."""
    temporary = f"{link}.{os.getpid()}.tmp"
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(os.path.join("releases", release_id), temporary)
    os.replace(temporary, link)


def unpoint(link: str) -> None:
    if os.path.lexists(link):
        os.unlink(link)
