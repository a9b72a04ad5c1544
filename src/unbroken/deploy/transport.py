"""SSH to the hosts, on asyncssh: fails fast, never hangs, never trusts a changed key.

Why asyncssh and not Fabric/paramiko (measured, ../shared/DEPLOY.md §0 and §3):
paramiko's keepalives did not detect a dead link (`Connection.run()` hung until
killed) and Fabric adds unknown host keys without asking; one hung sshd blocked a
whole ThreadingGroup for 15 s. asyncssh reads the user's OpenSSH config (aliases,
User, Port, IdentityFile, ProxyJump), uses the agent, checks known_hosts strictly,
detects a dead peer with keepalives (3.0 s at 1 s x 2), and runs every host on one
event loop, so a hung host costs its own deadline and nobody else's.

Its one trap is handled here: a link lost mid-command returns `exit_status None` and
no exception; that is a failure (`LinkLost`), and never proof the command stopped
(a remote command outlives a killed client: measured).
"""

from __future__ import annotations

import asyncio
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from unbroken.deploy.config import SSH
from unbroken.deploy.errors import DeployError


class TransportError(DeployError):
    """The host could not be reached or stopped answering."""


class HostKeyChanged(TransportError):
    pass


class LinkLost(TransportError):
    pass


@dataclass(frozen=True)
class Result:
    status: int
    stdout: str
    stderr: str


def _split(name: str) -> tuple[str | None, str, int | None]:
    """`user@host:port`, `host:port`, `[::1]:22` or an ssh_config alias."""
    user, _, rest = name.rpartition("@")
    port: int | None = None
    if rest.startswith("["):
        address, _, tail = rest[1:].partition("]")
        port = int(tail[1:]) if tail.startswith(":") else None
        rest = address
    elif rest.count(":") == 1:
        rest, _, text = rest.partition(":")
        port = int(text)
    return user or None, rest, port


def _options(ssh: SSH) -> dict[str, Any]:
    config = ssh.config or Path("~/.ssh/config").expanduser()
    known = ssh.known_hosts or Path("~/.ssh/known_hosts").expanduser()
    return {
        "config": [str(config)] if config.exists() else [],
        "known_hosts": str(known),
        "connect_timeout": ssh.connect_timeout, "login_timeout": ssh.connect_timeout,
        "keepalive_interval": ssh.keepalive_interval,
        "keepalive_count_max": ssh.keepalive_count,
    }


