"""Where a service's configuration comes from, kept so the master can read it again.

A reload re-reads the file and the environment (the CLI values stay as given), so
changing `workers`, `threads` or a timeout in `unbroken.toml` and reloading applies
it without a restart. A file that does not validate aborts the reload with every
bad key named; the running service is untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unbroken.config.files import find_config_file, from_file
from unbroken.config.load import load_config
from unbroken.config.settings import Config


@dataclass(frozen=True)
class ConfigSource:
    cli_values: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def locate(cls, cli_values: Mapping[str, Any], explicit: str | None) -> ConfigSource:
        return cls(dict(cli_values), find_config_file(explicit))

    def load(self) -> Config:
        """Read everything again; raises ConfigError naming what is wrong."""
        file_values = from_file(self.path) if self.path is not None else {}
        return load_config(self.cli_values, file_values=file_values)
