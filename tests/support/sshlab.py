"""Three SSH "hosts" on one machine, for deploy tests and benchmarks.

Each host is a unix user `ubhostN` with home /srv/ubhostN and its own sshd on
127.0.0.(N+1):2222, so a deploy tool sees three machines with separate files, logs,
PIDs and host keys, and one of them can be hung, rotated or emptied without touching
the others (recipe: ../shared/DEPLOY.md section 7). The client side is a private key,
known_hosts and ssh_config in the lab's root directory, with strict host-key checking:
a test must never learn host keys by trust-on-first-use.

Rules this module keeps:

1. Loopback only: every daemon listens on 127.0.0.0/8.
2. Every process the lab starts is a child it holds by PID (`sshd -D`), and everything
   running as a lab user is killed when the lab stops: apps and supervisord deployed
   on the hosts must not outlive a test.
3. Every wait is bounded.
4. The users stay (creating them is slow and racy across runs); their homes are wiped
   at every start, so each run begins from empty hosts.

Needs root: it creates users and runs sshd. `skip_reason()` says why it cannot run.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["SSHD", "LabHost", "SSHLab", "skip_reason"]

SSHD = "/usr/sbin/sshd"
PORT = 2222
# Held (flock) while a lab runs: two labs share the users, homes and addresses, so a
# second one, say the deploy tests run next to these, waits instead of wiping the
# first one's hosts.
LOCK_PATH = Path("/run/lock/unbroken-sshlab.lock")
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
REAP_TIMEOUT = 5.0
COMMAND_TIMEOUT = 30.0
LOCK_TIMEOUT = 120.0
POLL = 0.05
# Resolved with root's PATH: subprocess looks argv[0] up in the child's env, and a
# host user's PATH has no /usr/sbin.
_RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


def skip_reason() -> str | None:
    """Why the lab cannot run here, or None; for pytest skips and the bench."""
    if os.geteuid() != 0:
        return "the SSH lab needs root (it creates users and runs sshd)"
    if not os.access(SSHD, os.X_OK):
        return f"no {SSHD} (apt-get install openssh-server; scripts/install-test-deps)"
    for tool in ("ssh", "ssh-keygen", "runuser", "useradd", "haproxy"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/install-test-deps)"
    return None


@dataclass
class LabHost:
    """One host: its ssh alias in ssh_config, where its sshd listens, and its user."""

    index: int
    alias: str
    address: str
    port: int
    user: str
    home: Path
    config: Path
    log: Path
    host_key: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.user).pw_uid

    @property
    def gid(self) -> int:
        return pwd.getpwnam(self.user).pw_gid


class SSHLab:
    """The lab: `start()` brings up n hosts, `stop()` takes all of them down.

    Usable as a context manager. Hosts are numbered from 1, as in their names.
    """

    def __init__(self, root: Path, n: int = 3, *, port: int = PORT,
                 lock_timeout: float = LOCK_TIMEOUT) -> None:
        if not 1 <= n <= 250:
            raise ValueError("n must be between 1 and 250 (one 127.0.0.x address each)")
        self.root = Path(root).resolve()
        self.port = port
        self.lock_timeout = lock_timeout
        self.client_key = self.root / "client_key"
        self.known_hosts = self.root / "known_hosts"
        self.ssh_config = self.root / "ssh_config"
        self.hosts = [
            LabHost(index=i, alias=f"h{i}", address=f"127.0.0.{i + 1}", port=port,
                    user=f"ubhost{i}", home=Path(f"/srv/ubhost{i}"),
                    config=self.root / f"sshd{i}.conf", log=self.root / f"sshd{i}.log",
                    host_key=self.root / f"hostkey{i}")
            for i in range(1, n + 1)
        ]
        self._lock: IO[bytes] | None = None
        self._rotations = 0

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> SSHLab:
        """Create users and fresh homes, start every sshd, wait until each says SSH-."""
        reason = skip_reason()
        if reason is not None:
            raise RuntimeError(reason)
        self._take_lock()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sshlab-client",
                  "-f", str(self.client_key)], replace=self.client_key)
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privsep directory
            for host in self.hosts:
                self._prepare_host(host)
            for host in self.hosts:
                self._start_sshd(host)
            for host in self.hosts:
                self._wait_banner(host)
            self._write_known_hosts()
            self._write_ssh_config()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every sshd by PID and kill whatever still runs as a lab user."""
        try:
            for host in self.hosts:
                self._stop_sshd(host)
            for host in self.hosts:
                if _user_exists(host.user):
                    self.reap(host.index)
        finally:
            self._release_lock()

    def __enter__(self) -> SSHLab:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def host(self, i: int) -> LabHost:
        if not 1 <= i <= len(self.hosts):
            raise IndexError(f"no host {i}; hosts are 1..{len(self.hosts)}")
        return self.hosts[i - 1]

    # -- commands ----------------------------------------------------------------------

    @property
    def ssh_command(self) -> list[str]:
        """The system ssh with the lab's config: a prefix for ssh and `rsync -e`."""
        return ["ssh", "-F", str(self.ssh_config)]

    def ssh(self, i: int, command: str, *, timeout: float = COMMAND_TIMEOUT,
            options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        """Run `command` on host i with the system ssh, as a deploy script would."""
        argv = [*self.ssh_command, *options, self.host(i).alias, command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)

    def run_as(self, i: int, argv: list[str], *, timeout: float = COMMAND_TIMEOUT,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv locally as host i's user, to look at a host without going over SSH."""
        host = self.host(i)
        return subprocess.run([_RUNUSER, "-u", host.user, "--", *argv], cwd=host.home,
                              env=self.user_env(i), capture_output=True, text=True,
                              timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              check=False)

    def spawn_as(self, i: int, argv: list[str], *, log: Path | None = None
                 ) -> subprocess.Popen[bytes]:
        """Start argv as host i's user in the background, for servers a test needs.

        setuid happens in the child before exec (no runuser in between), so the
        returned PID is the server's own and can be stopped by PID.
        """
        host = self.host(i)
        out: int | IO[bytes] = subprocess.DEVNULL
        if log is not None:
            out = open(log, "ab")  # noqa: SIM115 -- the child holds it; closed below
        try:
            return subprocess.Popen(argv, cwd=host.home, env=self.user_env(i),
                                    user=host.uid, group=host.gid, extra_groups=[],
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if not isinstance(out, int):
                out.close()

    def user_env(self, i: int) -> dict[str, str]:
        """A login-like environment: root's HOME or PATH must not leak to a host user."""
        host = self.host(i)
        return {"HOME": str(host.home), "USER": host.user, "LOGNAME": host.user,
                "SHELL": "/bin/bash", "LANG": "C.UTF-8",
                "PATH": "/usr/local/bin:/usr/bin:/bin"}

    # -- fault injection ---------------------------------------------------------------

    def hang(self, i: int) -> None:
        """Freeze host i's listening sshd: the kernel still accepts, nobody says SSH-."""
        self._signal_sshd(i, signal.SIGSTOP)
        process = self.host(i).process
        assert process is not None
        _wait_stopped([process.pid])

    def resume(self, i: int) -> None:
        self._signal_sshd(i, signal.SIGCONT)

    def hang_sessions(self, i: int) -> list[int]:
        """Freeze host i's open sessions and everything its user runs; return the PIDs.

        This is a host that accepted a deploy and then stopped answering mid-step, which
        a hung listener alone cannot show.
        """
        pids = self._host_pids(i)
        for pid in pids:
            _signal(pid, signal.SIGSTOP)
        _wait_stopped(pids)
        return pids

    def resume_sessions(self, i: int) -> list[int]:
        pids = self._host_pids(i)
        for pid in pids:
            _signal(pid, signal.SIGCONT)
        return pids

    def rotate_host_key(self, i: int) -> str:
        """Give host i a new host key, leaving known_hosts alone; return its SHA256.

        To the client this is a host whose identity changed: a strict client refuses it.
        """
        host = self.host(i)
        self._rotations += 1
        key = self.root / f"hostkey{i}.r{self._rotations}"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{host.alias}-rotated",
              "-f", str(key)], replace=key)
        self._stop_sshd(host)
        host.host_key = key
        self._start_sshd(host)
        self._wait_banner(host)
        return self.fingerprint(i)

    def trust(self, i: int) -> None:
        """Put host i's current key in known_hosts, as an operator accepting it would.

        Only host i's line changes: another host's rotated key stays distrusted.
        """
        host = self.host(i)
        name = f"[{host.address}]:{host.port} "
        lines = [_known_hosts_line(host) if line.startswith(name) else line
                 for line in self.known_hosts.read_text().splitlines(keepends=True)]
        self.known_hosts.write_text("".join(lines))

    def fingerprint(self, i: int) -> str:
        """SHA256 fingerprint of host i's current host key, as ssh prints it."""
        out = _run(["ssh-keygen", "-l", "-E", "sha256", "-f",
                    f"{self.host(i).host_key}.pub"]).stdout
        return out.split()[1]

    # -- processes of the lab users ----------------------------------------------------

    def user_pids(self, i: int) -> list[int]:
        """PIDs of every process running as host i's user."""
        uid = self.host(i).uid
        return [pid for pid in _pids() if uid in _uids_of(pid)]

    def session_pids(self, i: int) -> list[int]:
        """PIDs of host i's per-connection sshd processes (`sshd: ubhostN [priv]`, ...).

        The [priv] half runs as root, so killing the user's processes alone would
        leave it behind when its child was frozen.
        """
        prefix = f"sshd: {self.host(i).user}"
        found = []
        for pid in _pids():
            cmdline = _cmdline(pid)
            if cmdline.startswith(prefix) and cmdline[len(prefix):][:1] in ("", " ", "@"):
                found.append(pid)
        return found

    def reap(self, i: int, timeout: float = REAP_TIMEOUT) -> None:
        """SIGKILL host i's sessions and user processes until none is left (bounded).

        Each PID is killed on its own (what `pkill -KILL -u` would do, without a broad
        match); the loop catches children forked while it ran.
        """
        deadline = time.monotonic() + timeout
        while True:
            pids = self._host_pids(i)
            if not pids:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"processes of {self.host(i).user} survive SIGKILL: {pids}")
            for pid in pids:
                _signal(pid, signal.SIGKILL)
            time.sleep(POLL)

    def _host_pids(self, i: int) -> list[int]:
        """Sessions first (so a frozen one is killed before its children), no repeats."""
        return list(dict.fromkeys(self.session_pids(i) + self.user_pids(i)))

    # -- internals ---------------------------------------------------------------------

    def _take_lock(self) -> None:
        if self._lock is not None:
            return
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        lock = open(LOCK_PATH, "ab")  # noqa: SIM115 -- held until _release_lock
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    lock.close()
                    raise RuntimeError(f"another SSH lab holds {LOCK_PATH} for over "
                                       f"{self.lock_timeout:.0f}s") from None
                time.sleep(0.2)
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None

    def _prepare_host(self, host: LabHost) -> None:
        if not _user_exists(host.user):
            _run(["useradd", "-m", "-d", str(host.home), "-s", "/bin/bash", host.user])
        # A locked account ('!' in shadow) is refused by sshd with UsePAM no.
        _run(["usermod", "-p", "*", host.user])
        self.reap(host.index)  # a crashed earlier run may have left its apps running
        _refuse_mounts_under(host.home)
        if host.home.exists():
            shutil.rmtree(host.home)
        host.home.mkdir(mode=0o755, parents=True)
        os.chmod(host.home, 0o755)  # mkdir's mode is masked by the umask
        ssh_dir = host.home / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        keys = ssh_dir / "authorized_keys"
        keys.write_text(Path(f"{self.client_key}.pub").read_text())
        keys.chmod(0o600)
        for path in (host.home, ssh_dir, keys):
            os.chown(path, host.uid, host.gid)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.alias,
              "-f", str(host.host_key)], replace=host.host_key)

    def _write_sshd_config(self, host: LabHost) -> None:
        host.config.write_text("\n".join([
            f"ListenAddress {host.address}:{host.port}",
            f"HostKey {host.host_key}",
            f"PidFile {self.root / f'sshd{host.index}.pid'}",
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            "PubkeyAuthentication yes",
            "AuthorizedKeysFile .ssh/authorized_keys",
            f"AllowUsers {host.user}",
            "Subsystem sftp internal-sftp",
            # Deploy tools open many connections at once; the default 10:30:100 drops
            # some of them, which would be the lab's fault, not the tool's.
            "MaxStartups 100:30:200",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "LogLevel VERBOSE",
            "",
        ]))

    def _start_sshd(self, host: LabHost) -> None:
        self._write_sshd_config(host)
        # -D: stay in the foreground, so the PID is ours and the daemon is our child.
        host.process = subprocess.Popen(
            [SSHD, "-D", "-f", str(host.config), "-E", str(host.log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def _wait_banner(self, host: LabHost, timeout: float = READY_TIMEOUT) -> None:
        """Wait until the port accepts and answers SSH-: a bound port alone is not ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert host.process is not None
            if host.process.poll() is not None:
                raise RuntimeError(f"sshd for {host.alias} exited "
                                   f"{host.process.returncode}:\n{_tail(host.log)}")
            try:
                with socket.create_connection((host.address, host.port), timeout=1.0) as sock:
                    sock.settimeout(max(0.1, deadline - time.monotonic()))
                    if sock.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(POLL)
        raise RuntimeError(f"sshd for {host.alias} gave no banner within {timeout}s:\n"
                           f"{_tail(host.log)}")

    def _stop_sshd(self, host: LabHost) -> None:
        process = host.process
        if process is None or process.poll() is not None:
            return
        _signal(process.pid, signal.SIGCONT)  # a hung (stopped) sshd cannot act on TERM
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)

    def _signal_sshd(self, i: int, signum: int) -> None:
        process = self.host(i).process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"sshd of host {i} is not running")
        os.kill(process.pid, signum)

    def _write_known_hosts(self) -> None:
        self.known_hosts.write_text("".join(_known_hosts_line(host) for host in self.hosts))

    def _write_ssh_config(self) -> None:
        blocks = []
        for host in self.hosts:
            blocks.append("\n".join([
                f"Host {host.alias}",
                f"    HostName {host.address}",
                f"    Port {host.port}",
                f"    User {host.user}",
                f"    IdentityFile {self.client_key}",
                "    IdentitiesOnly yes",
                f"    UserKnownHostsFile {self.known_hosts}",
                # The machine's own known_hosts must not vouch for a lab host.
                "    GlobalKnownHostsFile /dev/null",
                "    StrictHostKeyChecking yes",
                "    BatchMode yes",
                "    ConnectTimeout 10",
                "    ControlMaster no",
                "",
            ]))
        self.ssh_config.write_text("\n".join(blocks))
        self.ssh_config.chmod(0o644)  # ssh refuses a config others can write


def _run(argv: list[str], *, replace: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a setup command, failing loudly; `replace` is a key file to overwrite."""
    if replace is not None:
        for path in (replace, Path(f"{replace}.pub")):
            path.unlink(missing_ok=True)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                            stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{argv} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _known_hosts_line(host: LabHost) -> str:
    keytype, key = Path(f"{host.host_key}.pub").read_text().split()[:2]
    return f"[{host.address}]:{host.port} {keytype} {key}\n"


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _refuse_mounts_under(home: Path) -> None:
    """Stop before wiping a home that has a filesystem mounted in it (a test's tmpfs)."""
    prefix = f"{home}/"
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            target = line.split()[1]
            if target == str(home) or target.startswith(prefix):
                raise RuntimeError(f"{target} is mounted under {home}; unmount it first")


def _pids() -> list[int]:
    """Live PIDs other than ours; zombies are dead already, and a zombie child of
    this process (a spawn_as server not yet waited for) cannot be killed again."""
    me = os.getpid()
    return [pid for pid in (int(name) for name in os.listdir("/proc") if name.isdigit())
            if pid != me and not _is_zombie(pid)]


def _state(pid: int) -> str:
    """The one-letter state from /proc/PID/stat; "" once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The state follows the command name, which is in parentheses and may hold
            # spaces or parentheses itself.
            return stat.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return ""


def _is_zombie(pid: int) -> bool:
    return _state(pid) in ("Z", "X", "")


def _wait_stopped(pids: list[int], timeout: float = STOP_TIMEOUT) -> None:
    """Wait until every PID is stopped or gone: kill() returns before a busy or
    sleeping process has taken the signal, and a test must not race that."""
    deadline = time.monotonic() + timeout
    while any(_state(pid) not in ("T", "t", "Z", "X", "") for pid in pids):
        if time.monotonic() >= deadline:
            raise RuntimeError(f"not stopped after {timeout}s: "
                               f"{[(pid, _state(pid)) for pid in pids]}")
        time.sleep(0.01)


def _uids_of(pid: int) -> set[int]:
    """The real and effective UIDs from /proc/PID/status.

    Not the owner of /proc/PID: sshd makes its session processes non-dumpable, and
    the kernel then shows their /proc entries as root's.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("Uid:"):
                    return {int(field) for field in line.split()[1:3]}
    except (FileNotFoundError, ProcessLookupError):
        pass
    return set()


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # it exited between the scan and the signal


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return "(no log)"