class Connection:
    """One host's SSH connection; every call has a deadline."""

    def __init__(self, name: str, connection: asyncssh.SSHClientConnection) -> None:
        self.name = name
        self._connection = connection

    @property
    def address(self) -> str:
        peer = self._connection.get_extra_info("peername")
        return str(peer[0]) if peer else self.name

    @classmethod
    async def open(cls, name: str, ssh: SSH) -> Connection:
        user, host, port = _split(name)
        options = _options(ssh)
        extra: dict[str, Any] = {}
        if user:
            extra["username"] = user
        if port:
            extra["port"] = port
        try:
            connection = await asyncio.wait_for(
                asyncssh.connect(host, **options, **extra), ssh.connect_timeout + 1)
        except asyncssh.HostKeyNotVerifiable as error:
            raise await _explain_host_key(name, host, port, options, extra, error) from None
        except TimeoutError:
            raise TransportError(f"{name}: no SSH answer within {ssh.connect_timeout:g}s "
                                 "(host down or hung)") from None
        except asyncssh.PermissionDenied as error:
            raise TransportError(f"{name}: SSH login refused: {error.reason}") from None
        except (OSError, asyncssh.Error) as error:
            reason = getattr(error, "reason", None) or getattr(error, "strerror", None) \
                or str(error)
            raise TransportError(f"{name}: cannot connect: {reason}") from None
        return cls(name, connection)

    async def run(self, command: str, stdin: str = "", timeout: float = 60.0) -> Result:
        try:
            completed = await asyncio.wait_for(
                self._connection.run(command, input=stdin, check=False), timeout)
        except TimeoutError:
            raise LinkLost(f"{self.name}: no answer within {timeout:g}s (the remote step "
                           "may still be running)") from None
        except (OSError, asyncssh.Error) as error:
            raise LinkLost(f"{self.name}: connection lost: {error}") from None
        if completed.exit_status is None:
            raise LinkLost(f"{self.name}: connection lost before the command finished")
        return Result(int(completed.exit_status), _text(completed.stdout),
                      _text(completed.stderr))

    async def agent(self, python: str, operation: str, args: dict[str, Any],
                    timeout: float) -> dict[str, Any]:
        """One host-agent operation; its answer is the last JSON line it printed."""
        command = f"{shlex.quote(python)} -m unbroken.deploy.agent {operation}"
        result = await self.run(command, json.dumps(args), timeout)
        for line in reversed(result.stdout.splitlines()):
            if line.startswith("{"):
                try:
                    answer: dict[str, Any] = json.loads(line)
                    return answer
                except ValueError:
                    break
        tail = (result.stderr or result.stdout).strip().splitlines()
        return {"ok": False, "error": f"the host agent gave no answer (exit status "
                f"{result.status}): {tail[-1] if tail else 'no output'}",
                "details": result.stderr}

    async def put(self, data: bytes, remote: str, timeout: float) -> None:
        """Write to `remote.partial`, then rename: a cut upload never looks complete."""
        async def transfer() -> None:
            async with self._connection.start_sftp_client() as sftp:
                async with sftp.open(remote + ".partial", "wb") as handle:
                    for offset in range(0, len(data), 1 << 20):
                        await handle.write(data[offset:offset + (1 << 20)])
                await sftp.posix_rename(remote + ".partial", remote)
        try:
            await asyncio.wait_for(transfer(), timeout)
        except TimeoutError:
            raise LinkLost(f"{self.name}: upload not done within {timeout:g}s") from None
        except (OSError, asyncssh.Error) as error:
            raise LinkLost(f"{self.name}: upload failed: {error}") from None

    def close(self) -> None:
        self._connection.close()


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


async def _explain_host_key(name: str, host: str, port: int | None, options: dict[str, Any],
                            extra: dict[str, Any], error: Exception) -> HostKeyChanged:
    """Both fingerprints, so a person can tell a rebuilt host from an attack. Never
    accepted automatically."""
    presented = "unknown"
    try:  # the address and port the config resolves the alias to
        resolved = asyncssh.SSHClientConnectionOptions(
            host=host, config=options["config"], **({"port": port} if port else {}))
        host, port = str(resolved.host), int(resolved.port)
    except (OSError, ValueError, asyncssh.Error):
        pass
    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(
            host, port or 22, config=options["config"]), options["connect_timeout"] + 1)
        if key is not None:
            presented = key.get_fingerprint("sha256")
    except (OSError, asyncssh.Error, TimeoutError):
        pass
    expected = _known_fingerprints(options["known_hosts"], host, port)
    if not expected:
        return HostKeyChanged(f"{name}: host key not in {options['known_hosts']} "
                              f"(presented {presented}); add it after checking it, e.g. "
                              "with ssh-keyscan, and deploy again")
    return HostKeyChanged(f"{name}: HOST KEY CHANGED: known_hosts has "
                          f"{', '.join(expected)}, the host presented {presented}; nothing "
                          "was changed on any host")


def _known_fingerprints(path: str, host: str, port: int | None) -> list[str]:
    try:
        known = asyncssh.read_known_hosts(path)
    except (OSError, ValueError):
        return []
    names = [f"[{host}]:{port}" if port and port != 22 else host]
    fingerprints: list[str] = []
    for candidate in names:
        trusted = known.match(candidate, "", port or 22)[0]
        fingerprints += [key.get_fingerprint("sha256") for key in trusted]
    return fingerprints
