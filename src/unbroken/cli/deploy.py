"""`unbroken deploy …`: argv to the `unbroken.deploy` API and its exit code, nothing else."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from unbroken.errors import UsageError

SUBCOMMANDS = ("setup", "check", "rollback", "status", "releases", "lock")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "deploy", help="ship a release to one host or a fleet; roll back on any failure",
        description="unbroken deploy [REF] | setup | check | rollback [--to ID] | status | "
        "releases | lock status|release")
    parser.add_argument("target", nargs="?", metavar="REF|SUBCOMMAND",
                        help="git ref to deploy (default HEAD), or one of: "
                        + ", ".join(SUBCOMMANDS))
    parser.add_argument("action", nargs="?", metavar="ACTION",
                        help="for `lock`: status or release")
    parser.add_argument("--config", metavar="FILE",
                        help="deploy.toml (default: ./deploy.toml, else "
                        "[tool.unbroken.deploy] in ./pyproject.toml)")
    parser.add_argument("--hosts", metavar="A,B", default="",
                        help="only these hosts or groups (comma-separated)")
    parser.add_argument("--dry-run", action="store_true",
                        help="resolve, connect and pre-flight; change nothing")
    parser.add_argument("--lock-wait", type=float, default=0.0, metavar="SECS",
                        help="wait this long for another deploy's lock (default: exit 75)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per line on stdout, for CI")
    parser.add_argument("--to", metavar="ID", help="for `rollback`: the release to go to")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="deploy HEAD although the work tree has uncommitted changes")


def run(arguments: argparse.Namespace) -> int:
    try:
        import asyncssh  # noqa: F401
    except ImportError:
        print("unbroken: deploy needs the deploy extra: pip install 'unbroken[deploy]'",
              file=sys.stderr)
        return 1
    from unbroken import deploy as api
    from unbroken.deploy.errors import EXIT_USAGE, DeployError

    hosts = [h for h in arguments.hosts.split(",") if h]
    target = arguments.target
    try:
        if target not in SUBCOMMANDS:
            if arguments.action:
                raise UsageError(f"unexpected argument {arguments.action!r}")
            return api.deploy(arguments.config, target, hosts=hosts, dry_run=arguments.dry_run,
                              lock_wait=arguments.lock_wait, allow_dirty=arguments.allow_dirty,
                              json_output=arguments.json)
        if target == "setup":
            return api.setup(arguments.config, hosts=hosts, json_output=arguments.json)
        if target == "check":
            return api.check(arguments.config, hosts=hosts, json_output=arguments.json)
        if target == "rollback":
            return api.rollback(arguments.config, arguments.to, hosts=hosts,
                                lock_wait=arguments.lock_wait, json_output=arguments.json)
        if target == "status":
            return _status(api.status(arguments.config, hosts=hosts), arguments.json)
        if target == "releases":
            return _releases(api.releases(arguments.config, hosts=hosts), arguments.json)
        if arguments.action == "status":
            return _locks(api.status(arguments.config, hosts=hosts), arguments.json)
        if arguments.action == "release":
            return _released(api.lock_release(arguments.config, hosts=hosts), arguments.json)
        raise UsageError("deploy lock takes `status` or `release`")
    except UsageError as error:
        print(f"unbroken: deploy: {error}", file=sys.stderr)
        return EXIT_USAGE
    except DeployError as error:
        print(f"unbroken: deploy: {error}", file=sys.stderr)
        if error.details:
            print(error.details.rstrip(), file=sys.stderr)
        return error.exit_code


def _failed(rows: list[dict[str, Any]]) -> int:
    return 1 if any("error" in row for row in rows) else 0


def _status(rows: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        print(json.dumps(rows, indent=2))
        return _failed(rows)
    print(f"{'HOST':<16} {'CURRENT':<26} {'PREVIOUS':<26} {'GEN':>4} {'LOCK':<24} LAST")
    for row in rows:
        if "error" in row:
            print(f"{row.get('host', '?'):<16} unreachable: {row['error']}")
            continue
        master = row.get("master") or {}
        lease = row.get("lease")
        lock = "-" if not lease else (f"DIVERGED: {lease['diverged']}" if lease.get("diverged")
                                      else f"{lease['holder']} ({row['lease_age']}s)")
        last = row.get("last") or {}
        outcome = f"{last.get('event', '')} {last.get('outcome', '')} {last.get('release', '')}"
        print(f"{row['host']:<16} {row.get('current') or '-':<26} "
              f"{row.get('previous') or '-':<26} {master.get('generation', '-')!s:>4} "
              f"{lock:<24} {outcome.strip() or '-'}")
    return _failed(rows)


def _releases(rows: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        print(json.dumps(rows, indent=2))
        return _failed(rows)
    for row in rows:
        if "error" in row:
            print(f"{row.get('host', '?')}: unreachable: {row['error']}")
            continue
        print(f"{row['host']}:")
        for release in row["releases"]:
            mark = "current" if release["current"] else "previous" if release["previous"] \
                else "" if release["complete"] else "partial"
            commit = (release.get("manifest") or {}).get("commit") or ""
            print(f"  {release['id']:<26} {release['bytes'] / 2**20:>8.1f} MiB  "
                  f"{commit[:12]:<12} {mark}")
    return _failed(rows)


def _locks(rows: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        print(json.dumps([{"host": r.get("host"), "lease": r.get("lease"),
                           "error": r.get("error")} for r in rows], indent=2))
        return _failed(rows)
    for row in rows:
        lease = row.get("lease")
        state = row.get("error") or ("free" if not lease else
                                     f"held by {lease['holder']} (deploy {lease['deploy_id']}, "
                                     f"heartbeat {row['lease_age']}s ago, ttl {lease['ttl']}s)"
                                     + (f", DIVERGED: {lease['diverged']}"
                                        if lease.get("diverged") else ""))
        print(f"{row.get('host')}: {state}")
    return _failed(rows)


def _released(rows: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        print(json.dumps(rows, indent=2))
        return _failed(rows)
    for row in rows:
        state = row.get("error") or ("released" if row.get("released") else "was free")
        print(f"{row.get('host')}: {state}")
    return _failed(rows)
