"""Build a `Config` from a file, the environment and the command line (each over the last).

Values arrive as strings and go through each setting's own parser, so a bad value
anywhere gives the same one-line message naming the setting.
"""

from __future__ import annotations

import dataclasses
import grp
import importlib.util
import os
import pwd
from collections.abc import Mapping
from typing import Any

from unbroken.config.parse import explain
from unbroken.config.settings import Config, declarations
from unbroken.config.suggest import closest, did_you_mean
from unbroken.config.worker_classes import resolve as resolve_worker_class
from unbroken.errors import UsageError

ENV_PREFIX = "UNBROKEN_"


class ConfigError(UsageError, ValueError):
    """A setting's value is not acceptable; the message names the setting."""


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _parse(name: str, parse: Any, raw: str) -> Any:
    try:
        return parse(raw)
    except ValueError as error:
        raise ConfigError(f"{name}: {raw!r} {explain(error)}") from None


# UNBROKEN_* variables that are not settings: unbroken sets them for its own children
# (workers, deploy hooks, the supervisor program a deploy writes) or the tests read them.
# Any other UNBROKEN_* variable is a mistake, reported by `unknown_variables`; add a name
# here when you add such a variable (tests/unit/config/test_environment.py checks).
OTHER_VARIABLES = frozenset({
    "UNBROKEN_WORKER", "UNBROKEN_PASS_FDS", "UNBROKEN_FD_NAMES", "UNBROKEN_STATE",
    "UNBROKEN_DEPLOY_ID", "UNBROKEN_RELEASE", "UNBROKEN_HOST", "UNBROKEN_HOSTS",
    "UNBROKEN_DEPLOY_TO", "UNBROKEN_AGENT_ARGS", "UNBROKEN_TEST_LOOP",
})


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One problem per UNBROKEN_* variable that is no setting, with the closest one."""
    known = [env_name(field.name) for field, _ in declarations()]
    problems = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known or name in OTHER_VARIABLES:
            continue
        # Compared without the prefix, which every name shares.
        close = closest(name.removeprefix(ENV_PREFIX), [f.name.upper() for f, _ in declarations()])
        problems.append(f"{name} is not a setting" + (
            f": did you mean {ENV_PREFIX}{close}?" if close else " (docs/settings.md lists them)"))
    return problems


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Values given as UNBROKEN_* variables; repeatable settings split on commas. An
    UNBROKEN_* variable that is no setting is refused, not ignored: it is a typo."""
    problems = unknown_variables(environ)
    if problems:
        raise ConfigError(f"environment: {'; '.join(problems)}")
    values: dict[str, Any] = {}
    for field, declaration in declarations():
        raw = environ.get(env_name(field.name))
        if raw is None:
            continue
        if declaration.repeatable:
            parts = [part.strip() for part in raw.split(",") if part.strip()]
            values[field.name] = tuple(_parse(env_name(field.name), declaration.parse, p)
                                       for p in parts)
        else:
            values[field.name] = _parse(env_name(field.name), declaration.parse, raw)
    return values


def platform_defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """`WEB_CONCURRENCY`, which Heroku-style platforms and gunicorn read as the default
    worker count: under every other source (a file, UNBROKEN_WORKERS, -w), as in gunicorn."""
    raw = environ.get("WEB_CONCURRENCY")
    if raw is None:
        return {}
    workers = next(f for f, _ in declarations() if f.name == "workers")
    return {"workers": _parse("WEB_CONCURRENCY", workers.metadata["declaration"].parse, raw)}


def load_config(cli_values: Mapping[str, Any], environ: Mapping[str, str] | None = None,
                file_values: Mapping[str, Any] | None = None,
                notes: list[str] | None = None) -> Config:
    """Merge file, environment and CLI values (already parsed) into a checked `Config`.

    `notes` collects the lines worth printing once at start (a gunicorn `-k` alias and
    the engine that serves it); a reload passes none."""
    environ = os.environ if environ is None else environ
    values = platform_defaults(environ)
    values.update(file_values or {})
    values.update(from_environment(environ))
    values.update({k: v for k, v in cli_values.items() if v is not None})
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError("unknown setting(s): " + ", ".join(
            name + (f" ({hint})" if (hint := did_you_mean(name, known)) else "")
            for name in unknown))
    if "worker_class" in values:
        values["worker_class"], note = resolve_worker_class(values["worker_class"])
        if note and notes is not None:
            notes.append(note)
    return check(Config(**values))


def check(config: Config) -> Config:
    """Rules that tie settings together; each failure names what to change."""
    if config.cmd and config.app:
        raise ConfigError("give an APP or --cmd, not both")
    if not config.cmd and not config.app:
        raise ConfigError("serve needs an APP, e.g. `unbroken serve myproject.wsgi:application`"
                          " (or --cmd 'PROGRAM ARGS')")
    if config.app and ":" not in config.app:
        raise ConfigError(f"app {config.app!r}: expected module:attr or path/to/file.py:attr")
    _check_tls(config)
    _check_identity(config)
    _check_extras(config)
    return config


# Engines whose library is an extra, and the extra that installs it.
EXTRAS = {"gevent": ("gevent", "gevent")}


def _check_extras(config: Config) -> None:
    """-k gevent without gevent: say which extra to install, before any worker boots
    (one would only die with an ImportError). Under --python the workers run another
    interpreter, whose packages are not ours to see."""
    needs = EXTRAS.get(config.worker_class)
    if needs is None or config.python is not None or config.cmd:
        return
    module, extra = needs
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"-k {config.worker_class} needs {module}, which is not installed: "
                          f"pip install 'unbroken[{extra}]'")


def _check_identity(config: Config) -> None:
    """--user/--group must exist, and only root can become them."""
    if config.user is None and config.group is None:
        return
    if config.cmd:
        raise ConfigError("--user/--group with --cmd is not supported yet (the notify "
                          "socket lives in the master's private directory)")
    try:
        if config.user is not None:
            pwd.getpwnam(config.user)
        if config.group is not None:
            grp.getgrnam(config.group)
    except KeyError as error:
        raise ConfigError(f"--user/--group: no such user or group: {error.args[0]}") from None
    if os.geteuid() != 0:
        raise ConfigError("--user/--group needs the master to run as root")


def _check_tls(config: Config) -> None:
    """TLS settings that cannot work together; the files themselves are read by workers."""
    if bool(config.certfile) != bool(config.keyfile):
        raise ConfigError("TLS needs both --certfile and --keyfile")
    if config.certfile and config.cmd:
        raise ConfigError("--certfile does not apply to --cmd workers: they serve their own TLS")
    if config.certfile and config.worker_class == "gevent":
        raise ConfigError("TLS is served by the wsgi and asgi worker classes, not gevent")
    if config.certfile and config.proxy_protocol:
        # The PROXY header precedes the ClientHello; the core reads it only after the
        # handshake, so the two cannot work together yet.
        raise ConfigError("--proxy-protocol with --certfile is not supported: terminate TLS "
                          "at the proxy")
    if config.cert_reqs != "none" and not config.certfile:
        raise ConfigError(f"--cert-reqs {config.cert_reqs} needs TLS (--certfile, --keyfile)")
    if config.cert_reqs != "none" and not config.ca_certs:
        raise ConfigError(f"--cert-reqs {config.cert_reqs} needs --ca-certs to verify clients")
