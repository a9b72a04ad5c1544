"""Where a service's configuration comes from, kept so the master can read it again.

A reload re-reads the file and the environment (the CLI values stay as given), so
changing `workers`, `threads` or a timeout in `unbroken.toml` (or a `gunicorn.conf.py`,
which runs again, or a `uwsgi.ini`) and reloading applies it without a restart. A file
that does not validate aborts the reload with every bad key named; the running service
is untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unbroken.config.files import find_config_file, kind_of, read_settings
from unbroken.config.hooks import Hooks
from unbroken.config.load import load_config
from unbroken.config.settings import Config


@dataclass(frozen=True)
class Loaded:
    """A checked `Config`, the notes to print once at start, and the file's hooks."""

    config: Config
    notes: tuple[str, ...] = ()
    hooks: Hooks = field(default_factory=Hooks)


@dataclass(frozen=True)
class ConfigSource:
    cli_values: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None
    # "toml", "gunicorn" or "uwsgi" (files.kind_of); None: by the path's extension.
    kind: str | None = None

    @classmethod
    def locate(cls, cli_values: Mapping[str, Any], explicit: str | None,
               ini: str | None = None) -> ConfigSource:
        if ini is not None:
            path = find_config_file(ini)
            assert path is not None  # an explicit file exists, or ConfigError
            return cls(dict(cli_values), path, kind_of(path, ini=True))
        return cls(dict(cli_values), find_config_file(explicit))

    def load(self) -> Config:
        """Read everything again; raises ConfigError naming what is wrong."""
        return self.load_all().config

    def load_all(self, notes: bool = False) -> Loaded:
        """`load`, with the notes (asked for at start, not at a reload) and the hooks."""
        settings = read_settings(self.path, self.kind) if self.path is not None else None
        collected: list[str] = list(settings.notes) if settings and notes else []
        config = load_config(self.cli_values, file_values=settings.values if settings else {},
                             notes=collected if notes else None)
        return Loaded(config, tuple(collected), settings.hooks if settings else Hooks())
