"""Preparing a release on a host: unpack, link shared files, install its locked
dependencies into its own venv with uv, run the build hook, then write the manifest.

Traffic is not touched. The manifest is written last, so a prepare cut off anywhere
leaves a folder without one, which nothing ever serves and the next prepare removes.
Each release gets its own `.venv`, built in its final place (a venv records absolute
paths), from uv's cache on the same filesystem, so its files are hard links and a
second venv costs little disk, and a rollback needs no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from typing import TYPE_CHECKING, Any

from unbroken.deploy.errors import reason_of
from unbroken.deploy.hostfiles import AgentError, write_json
from unbroken.deploy.layout import Layout, link_target

if TYPE_CHECKING:
    from collections.abc import Sequence


def upload_path(layout: Layout, release_id: str) -> str:
    return os.path.join(layout.uploads, f"{release_id}.tar")


def remove_upload(layout: Layout, release_id: str) -> None:
    for path in (upload_path(layout, release_id), upload_path(layout, release_id) + ".partial"):
        if release_id and os.path.exists(path):
            os.unlink(path)


def release_environment(layout: Layout, release_id: str,
                        extra: dict[str, str] | None = None) -> dict[str, str]:
    """What a hook or a check runs with: the release's venv first on PATH, uv's cache."""
    venv = os.path.join(layout.release(release_id), ".venv")
    return {**os.environ, "VIRTUAL_ENV": venv,
            "PATH": f"{venv}/bin:{os.path.dirname(layout.uv)}:{os.environ.get('PATH', '')}",
            "UV_CACHE_DIR": layout.uv_cache, "UNBROKEN_RELEASE": release_id,
            "UNBROKEN_DEPLOY_TO": layout.deploy_to, **(extra or {})}


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _clean_partials(layout: Layout) -> None:
    """Folders without a manifest are what a killed prepare left: never used, removed."""
    if not os.path.isdir(layout.releases):
        return
    serving = {link_target(layout.current), link_target(layout.previous)}
    for name in os.listdir(layout.releases):
        path = layout.release(name)
        if name not in serving and not os.path.exists(layout.manifest(name)):
            shutil.rmtree(path, ignore_errors=True)


def prepare(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    release_id = args["release"]
    started = time.monotonic()
    if os.path.exists(layout.manifest(release_id)):
        return {"already": True, "seconds": 0.0}
    _clean_partials(layout)
    archive = upload_path(layout, release_id)
    if not os.path.exists(archive):
        raise AgentError(f"upload {archive} is missing")
    actual = _sha256(archive)
    if actual != args["sha256"]:
        raise AgentError(f"upload corrupted: sha256 {actual[:12]}…, "
                           f"expected {args['sha256'][:12]}…")
    directory = layout.release(release_id)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    _extract(archive, directory)
    _link_shared(layout, directory, args.get("linked_files", []), args.get("linked_dirs", []))
    unpacked = time.monotonic()
    installed = _install(layout, directory, args)
    install_seconds = time.monotonic() - unpacked
    if args.get("build"):
        run_hook(layout, release_id, "build", args["build"], args.get("env", {}),
                 float(args.get("timeout", 600)))
    manifest = {**args["manifest"], "prepared_at": time.time(),
                "install": installed, "install_seconds": round(install_seconds, 2)}
    write_json(layout.manifest(release_id), manifest)
    return {"seconds": round(time.monotonic() - started, 2),
            "install_seconds": round(install_seconds, 2), "install": installed}


def _extract(archive: str, directory: str) -> None:
    """Unpack with the `data` filter's rules (no absolute paths, nothing outside the
    folder, no devices); Python before 3.11.4 has no filter, so check by hand there."""
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(directory, filter="data")
            return
        root = os.path.realpath(directory)
        for member in tar.getmembers():
            target = os.path.realpath(os.path.join(root, member.name))
            linked = os.path.realpath(os.path.join(os.path.dirname(target), member.linkname)) \
                if member.issym() or member.islnk() else target
            if not (member.isfile() or member.isdir() or member.issym() or member.islnk()) \
                    or os.path.commonpath([root, target]) != root \
                    or os.path.commonpath([root, linked]) != root:
                raise AgentError(f"the release archive has an unsafe member: {member.name}")
        tar.extractall(directory)  # every member checked above


def _link_shared(layout: Layout, directory: str, files: Sequence[str],
                 dirs: Sequence[str]) -> None:
    missing = [name for name in files if not os.path.exists(os.path.join(layout.shared, name))]
    if missing:
        raise AgentError(f"linked file(s) missing from {layout.shared}: {', '.join(missing)}")
    for name in [*files, *dirs]:
        shared = os.path.join(layout.shared, name)
        if name in dirs:
            os.makedirs(shared, exist_ok=True)
        target = os.path.join(directory, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.unlink(target)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(os.path.relpath(shared, os.path.dirname(target)), target)


def _uv(layout: Layout, arguments: list[str], directory: str, timeout: float,
        extra: dict[str, str] | None = None) -> str:
    environment = {**os.environ, "UV_CACHE_DIR": layout.uv_cache, "UV_LINK_MODE": "hardlink",
                   "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1", **(extra or {})}
    uv = layout.uv if os.path.exists(layout.uv) else shutil.which("uv") or "uv"
    try:
        finished = subprocess.run([uv, *arguments], cwd=directory, env=environment,
                                  capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AgentError(f"uv {arguments[0]} did not finish within {timeout:g}s") from None
    except FileNotFoundError:
        raise AgentError("uv not found on the host (run `unbroken deploy setup`)") from None
    if finished.returncode != 0:
        output = finished.stderr.strip() or finished.stdout.strip()
        reason = reason_of(output, f"exit status {finished.returncode}")
        raise AgentError(f"install failed: {reason}", output)
    return finished.stderr


def _install(layout: Layout, directory: str, args: dict[str, Any]) -> str:
    """The release's own venv: its lock file, then this unbroken (the app's lock need not
    name it), so each generation serves with exactly the packages its release pinned."""
    timeout = float(args.get("timeout", 600))
    venv = os.path.join(directory, ".venv")
    python = os.path.join(venv, "bin", "python")
    kind = str(args.get("lock", "none"))
    if kind == "uv.lock":
        _uv(layout, ["sync", "--locked", "--no-install-project", "--no-dev",
                     "--python", args["python"]], directory, timeout,
            {"UV_PROJECT_ENVIRONMENT": venv})
    else:
        _uv(layout, ["venv", "--python", args["python"], venv], directory, timeout)
        if kind in ("pylock.toml", "requirements.txt"):
            _uv(layout, ["pip", "sync", "--python", python, kind], directory, timeout)
    _uv(layout, ["pip", "install", "--python", python, args["wheel"]], directory, timeout)
    return kind


def run_hook(layout: Layout, release_id: str, name: str, command: str, env: dict[str, str],
             timeout: float) -> dict[str, Any]:
    started = time.monotonic()
    try:
        finished = subprocess.run(["/bin/sh", "-c", command], cwd=layout.release(release_id),
                                  env=release_environment(layout, release_id, env),
                                  capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AgentError(f"{name} hook did not finish within {timeout:g}s") from None
    output = (finished.stdout + finished.stderr).strip()
    if finished.returncode != 0:
        raise AgentError(f"{name} hook failed with exit status {finished.returncode}",
                           output)
    return {"seconds": round(time.monotonic() - started, 2), "output": output[-2000:]}


def prune(layout: Layout, keep_releases: int, keep: Sequence[str]) -> list[str]:
    """Remove complete releases beyond the newest `keep_releases`; never current,
    previous, or what this deploy names."""
    if not os.path.isdir(layout.releases):
        return []
    protected = {link_target(layout.current), link_target(layout.previous), *keep}
    complete = []
    for name in os.listdir(layout.releases):
        try:
            with open(layout.manifest(name)) as handle:
                prepared = float(json.load(handle).get("prepared_at", 0))
        except (OSError, ValueError):
            continue
        complete.append((prepared, name))
    complete.sort(reverse=True)
    pruned = [name for _, name in complete[keep_releases:] if name not in protected]
    for name in pruned:
        shutil.rmtree(layout.release(name), ignore_errors=True)
    return pruned
