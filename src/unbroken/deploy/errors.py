"""One error tree for the deploy; each kind knows the exit code the contract gives it.

0 done · 1 failed before any host switched · 2 usage · 3 failed after switching, every
host back on the previous release · 4 a host could not be rolled back · 75 the lock is
held by another deploy (EX_TEMPFAIL) · 130 interrupted (after its rollback).
"""

from __future__ import annotations

import time

from unbroken.errors import UnbrokenError

EXIT_OK = 0
EXIT_NOT_SWITCHED = 1
EXIT_USAGE = 2
EXIT_ROLLED_BACK = 3
EXIT_DIVERGED = 4
EXIT_LOCKED = 75
EXIT_INTERRUPTED = 130


class DeployError(UnbrokenError):
    """Anything that stops a deploy; the message is the one line a user reads."""

    exit_code = EXIT_NOT_SWITCHED

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details  # the remote error or traceback, printed under the line


class StepFailed(DeployError):
    """A remote step failed on one host: `host: step: reason`."""

    def __init__(self, host: str, step: str, reason: str, details: str = "") -> None:
        super().__init__(f"{host}: {step}: {reason}", details)
        self.host, self.step, self.reason = host, step, reason


class LockHeld(DeployError):
    exit_code = EXIT_LOCKED

    def __init__(self, host: str, holder: dict[str, object]) -> None:
        started = holder.get("started")
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(started))) \
            if isinstance(started, int | float) else "?"
        super().__init__(
            f"{host}: locked by {holder.get('holder')} (deploy {holder.get('deploy_id')}, "
            f"since {since}, heartbeat {holder.get('heartbeat_age')}s ago)")
        self.host, self.holder = host, holder


def reason_of(output: str, fallback: str) -> str:
    """The line of a tool's output that says what went wrong: its first `error:` line
    with the last `cause:` under it (uv's shape), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.lower().startswith("error"):
            causes = [c for c in lines[index + 1:] if c.startswith("cause:")]
            return f"{line} ({causes[-1].removeprefix('cause:').strip()})" if causes else line
    for line in lines:
        if line.lower().startswith(("because", "\N{MULTIPLICATION SIGN}")):
            return line
    return lines[-1] if lines else fallback
