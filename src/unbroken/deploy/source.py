"""The release, made here before anything connects: an archive, its hash, its manifest,
which lock file it installs from, and the wheel of this unbroken that goes with it.

From git (`git archive REF`, refusing a dirty tree unless asked: what is deployed is
then exactly a commit) or from a folder. A release without a lock file, or with a
requirements.txt that pins nothing, is refused here, before any host is touched.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import io
import os
import re
import socket
import subprocess
import tarfile
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import unbroken
from unbroken.deploy.config import DeployConfig
from unbroken.deploy.errors import DeployError

LOCK_FILES = ("uv.lock", "pylock.toml", "requirements.txt")
UNPINNED = re.compile(r"^\s*(?!-|#)([A-Za-z0-9._\[\],-]+)\s*(;.*)?$")


@dataclass(frozen=True)
class Release:
    id: str
    archive: bytes
    sha256: str
    lock: str  # which lock file the hosts install from, or "none"
    manifest: dict[str, Any]


@dataclass(frozen=True)
class Wheel:
    name: str
    data: bytes
    sha256: str


def holder() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _git(root: Path, *arguments: str) -> str:
    try:
        finished = subprocess.run(["git", *arguments], cwd=root, capture_output=True,
                                  timeout=120)
    except FileNotFoundError:
        raise DeployError("git is not installed (or set source to a folder)") from None
    if finished.returncode != 0:
        message = finished.stderr.decode(errors="replace").strip().splitlines()
        raise DeployError(f"git {arguments[0]}: {message[-1] if message else 'failed'}")
    return finished.stdout.decode(errors="replace")


def build_release(config: DeployConfig, ref: str | None, allow_dirty: bool) -> Release:
    if config.source == "git":
        archive, commit = _from_git(config.root, ref or "HEAD", allow_dirty and ref is None)
    else:
        if ref:
            raise DeployError(f"REF {ref!r} given, but source is the folder {config.source}")
        archive, commit = _from_folder(config.root / config.source), None
    lock = lock_kind(archive) if config.install == "auto" else "none"
    sha = hashlib.sha256(archive).hexdigest()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    release_id = f"{stamp}-{(commit or sha)[:8]}"
    manifest = {"id": release_id, "commit": commit, "ref": ref or ("HEAD" if commit else None),
                "sha256": sha, "lock": lock, "lock_sha256": _member_sha(archive, lock),
                "by": holder(), "at": time.time(), "unbroken": unbroken.__version__}
    return Release(release_id, archive, sha, lock, manifest)


def _from_git(root: Path, ref: str, allow_dirty: bool) -> tuple[bytes, str]:
    commit = _git(root, "rev-parse", "--verify", f"{ref}^{{commit}}").strip()
    if ref == "HEAD" and not allow_dirty:
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no").strip()
        if dirty:
            first = dirty.splitlines()[0].strip()
            raise DeployError(f"the work tree has uncommitted changes ({first}, …): commit "
                              "them, deploy a REF, or pass --allow-dirty to deploy HEAD anyway")
    prefix = os.path.relpath(root, _git(root, "rev-parse", "--show-toplevel").strip())
    arguments = ["archive", "--format=tar", commit]
    if prefix != ".":
        arguments.append(f"{prefix}/")
    finished = subprocess.run(["git", *arguments], cwd=root, capture_output=True, timeout=300)
    if finished.returncode != 0:
        raise DeployError(f"git archive: {finished.stderr.decode(errors='replace').strip()}")
    return _strip_prefix(finished.stdout, prefix) if prefix != "." else finished.stdout, commit


def _strip_prefix(archive: bytes, prefix: str) -> bytes:
    """`git archive` of a subfolder keeps its path; the release is the folder itself."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as source, \
            tarfile.open(fileobj=out, mode="w") as target:
        for member in source.getmembers():
            name = os.path.relpath(member.name, prefix)
            if name.startswith(".."):
                continue
            member.name = name
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
    return out.getvalue()


def _from_folder(folder: Path) -> bytes:
    if not folder.is_dir():
        raise DeployError(f"source folder {folder} does not exist")
    out = io.BytesIO()
    skip = {".git", ".venv", "__pycache__", ".mypy_cache", ".pytest_cache"}
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if skip & set(relative.parts):
                continue
            tar.add(path, arcname=str(relative), recursive=False)
    return out.getvalue()


def _members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name.removeprefix("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile() and "/" not in m.name.removeprefix("./")}


def _member_sha(archive: bytes, name: str) -> str | None:
    data = _members(archive).get(name)
    return hashlib.sha256(data).hexdigest() if data is not None else None


def lock_kind(archive: bytes) -> str:
    """Which lock file the release installs from; refuses a release that has none, or a
    requirements.txt with a requirement that is not pinned."""
    members = _members(archive)
    for name in LOCK_FILES:
        if name in members:
            if name == "uv.lock" and "pyproject.toml" not in members:
                raise DeployError("the release has uv.lock but no pyproject.toml beside it")
            if name == "requirements.txt":
                check_pinned(members[name].decode(errors="replace"))
            return name
    raise DeployError("no lock file in the release (uv.lock, pylock.toml or a pinned "
                      'requirements.txt); set install = "none" for an app with no dependencies')


def check_pinned(text: str) -> None:
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.split(" #")[0].strip()
        if not stripped or stripped.startswith(("#", "-", "--")):
            continue
        if "==" not in stripped and " @ " not in stripped:
            raise DeployError(f"requirements.txt line {number} is not pinned ({stripped!r}): "
                              "pin every requirement (uv pip compile) so hosts install the "
                              "same versions")


def build_wheel() -> Wheel:
    """A wheel of the unbroken running here, built from its installed files: each host and
    each release's venv gets exactly this version, editable installs included."""
    package = Path(unbroken.__file__).parent
    version = unbroken.__version__
    dist = f"unbroken-{version}.dist-info"
    files: dict[str, bytes] = {}
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files[f"unbroken/{path.relative_to(package)}"] = path.read_bytes()
    requires = _requirements()
    files[f"{dist}/METADATA"] = (
        "Metadata-Version: 2.1\nName: unbroken\n"
        f"Version: {version}\nRequires-Python: >=3.11\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode()
    files[f"{dist}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: unbroken-deploy\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    files[f"{dist}/entry_points.txt"] = (b"[console_scripts]\n"
                                         b"unbroken = unbroken.cli.main:main\n")
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in files.items()]
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    data = out.getvalue()
    return Wheel(f"unbroken-{version}-py3-none-any.whl", data, hashlib.sha256(data).hexdigest())


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _requirements() -> list[str]:
    """The core dependencies only: a host needs neither the test nor the deploy extras."""
    try:
        requires = metadata.requires("unbroken") or []
    except metadata.PackageNotFoundError:
        return ["httptools>=0.6.4", "rich>=13"]
    return [r for r in requires if "extra ==" not in r]
