"""Configuration files: `unbroken.toml`, or `[tool.unbroken]` in `pyproject.toml`; and
the files people bring: `gunicorn.conf.py` (any `*.py`, config/gunicorn.py) and
`uwsgi.ini` (any `*.ini`, or `--ini`; config/uwsgi.py), told apart by their extension.

Keys are the setting names (`workers`, `graceful_timeout`; dashes work too), values
are TOML values. Every value goes through the same parser as its flag, and every
bad key is reported at once, in one message, so a deploy script sees them all.
The master reads the file again at every reload (see `ConfigSource`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from unbroken.config.foreign import FileSettings
from unbroken.config.load import ConfigError
from unbroken.config.parse import explain, switch
from unbroken.config.settings import declarations
from unbroken.config.suggest import closest

FILE_NAME = "unbroken.toml"

TOML, GUNICORN, UWSGI = "toml", "gunicorn", "uwsgi"


def kind_of(path: Path, ini: bool = False) -> str:
    """Which reader a file needs: by `--ini`, else by its extension."""
    if ini or path.suffix == ".ini":
        return UWSGI
    if path.suffix == ".py":
        return GUNICORN
    return TOML


def read_settings(path: Path, kind: str | None = None) -> FileSettings:
    """What a file of any kind gives: values, notes to print at start, hooks."""
    kind = kind or kind_of(path)
    if kind == GUNICORN:
        from unbroken.config import gunicorn

        return gunicorn.read(path)
    if kind == UWSGI:
        from unbroken.config import uwsgi

        return uwsgi.read(path)
    return FileSettings(from_file(path))


def find_config_file(explicit: str | None, directory: str | Path = ".") -> Path | None:
    """--config if given; else ./unbroken.toml; else ./pyproject.toml with [tool.unbroken]."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {explicit} does not exist")
        return path
    candidate = Path(directory) / FILE_NAME
    if candidate.is_file():
        return candidate
    pyproject = Path(directory) / "pyproject.toml"
    if pyproject.is_file() and "unbroken" in _read(pyproject).get("tool", {}):
        return pyproject
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path}: not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"config file {path}: {error.strerror}") from None


def from_file(path: Path) -> dict[str, Any]:
    """The settings a file gives; ConfigError naming every bad key."""
    document = _read(path)
    table = document.get("tool", {}).get("unbroken", {}) if path.name == "pyproject.toml" \
        else document
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [tool.unbroken] must be a table")
    known = {field.name: declaration for field, declaration in declarations()}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for raw_key, raw_value in table.items():
        key = raw_key.replace("-", "_")
        declaration = known.get(key)
        if declaration is None:
            close = closest(key, known)
            hint = f": did you mean {close.replace('_', '-') if '-' in raw_key else close}?" \
                if close else ""
            problems.append(f"{raw_key} (unknown setting{hint})")
            continue
        try:
            values[key] = _convert(raw_value, declaration.parse, declaration.repeatable)
        except ValueError as error:
            problems.append(f"{raw_key} ({raw_value!r} {explain(error)})")
    if problems:
        raise ConfigError(f"config file {path}: bad key(s): {'; '.join(problems)}")
    return values


def _convert(value: Any, parse: Any, repeatable: bool) -> Any:
    if repeatable:
        items = value if isinstance(value, list) else [value]
        return tuple(parse(_text(item)) for item in items)
    if isinstance(value, bool) and parse is switch:
        return value  # `proxy_protocol = true`
    return parse(_text(value))


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("is not a string or a number")
    return str(value)
