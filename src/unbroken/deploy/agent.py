"""The host side of a deploy: `python -m unbroken.deploy.agent OP` with JSON on stdin.

The orchestrator never types shell into a host; it calls these few operations, each
an idempotent step that answers one JSON object on its last stdout line (`ok`, and
`error` + `details` when not). They run from the host's own unbroken install
(`.unbroken/venv`), never from a release. State changes (switching `current`, rolling
back) happen under a host flock and are written to a journal first, so a step cut off
halfway by a dropped link is finished or undone by the next one, or by the watchdog.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from unbroken import __version__
from unbroken.deploy import install, service, switch
from unbroken.deploy.hostfiles import (
    AgentError,
    append_history,
    host_lock,
    keep_lease,
    read_json,
    write_json,
)
from unbroken.deploy.layout import Layout, link_target
from unbroken.deploy.lease import Decision, Lease, decide

Operation = Callable[[Layout, dict[str, Any]], dict[str, Any]]


# -- information ---------------------------------------------------------------------

def op_info(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    """Everything pre-flight and `deploy status` need, in one round trip."""
    usage = shutil.disk_usage(layout.deploy_to if os.path.isdir(layout.deploy_to) else "/")
    lease = read_json(layout.lease)
    last = _last_history(layout)
    tool = read_json(os.path.join(layout.state, "tool.json")) or {}
    return {
        "version": __version__, "tool_wheel": tool.get("wheel"),
        "python": sys.version.split()[0], "disk_free": usage.free,
        "current": link_target(layout.current), "previous": link_target(layout.previous),
        "master": switch.master_summary(layout), "service": service.describe(layout),
        "lease": lease, "lease_age": round(time.time() - lease["heartbeat"], 1)
        if lease else None,
        "last": last, "wheels": _wheels(layout),
    }


def _wheels(layout: Layout) -> list[str]:
    directory = os.path.dirname(layout.wheel_dir("x"))
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def _last_history(layout: Layout) -> dict[str, Any] | None:
    try:
        with open(layout.history) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            return entry
    return None


def op_releases(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    current, previous = link_target(layout.current), link_target(layout.previous)
    entries = []
    for name in sorted(os.listdir(layout.releases)) if os.path.isdir(layout.releases) else []:
        manifest = read_json(layout.manifest(name))
        entries.append({"id": name, "complete": manifest is not None,
                        "current": name == current, "previous": name == previous,
                        "bytes": _disk_use(layout.release(name)),
                        "manifest": manifest})
    return {"releases": entries}


def _disk_use(path: str) -> int:
    """Bytes this release adds: files hard-linked from uv's cache count once per inode
    here too, which is what `du` shows for the folder alone."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total


# -- the lease ------------------------------------------------------------------------

