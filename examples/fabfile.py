"""A fabfile whose deploy is `unbroken deploy`: the same task names a team already runs
(`fab deploy`, `fab rollback`), with the guarantees of the deploy behind them.

Put it beside deploy.toml (or [tool.unbroken.deploy] in pyproject.toml) and run:

    fab deploy                  # HEAD; `--ref` names a tag or commit
    fab status
    fab rollback

The task's exit code is the deploy's (0 done, 1 nothing switched, 3 every host rolled
back, 4 a host could not be rolled back, 75 another deploy holds the lock), so CI can
tell "nothing changed" from "rolled back". Fabric's own Connection is not used for the
deploy: its SSH hangs on a dead link and trusts any host key (../shared/DEPLOY.md);
unbroken's asyncssh engine reads the same ~/.ssh/config.
"""

from __future__ import annotations

from fabric import task
from invoke.context import Context
from invoke.exceptions import Exit

from unbroken import deploy as unbroken


def _exit(code: int) -> None:
    if code != 0:
        raise Exit(code=code)


@task
def deploy(c: Context, ref: str | None = None, json: bool = False) -> None:
    """Ship REF (default HEAD) to every host in batches; roll all back on any failure."""
    _exit(unbroken.deploy(ref=ref, json_output=json))


@task
def rollback(c: Context, to: str | None = None) -> None:
    """Put every host back on its previous release (or --to a release id)."""
    _exit(unbroken.rollback(to=to))


@task
def status(c: Context) -> None:
    """Each host's current and previous release and the master's generation."""
    for row in unbroken.status():
        master = row.get("master") or {}
        print(f"{row['host']}: {row.get('current') or row.get('error')} "
              f"(generation {master.get('generation', '-')})")
