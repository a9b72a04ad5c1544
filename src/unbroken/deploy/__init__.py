"""`unbroken deploy` as a Python API: the CLI is built on these, and a fabfile can call
them from its own task (examples/fabfile.py).

    from unbroken.deploy import deploy
    code = deploy("deploy.toml", ref="v1.4.2", json_output=True)

Each returns the exit code the CLI would (0 done, 1 nothing switched, 3 rolled back,
4 a host could not be rolled back, 75 locked, 130 interrupted); the read-only ones
return plain data. Needs the `deploy` extra (asyncssh, uv).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unbroken.deploy.config import DeployConfig, find_deploy_config, load_deploy_config
from unbroken.deploy.errors import DeployError
from unbroken.deploy.report import Reporter, reporter_for

__all__ = ["DeployConfig", "DeployError", "check", "deploy", "load", "lock_release",
           "releases", "rollback", "setup", "status"]


def load(config: str | Path | None = None) -> DeployConfig:
    return load_deploy_config(find_deploy_config(str(config) if config else None))


def _deployer(config: str | Path | DeployConfig | None, reporter: Reporter | None,
              json_output: bool, **options: Any) -> Any:
    from unbroken.deploy.run import Deployer, Options

    loaded = config if isinstance(config, DeployConfig) else load(config)
    return Deployer(loaded, reporter or reporter_for(json_output), Options(**options))


def _run(deployer: Any, method: str) -> int:
    from unbroken.deploy.run import run_interruptible

    try:
        code: int = run_interruptible(getattr(deployer, method)())
    finally:
        deployer.reporter.close()
    return code


def deploy(config: str | Path | DeployConfig | None = None, ref: str | None = None, *,
           hosts: Sequence[str] = (), dry_run: bool = False, lock_wait: float = 0.0,
           allow_dirty: bool = False, json_output: bool = False,
           reporter: Reporter | None = None) -> int:
    deployer = _deployer(config, reporter, json_output, ref=ref, hosts=hosts, dry_run=dry_run,
                         lock_wait=lock_wait, allow_dirty=allow_dirty)
    return _run(deployer, "deploy")


def rollback(config: str | Path | DeployConfig | None = None, to: str | None = None, *,
             hosts: Sequence[str] = (), lock_wait: float = 0.0, json_output: bool = False,
             reporter: Reporter | None = None) -> int:
    return _run(_deployer(config, reporter, json_output, to=to, hosts=hosts,
                          lock_wait=lock_wait), "rollback")


def setup(config: str | Path | DeployConfig | None = None, *, hosts: Sequence[str] = (),
          json_output: bool = False, reporter: Reporter | None = None) -> int:
    from unbroken.deploy.run import Options, Setup

    loaded = config if isinstance(config, DeployConfig) else load(config)
    return _run(Setup(loaded, reporter or reporter_for(json_output), Options(hosts=hosts)),
                "setup")


def check(config: str | Path | DeployConfig | None = None, *, hosts: Sequence[str] = (),
          json_output: bool = False, reporter: Reporter | None = None) -> int:
    return _run(_deployer(config, reporter, json_output, hosts=hosts), "check_only")


def _survey(config: str | Path | DeployConfig | None, hosts: Sequence[str],
            operation: str) -> list[dict[str, Any]]:
    import asyncio

    from unbroken.deploy.report import PlainReporter

    deployer = _deployer(config, PlainReporter(io.StringIO()), False, hosts=hosts)
    result: list[dict[str, Any]] = asyncio.run(deployer.survey(operation))
    return result


def status(config: str | Path | DeployConfig | None = None, *,
           hosts: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Per host: current and previous release, the master's generation, the lock, the
    last deploy's result."""
    return _survey(config, hosts, "info")


def releases(config: str | Path | DeployConfig | None = None, *,
             hosts: Sequence[str] = ()) -> list[dict[str, Any]]:
    return _survey(config, hosts, "releases")


def lock_release(config: str | Path | DeployConfig | None = None, *,
                 hosts: Sequence[str] = ()) -> list[dict[str, Any]]:
    import asyncio

    from unbroken.deploy.report import PlainReporter

    deployer = _deployer(config, PlainReporter(io.StringIO()), False, hosts=hosts)
    result: list[dict[str, Any]] = asyncio.run(deployer.release_locks())
    return result
