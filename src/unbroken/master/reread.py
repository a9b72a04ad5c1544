"""A reload reads the configuration again: what may change, and what waits for a restart.

Settings that name the master's own sockets and files cannot change without a
restart; a reload keeps their old values and says which ones changed. A new `bind`
is prepared (bound next to the old sockets, never in place of them) before anything
else changes, so a refusal leaves the service exactly as it was.
"""

from __future__ import annotations

import dataclasses
import logging

from unbroken.config import Config, ConfigError
from unbroken.config.hooks import Hooks
from unbroken.config.source import ConfigSource
from unbroken.master.listeners import ListenerSet
from unbroken.sockets import AddressError

log = logging.getLogger("unbroken.master")

# Settings a reload cannot change: they name the master's own sockets and files.
RESTART_ONLY = ("control", "name", "pid", "master_fifo", "cmd", "app", "chdir",
                "ready_bind", "metrics_bind")


def reread(source: ConfigSource | None, config: Config, hooks: Hooks,
           sockets: ListenerSet) -> tuple[Config | None, Hooks, str]:
    """The configuration (and a gunicorn file's hooks) to reload with, or None and the
    reason it cannot be applied."""
    if source is None:
        return config, hooks, ""
    try:
        loaded = source.load_all()
    except ConfigError as error:
        return None, hooks, f"configuration not valid, nothing changed: {error}"
    new = loaded.config
    fixed = {name: getattr(config, name) for name in RESTART_ONLY}
    changed = [name for name, value in fixed.items() if getattr(new, name) != value]
    if changed:
        log.warning("%s changed in the configuration: takes effect at the next restart",
                    ", ".join(changed))
    new = dataclasses.replace(new, **fixed)
    try:
        sockets.current = sockets.prepare(new.bind)
        sockets.give_to(new.user, new.group)
    except AddressError as error:
        return None, hooks, f"nothing changed: {error}"
    return new, loaded.hooks, ""
