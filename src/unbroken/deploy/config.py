"""`deploy.toml`, or `[tool.unbroken.deploy]` in `pyproject.toml`: one declaration per key.

The file's folder is the project root: relative paths in it (the ssh config, the
known_hosts file, a `source = "dir"` folder) are read from there. Every bad key of every
table is reported at once, each named, as `unbroken.toml` does, so a CI run shows all
of them in one go instead of one per attempt.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unbroken.deploy.errors import DeployError

FILE_NAME = "deploy.toml"


class DeployConfigError(DeployError):
    """The deploy configuration is not usable; the message names every problem."""


@dataclass(frozen=True)
class Host:
    """One target: an ssh_config alias or `user@host:port`, and its own serve line."""

    name: str
    group: str
    serve: str | None = None  # overrides the top-level `serve` for this host


@dataclass(frozen=True)
class SSH:
    config: Path | None = None  # None: ~/.ssh/config when it exists
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts
    connect_timeout: float = 10.0
    keepalive_interval: float = 5.0
    keepalive_count: int = 3
    step_timeout: float = 600.0  # any one remote step (an install can be slow)


@dataclass(frozen=True)
class Rollout:
    batches: tuple[int | str, ...] = (1, "50%")
    max_fail: int | str = 0
    confirm_timeout: float = 60.0
    soak: float = 3.0  # seconds a switched host is watched before it counts as done


@dataclass(frozen=True)
class Lock:
    ttl: float = 30.0


@dataclass(frozen=True)
class Health:
    path: str | None = None
    host: str | None = None  # the Host header: Django's ALLOWED_HOSTS and friends
    timeout: float = 5.0


@dataclass(frozen=True)
class Hooks:
    local_pre: str | None = None  # here, before anything connects
    build: str | None = None  # on every host, in the release, after its install
    once: str | None = None  # on the first host only, before any switch (migrations)
    local_post: str | None = None  # here, after a successful deploy


@dataclass(frozen=True)
class DeployConfig:
    root: Path
    app: str
    deploy_to: str
    serve: str
    hosts: tuple[Host, ...]
    keep_releases: int = 5
    python: str = "python3"
    source: str = "git"  # "git" (git archive REF) or a folder relative to the root
    install: str = "auto"  # "auto" (uv.lock, pylock.toml, requirements.txt) or "none"
    linked_files: tuple[str, ...] = (".env",)
    linked_dirs: tuple[str, ...] = ()
    ssh: SSH = field(default_factory=SSH)
    rollout: Rollout = field(default_factory=Rollout)
    lock: Lock = field(default_factory=Lock)
    health: Health = field(default_factory=Health)
    hooks: Hooks = field(default_factory=Hooks)

    def serve_line(self, host: Host, address: str) -> str:
        """The serve arguments of one host, `{host}` replaced by the address it has."""
        return (host.serve or self.serve).replace("{host}", address)


# -- parsers: each takes the TOML value, returns the Python value or raises ValueError --

def _string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value


def _optional_string(value: Any) -> str | None:
    return _string(value)


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of strings")
    return tuple(value)


def _seconds(value: Any) -> float:
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", value)
        if not match:
            raise ValueError("must be seconds: a number or a string like '30s', '2m'")
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
        return float(match.group(1)) * scale
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError("must be a number of seconds >= 0")
    return float(value)


def _positive_seconds(value: Any) -> float:
    seconds = _seconds(value)
    if seconds <= 0:
        raise ValueError("must be more than 0 seconds")
    return seconds


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("must be a whole number >= 0")
    return value


def _positive_count(value: Any) -> int:
    if _count(value) == 0:
        raise ValueError("must be at least 1")
    return int(value)


def _share(value: Any) -> int | str:
    """A number of hosts or a percentage of them: 2, "25%"."""
    if isinstance(value, str) and re.fullmatch(r"\d{1,3}%", value) and int(value[:-1]) <= 100:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError('must be a number of hosts or a percentage like "50%"')


def _batches(value: Any) -> tuple[int | str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError('must be a non-empty list like [1, "50%"]')
    shares = tuple(_share(item) for item in value)
    if any(share in (0, "0%") for share in shares):
        raise ValueError("has a batch of 0 hosts")
    return shares


def _path(value: Any) -> Path:
    return Path(_string(value)).expanduser()


def _source(value: Any) -> str:
    return _string(value)


def _install(value: Any) -> str:
    if value not in ("auto", "none"):
        raise ValueError('must be "auto" or "none"')
    return str(value)


Parser = Callable[[Any], Any]

TOP: dict[str, Parser] = {
    "app": _string, "deploy_to": _string, "serve": _string, "keep_releases": _positive_count,
    "python": _string, "source": _source, "install": _install, "linked_files": _strings,
    "linked_dirs": _strings,
}
TABLES: dict[str, tuple[type, dict[str, Parser]]] = {
    "ssh": (SSH, {"config": _path, "known_hosts": _path, "connect_timeout": _positive_seconds,
                  "keepalive_interval": _positive_seconds, "keepalive_count": _positive_count,
                  "step_timeout": _positive_seconds}),
    "rollout": (Rollout, {"batches": _batches, "max_fail": _share,
                          "confirm_timeout": _positive_seconds, "soak": _seconds}),
    "lock": (Lock, {"ttl": _positive_seconds}),
    "health": (Health, {"path": _optional_string, "host": _optional_string,
                        "timeout": _positive_seconds}),
    "hooks": (Hooks, {"local_pre": _optional_string, "build": _optional_string,
                      "once": _optional_string, "local_post": _optional_string}),
}
REQUIRED = ("app", "deploy_to", "serve")
HOST_KEYS = {"host", "serve"}


def find_deploy_config(explicit: str | None, directory: str | Path = ".") -> Path:
    """--config if given; else ./deploy.toml; else ./pyproject.toml with the table."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise DeployConfigError(f"deploy config {explicit} does not exist")
        return path
    candidate = Path(directory) / FILE_NAME
    if candidate.is_file():
        return candidate
    pyproject = Path(directory) / "pyproject.toml"
    if pyproject.is_file() and "deploy" in _read(pyproject).get("tool", {}).get("unbroken", {}):
        return pyproject
    raise DeployConfigError(f"no {FILE_NAME} (or [tool.unbroken.deploy] in pyproject.toml) "
                            f"in {Path(directory).resolve()}")


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise DeployConfigError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise DeployConfigError(f"{path}: {error.strerror}") from None