def op_lock_acquire(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    now = time.time()
    with host_lock(layout):
        raw = read_json(layout.lease)
        existing = Lease.from_dict(raw) if raw else None
        decision = decide(existing, args["deploy_id"], now)
        if decision is Decision.TAKEN_OVER and existing and switch.unconfirmed(
                read_json(layout.journal(existing.deploy_id))):
            decision = Decision.HELD  # its host is half-switched: its watchdog undoes it
        if decision is Decision.HELD:
            assert existing is not None
            return {"held": True, "holder": {**existing.to_dict(),
                                             "heartbeat_age": existing.age(now)}}
        started = existing.started if decision is Decision.RENEWED and existing else now
        write_json(layout.lease, Lease(args["deploy_id"], args["holder"], started, now,
                                       float(args["ttl"])).to_dict())
        if decision is not Decision.RENEWED:
            switch.start_watchdog(layout, args["deploy_id"])
        if decision is Decision.TAKEN_OVER:
            assert existing is not None
            append_history(layout, {"event": "lock taken over", "deploy_id": args["deploy_id"],
                                    "from": existing.to_dict()})
        return {"held": False, "decision": decision.value,
                "previous_holder": existing.to_dict() if decision is Decision.TAKEN_OVER
                and existing else None}


def op_lock_renew(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    with host_lock(layout):
        raw = read_json(layout.lease)
        if not raw or raw.get("deploy_id") != args["deploy_id"]:
            raise AgentError(f"lease lost: now held by {raw.get('holder') if raw else 'nobody'}")
        raw["heartbeat"] = time.time()
        write_json(layout.lease, raw)
    return {}


def op_lock_release(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    with host_lock(layout):
        raw = read_json(layout.lease)
        if raw is None:
            return {"released": False}
        if not args.get("force") and raw.get("deploy_id") != args.get("deploy_id"):
            raise AgentError(f"held by {raw.get('holder')} (deploy {raw.get('deploy_id')}), "
                             "not by this deploy")
        os.unlink(layout.lease)
        if args.get("force"):
            append_history(layout, {"event": "lock released by hand", "lease": raw,
                                    "by": args.get("holder")})
    return {"released": True, "lease": raw}


def op_lock_diverged(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    keep_lease(layout, args["deploy_id"], args["reason"], args.get("holder", "?"))
    return {}


# -- preparing a release ----------------------------------------------------------------

def op_prepare(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    return install.prepare(layout, args)


def op_check(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    """`unbroken check` inside the release: its interpreter, the real serve settings."""
    release = layout.release(args["release"])
    if read_json(layout.manifest(args["release"])) is None:
        raise AgentError(f"release {args['release']} is not prepared on this host")
    command = [os.path.join(layout.tool_venv, "bin", "unbroken"), "check", *args["serve"],
               "--chdir", release, "--python", os.path.join(".venv", "bin", "python")]
    if args.get("health_path") and "--health-path" not in args["serve"]:
        command += ["--health-path", args["health_path"]]
    started = time.monotonic()
    try:
        finished = subprocess.run(command, cwd=release, capture_output=True, text=True,
                                  timeout=float(args.get("timeout", 300)),
                                  env=install.release_environment(layout, args["release"]))
    except subprocess.TimeoutExpired:
        raise AgentError("the release did not boot within the step deadline") from None
    if finished.returncode != 0:
        output = (finished.stderr + finished.stdout).strip()
        lines = output.splitlines()
        reason = next((line for line in reversed(lines) if "check failed" in line),
                      lines[-1] if lines else f"exit status {finished.returncode}")
        raise AgentError(reason.removeprefix("unbroken: "), output)
    return {"seconds": round(time.monotonic() - started, 2), "output": finished.stdout.strip()}


def op_hook(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    return install.run_hook(layout, args["release"], args["name"], args["command"],
                            args.get("env", {}), float(args.get("timeout", 600)))


def op_abort(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    """Undo a prepare that will not be used: the release folder and its upload go."""
    release_id = args["release"]
    removed = False
    if release_id not in (link_target(layout.current), link_target(layout.previous)):
        shutil.rmtree(layout.release(release_id), ignore_errors=True)
        removed = True
    install.remove_upload(layout, release_id)
    return {"removed": removed}


# -- switching ---------------------------------------------------------------------------

def op_activate(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    return switch.activate(layout, args)


def op_rollback(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    return switch.rollback(layout, args)


def op_confirm(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    return switch.confirm(layout, args)


def op_watchdog(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    return switch.watchdog(layout, args)


def op_finish(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    """History, pruning, the lease: the last step on every host of a finished deploy."""
    append_history(layout, {"event": "deploy", **args["result"]})
    pruned = install.prune(layout, int(args["keep_releases"]), args.get("keep", []))
    install.remove_upload(layout, args.get("release") or "")
    raw = read_json(layout.lease)
    if raw and raw.get("deploy_id") == args["deploy_id"] and not raw.get("diverged"):
        op_lock_release(layout, {"deploy_id": args["deploy_id"]})
    return {"pruned": pruned}


# -- host setup --------------------------------------------------------------------------

def op_setup(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    for directory in layout.all_dirs():
        os.makedirs(directory, exist_ok=True)
    os.chmod(layout.run, 0o700)
    write_json(os.path.join(layout.state, "tool.json"),
               {"wheel": args.get("wheel"), "version": __version__, "at": time.time()})
    return service.install(layout, args["serve"], args.get("manager", "auto"))


def op_start(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    return service.start(layout, float(args.get("timeout", 120)))


OPERATIONS: dict[str, Operation] = {
    "info": op_info, "releases": op_releases,
    "lock-acquire": op_lock_acquire, "lock-renew": op_lock_renew,
    "lock-release": op_lock_release, "lock-diverged": op_lock_diverged,
    "prepare": op_prepare, "check": op_check, "hook": op_hook, "abort": op_abort,
    "activate": op_activate, "rollback": op_rollback, "confirm": op_confirm,
    "watchdog": op_watchdog, "finish": op_finish, "setup": op_setup, "start": op_start,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = json.loads(os.environ.pop(switch.ARGUMENTS_ENV, "") or sys.stdin.read() or "{}")
        operation = OPERATIONS[argv[0]]
        layout = Layout(os.path.expanduser(args["deploy_to"]), args["app"])
        result = {"ok": True, **operation(layout, args)}
    except AgentError as error:
        result = {"ok": False, "error": str(error), "details": error.details}
    except (KeyError, IndexError, ValueError) as error:
        result = {"ok": False, "error": f"bad request to the host agent: {error!r}",
                  "details": traceback.format_exc()}
    except OSError as error:
        result = {"ok": False, "error": f"{error.strerror or error}"
                  f"{': ' + str(error.filename) if error.filename else ''}",
                  "details": traceback.format_exc()}
    except Exception as error:  # the orchestrator must get an answer, not a hang
        result = {"ok": False, "error": repr(error), "details": traceback.format_exc()}
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