def load_deploy_config(path: Path) -> DeployConfig:
    document = _read(path)
    table = document.get("tool", {}).get("unbroken", {}).get("deploy") \
        if path.name == "pyproject.toml" else document
    if not isinstance(table, dict):
        raise DeployConfigError(f"{path}: [tool.unbroken.deploy] must be a table")
    return parse_deploy_config(table, path.resolve().parent, str(path))


def parse_deploy_config(table: dict[str, Any], root: Path, where: str) -> DeployConfig:
    """Plain data in, a DeployConfig out; every problem of the table in one message."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key == "hosts":
            continue
        if key in TABLES:
            values[key] = _table(key, raw, root, problems)
        elif key in TOP:
            _parse_into(values, key, key, raw, TOP[key], problems)
        else:
            problems.append(f"{key} (unknown key)")
    hosts = _hosts(table.get("hosts"), problems)
    problems += [f"{key} (missing)" for key in REQUIRED if key not in table]
    if problems:
        raise DeployConfigError(f"{where}: bad key(s): {'; '.join(problems)}")
    return DeployConfig(root=root, hosts=hosts, **values)


def _parse_into(values: dict[str, Any], key: str, name: str, raw: Any, parse: Parser,
                problems: list[str]) -> None:
    try:
        values[key] = parse(raw)
    except ValueError as error:
        problems.append(f"{name} ({raw!r} {error})")


def _table(name: str, raw: Any, root: Path, problems: list[str]) -> Any:
    kind, parsers = TABLES[name]
    if not isinstance(raw, dict):
        problems.append(f"{name} (must be a table)")
        return kind()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        parse = parsers.get(key)
        if parse is None:
            problems.append(f"{name}.{key} (unknown key)")
            continue
        _parse_into(values, key, f"{name}.{key}", value, parse, problems)
    for key, value in values.items():
        if isinstance(value, Path) and not value.is_absolute():
            values[key] = root / value
    return kind(**values)


def _hosts(raw: Any, problems: list[str]) -> tuple[Host, ...]:
    if not isinstance(raw, dict) or not raw:
        problems.append('hosts (missing: a table of groups, e.g. web = ["deploy@app1"])')
        return ()
    hosts: list[Host] = []
    for group, entries in raw.items():
        if not isinstance(entries, list) or not entries:
            problems.append(f"hosts.{group} (must be a non-empty list of hosts)")
            continue
        for entry in entries:
            host = _host(group, entry, problems)
            if host is not None:
                hosts.append(host)
    names = [host.name for host in hosts]
    problems += [f"hosts ({name!r} is listed twice)" for name in sorted(set(names))
                 if names.count(name) > 1]
    return tuple(hosts)


def _host(group: str, entry: Any, problems: list[str]) -> Host | None:
    if isinstance(entry, str) and entry.strip():
        return Host(entry.strip(), group)
    if isinstance(entry, dict) and isinstance(entry.get("host"), str):
        unknown = set(entry) - HOST_KEYS
        if unknown:
            problems.append(f"hosts.{group} ({', '.join(sorted(unknown))}: unknown key)")
            return None
        serve = entry.get("serve")
        if serve is not None and not isinstance(serve, str):
            problems.append(f"hosts.{group} (serve of {entry['host']} must be a string)")
            return None
        return Host(entry["host"], group, serve)
    problems.append(f"hosts.{group} ({entry!r}: a host is a string or "
                    '{ host = "...", serve = "..." })')
    return None
