"""What deploys to 3 hosts cost the clients of the load balancer: today's, and `unbroken
deploy`'s when it works and when it must refuse or roll back.

Run (as root): python bench/deploy_compare.py [--scenarios rsync-restart,unbroken-deploy,...]
                   [--health-checks] [--json] [--keep]
(all scenarios: about 2.5 minutes)

The fleet is tests/support/sshlab.py: three sshd "hosts" (users ubhost1..3 on
127.0.0.2-4:2222) with strict host keys, behind HAProxy on 127.0.0.1 (round robin; no
health checks, as a plain config has none, unless --health-checks). Each host runs its
own supervisord as the host user, with a program `gunicorn -w 2 -b 127.0.0.N:18000
--chdir ~/app app:app`. The app answers its release (`v1`/`v2`) and takes 2 s to import,
like a real app's boot.

Every scenario starts from the same state: supervisord and gunicorn restarted from
scratch with v1 on all three hosts, all three answering. Then load starts on HAProxy
(8 clients, half keep-alive; tests/support/fleetload.py) and v2 is deployed host after
host, the way a Fabric script does it, with the system ssh/rsync and the lab's
ssh_config. The load runs until every host answers v2 (bounded) and one second more,
so a gap the deploy leaves behind it is counted too.

| scenario | deploy of v2, per host |
|---|---|
| rsync-restart | `rsync -a` the app into ~/app; `ssh hN supervisorctl restart app` |
| rsync-hup | `rsync -a`; `ssh hN 'kill -HUP $(cat ~/gunicorn.pid)'`; wait until hN answers v2 |

The `unbroken deploy` scenarios run in a second lab session (the hosts start empty
again; both kinds of app serve on 127.0.0.N:18000): the project of
tests/support/deployproject.py, a git repository whose commits are the releases, with
deploy.toml pointing at the lab's ssh_config and known_hosts; the CLI runs from its
folder, as `python -m unbroken deploy [--json] ...`, from a copy of src/unbroken taken
when the session starts (the deploy refuses hosts set up by another build, so an edit
of src/ during the run must not reach it). `deploy setup` and a first deploy of v1 run
once, unmeasured; then each scenario commits a release and runs the command under the
same load (WARMUP before, TAIL after), in this order, each leaving every host on one
release (checked with `deploy status --json` and each host's answer):

| scenario | what happens | expected exit |
|---|---|---|
| unbroken-deploy | v1 -> v2 (2 s import, same pins), batches [1, 50%], soak 2 s | 0 |
| unbroken-import-error | the release fails to import on h2 only | 1, no switch |
| unbroken-after-switch | the release crashes 1 s after Ready on h3 only | 3, all rolled back |
| unbroken-unsatisfiable | requirements.txt `six==1.16.0` and `six==1.17.0` | 1, before traffic |
| unbroken-hung-host | h2's sshd SIGSTOPped for the deploy | 1, fast |
| unbroken-two-at-once | a second deploy once the first holds the lease | first 0, second 75 |
| unbroken-rollback-offline | `deploy rollback`, hosts' uv index at 127.0.0.1:9 | 0 |
| unbroken-host-key | h3's host key changed, known_hosts not | 1, no change |

Under that table: the uv step (`seconds.install` in the `--json` summary) per host, of
the first deploy (v1: a cache that only `deploy setup` has filled) and of
unbroken-deploy's (warm: the same pins). A wrong exit code is shown with the deploy's
stderr and its last JSON lines.

Each scenario is a function in SCENARIOS: `(lab, haproxy, workdir) -> ScenarioResult`.
Every wait is bounded (a baseline scenario stays under SCENARIO_BUDGET seconds, an
unbroken deploy command is killed after DEPLOY_TIMEOUT), the bench's traffic stays on
127.0.0.0/8, and every process is stopped by PID (the lab kills whatever runs as a host
user when it stops).

Packages on the hosts: for the baselines, each host gets a venv from /usr/bin/python3
(the root pyenv is not readable by the host users) and a copy, over rsync+ssh, of
gunicorn and supervisor as installed in this Python environment, with no request off
this machine. For unbroken, `deploy setup` and each release's install run the hosts'
own uv, which fetches unbroken's dependencies and the releases' pins (six) from the
package index, as on real hosts.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))
sys.path.insert(0, str(REPO / "src"))
# After the sys.path lines above.
from deployproject import APP_PORT as PROJECT_PORT  # noqa: E402
from deployproject import Project, Ran  # noqa: E402
from fleetload import FleetLoad, FleetResult  # noqa: E402
from haproxy import HAProxy  # noqa: E402
from sshlab import LOCK_PATH, LabHost, SSHLab, skip_reason  # noqa: E402

SYSTEM_PYTHON = "/usr/bin/python3"
APP_PORT = 18000
BOOT_SECONDS = 2.0
SCENARIO_BUDGET = 60.0  # seconds from the reset of the hosts to the end of the load
COMMAND_TIMEOUT = 30.0
READY_TIMEOUT = 20.0  # supervisord + gunicorn + a 2 s import, on 2 busy CPUs
CONVERGE_TIMEOUT = 15.0
CONVERGED_STREAK = 3  # answers in a row on fresh connections, so no old worker is left
WARMUP = 1.0  # load before the deploy starts, so every kind of client is connected
TAIL = 1.0  # load after the last host answers v2
PROBE_TIMEOUT = 2.0
# What the hosts need from this environment's site-packages.
HOST_PACKAGES = ("gunicorn", "supervisor", "packaging")

APP_SOURCE = '''\
"""The benchmark app: says its release; importing it takes {boot} s, like a real boot."""

import time

RELEASE = "{release}"
time.sleep({boot})


def app(environ, start_response):
    body = b"ok\\n" if environ.get("PATH_INFO") == "/healthz" else RELEASE.encode() + b"\\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body))), ("X-Release", RELEASE)])
    return [body]
'''

SUPERVISORD_CONF = """\
[unix_http_server]
file={home}/supervisor.sock
chmod=0700

[supervisord]
logfile={home}/logs/supervisord.log
pidfile={home}/supervisord.pid
childlogdir={home}/logs
directory={home}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{home}/supervisor.sock

[program:app]
command={command}
directory={home}/app
autostart=true
autorestart=true
startsecs=1
stopwaitsecs=10
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={home}/logs/app.log
"""

SUPERVISORCTL = "venv/bin/python -m supervisor.supervisorctl -c supervisord.conf"


@dataclass
class ScenarioResult:
    """One deploy under load. exit_code is the deploy's (0: every step succeeded)."""

    name: str
    description: str
    total: int
    failed: int
    failures: dict[str, int]
    answers: dict[str, int]
    deploy_seconds: float
    converged_seconds: float | None  # from the deploy's start until all hosts said v2
    exit_code: int
    p99: float  # seconds, over the whole load
    max_latency: float
    final: dict[str, str] = field(default_factory=dict)  # host alias -> release
    notes: list[str] = field(default_factory=list)
    # The `unbroken deploy` scenarios only (None / empty for the baselines):
    expected_exit: int | None = None
    exits: dict[str, int] = field(default_factory=dict)  # when one scenario runs 2 deploys
    expected_exits: dict[str, int] = field(default_factory=dict)
    walls: dict[str, float] = field(default_factory=dict)  # seconds, each of those deploys
    consistent: str = ""  # "v2": every host on one release; else what is wrong
    install_seconds: dict[str, dict[str, float]] = field(default_factory=dict)  # cold/warm
    output_tail: str = ""  # the deploy's stderr and last JSON lines, on a wrong exit


Scenario = Callable[[SSHLab, HAProxy, Path], ScenarioResult]
Step = Callable[[SSHLab, LabHost, Path, float], int]


# -- host setup ------------------------------------------------------------------------


def write_release(workdir: Path, release: str) -> Path:
    """A local release directory, as a checkout the user deploys from."""
    directory = workdir / "releases" / release
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.py").write_text(APP_SOURCE.format(release=release, boot=BOOT_SECONDS))
    return directory


def run(argv: list[str], timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=max(1.0, timeout),
                          stdin=subprocess.DEVNULL, check=False)


def checked(argv: list[str], timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a setup command that must work; a failure here is the bench's, not a result."""
    result = run(argv, timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {result.returncode}: "
                           f"{(result.stderr or result.stdout).strip()[-1500:]}")
    return result.stdout


def rsync(lab: SSHLab, sources: list[str], host: LabHost, target: str,
          timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return run(["rsync", "-a", "--exclude", "__pycache__", "-e", " ".join(lab.ssh_command),
                *sources, f"{host.alias}:{target}"], timeout)


def provision(lab: SSHLab) -> None:
    """Give each host a venv with gunicorn and supervisor (once per run, not measured)."""
    spec = importlib.util.find_spec("gunicorn")
    if spec is None or spec.origin is None:
        raise RuntimeError("gunicorn is not installed here (pip install -e '.[test]')")
    site = Path(spec.origin).resolve().parents[1]
    sources = [str(path) for name in HOST_PACKAGES
               for path in sorted(site.glob(f"{name}*")) if path.name.split("-")[0] == name]
    for host in lab.hosts:
        checked([*lab.ssh_command, host.alias, f"{SYSTEM_PYTHON} -m venv --without-pip venv"])
        purelib = checked([*lab.ssh_command, host.alias, "venv/bin/python -c 'import sysconfig;"
                           " print(sysconfig.get_path(\"purelib\"))'"]).strip()
        copied = rsync(lab, sources, host, f"{purelib}/")
        if copied.returncode != 0:
            raise RuntimeError(f"copying packages to {host.alias}: {copied.stderr}")
        checked([*lab.ssh_command, host.alias,
                 "venv/bin/python -c 'import gunicorn, supervisor'"])


def reset_hosts(lab: SSHLab, workdir: Path) -> None:
    """Every host from scratch: no process left, v1 in ~/app, a new supervisord."""
    v1 = write_release(workdir, "v1")
    for host in lab.hosts:
        lab.reap(host.index)
        checked([*lab.ssh_command, host.alias,
                 "rm -rf app logs supervisord.* supervisor.sock gunicorn.pid && mkdir app logs"])
        conf = workdir / f"supervisord-{host.alias}.conf"
        command = (f"{host.home}/venv/bin/python -m gunicorn -w 2 -b {host.address}:{APP_PORT}"
                   f" --chdir {host.home}/app --pid {host.home}/gunicorn.pid app:app")
        conf.write_text(SUPERVISORD_CONF.format(home=host.home, command=command))
        for source, target in ((f"{v1}/", "app/"), (str(conf), "supervisord.conf")):
            copied = rsync(lab, [source], host, target)
            if copied.returncode != 0:
                raise RuntimeError(f"rsync to {host.alias}: {copied.stderr}")
        checked([*lab.ssh_command, host.alias, "venv/bin/python -m supervisor.supervisord"
                 " -c supervisord.conf </dev/null >/dev/null 2>&1"])
    for host in lab.hosts:
        if not wait_release(host, "v1", READY_TIMEOUT):
            log = lab.run_as(host.index, ["tail", "-n", "30", "logs/app.log"]).stdout
            raise RuntimeError(f"{host.alias} never answered v1:\n{log}")


# -- probing the hosts directly --------------------------------------------------------


def probe(host: LabHost) -> str | None:
    """The release host answers on a fresh connection, None if it does not answer."""
    connection = http.client.HTTPConnection(host.address, APP_PORT, timeout=PROBE_TIMEOUT)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        body = response.read().decode(errors="replace").strip()
        return body if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def wait_release(host: LabHost, release: str, timeout: float) -> bool:
    """True once host answers `release` CONVERGED_STREAK times in a row (bounded)."""
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline:
        streak = streak + 1 if probe(host) == release else 0
        if streak >= CONVERGED_STREAK:
            return True
        time.sleep(0.05)
    return False


# -- one deploy under load -------------------------------------------------------------


def deploy_under_load(lab: SSHLab, haproxy: HAProxy, workdir: Path, name: str,
                      description: str, step: Step) -> ScenarioResult:
    """Reset to v1, then deploy v2 host after host with `step` while HAProxy is loaded.

    Like a Fabric script, the deploy stops at the first step that fails and that
    step's exit code is the deploy's.
    """
    budget_end = time.monotonic() + SCENARIO_BUDGET
    reset_hosts(lab, workdir)
    v2 = write_release(workdir, "v2")
    notes: list[str] = []
    load = FleetLoad(haproxy.port, clients=8, max_seconds=max(1.0, budget_end - time.monotonic()))
    load.start()
    try:
        time.sleep(WARMUP)
        started = time.monotonic()
        exit_code = 0
        for host in lab.hosts:
            exit_code = step(lab, host, v2, budget_end - time.monotonic())
            if exit_code != 0:
                notes.append(f"{host.alias}: step failed with {exit_code}; deploy stopped")
                break
        deploy_seconds = time.monotonic() - started
        converged = all(wait_release(host, "v2", min(CONVERGE_TIMEOUT,
                                                      budget_end - time.monotonic()))
                        for host in lab.hosts)
        converged_seconds = time.monotonic() - started if converged else None
        time.sleep(TAIL)
    finally:
        result: FleetResult = load.stop()
    if result.seconds >= SCENARIO_BUDGET - 1:
        notes.append("the load hit the scenario's time cap")
    return ScenarioResult(
        name=name, description=description, total=result.total, failed=result.failed,
        failures=result.failures, answers=result.answers, deploy_seconds=deploy_seconds,
        converged_seconds=converged_seconds, exit_code=exit_code, p99=result.p99,
        max_latency=result.max_latency,
        final={host.alias: probe(host) or "no answer" for host in lab.hosts}, notes=notes)


def ssh_step(lab: SSHLab, host: LabHost, command: str, remaining: float) -> int:
    try:
        return run([*lab.ssh_command, host.alias, command],
                   min(COMMAND_TIMEOUT, remaining)).returncode
    except subprocess.TimeoutExpired:
        return 124


def rsync_step(lab: SSHLab, host: LabHost, release: Path, remaining: float) -> int:
    try:
        return rsync(lab, [f"{release}/"], host, "app/", min(COMMAND_TIMEOUT, remaining)
                     ).returncode
    except subprocess.TimeoutExpired:
        return 124


def restart_step(lab: SSHLab, host: LabHost, release: Path, remaining: float) -> int:
    started = time.monotonic()
    code = rsync_step(lab, host, release, remaining)
    if code == 0:
        code = ssh_step(lab, host, f"{SUPERVISORCTL} restart app",
                        remaining - (time.monotonic() - started))
    return code


def hup_step(lab: SSHLab, host: LabHost, release: Path, remaining: float) -> int:
    started = time.monotonic()
    code = rsync_step(lab, host, release, remaining)
    if code == 0:
        code = ssh_step(lab, host, "kill -HUP $(cat ~/gunicorn.pid)",
                        remaining - (time.monotonic() - started))
    if code == 0:
        left = remaining - (time.monotonic() - started)
        code = 0 if wait_release(host, "v2", min(CONVERGE_TIMEOUT, left)) else 1
    return code


def rsync_restart(lab: SSHLab, haproxy: HAProxy, workdir: Path) -> ScenarioResult:
    return deploy_under_load(lab, haproxy, workdir, "rsync-restart",
                             "rsync + supervisorctl restart app, host after host",
                             restart_step)


def rsync_hup(lab: SSHLab, haproxy: HAProxy, workdir: Path) -> ScenarioResult:
    return deploy_under_load(lab, haproxy, workdir, "rsync-hup",
                             "rsync + kill -HUP gunicorn master, wait for v2, next host",
                             hup_step)


# -- unbroken deploy -------------------------------------------------------------------
#
# Its own lab session (see main()): the project of tests/support/deployproject.py, a git
# repository whose commits are the releases, deployed with the CLI from its folder as a
# user types it. `deploy setup` and a first deploy of v1 happen once, unmeasured (the v1
# deploy's uv install is the cold-cache figure); then each scenario commits a release,
# runs the deploy command under load and checks that every host is on one release.

DEPLOY_TIMEOUT = SCENARIO_BUDGET  # one `unbroken deploy` command (the happy path: ~17 s)
LEASE_TIMEOUT = 30.0  # for the first of two deploys to take the lease
HUNG_FAST = 15.0  # a hung host must fail the deploy faster than this (connect_timeout 3)
TAIL_JSON_LINES = 4
TAIL_CHARS = 1500
SHARED_ENV = "APP_MODE=test\n"
BREAK_ENV = "BREAK_HERE=1\n"
UV_DEFAULT = "native-tls = true\n"
UV_OFFLINE = 'index-url = "http://127.0.0.1:9/simple"\nnative-tls = true\n'


def tail(ran: Ran) -> str:
    """What the owner of the tool needs when the exit code is not the expected one."""
    lines = [line if len(line) <= TAIL_CHARS else line[:TAIL_CHARS] + " …"
             for line in ran.stdout.splitlines() if line.startswith("{")]
    stderr = ran.stderr.strip()
    return "\n".join([f"exit {ran.code} after {ran.seconds:.1f} s",
                      f"stderr (last {TAIL_CHARS} chars):",
                      stderr[-TAIL_CHARS:] or "(empty)",
                      f"last {TAIL_JSON_LINES} JSON lines:",
                      *(lines[-TAIL_JSON_LINES:] or ["(none)"])])


def snapshot_tool(target: Path) -> tuple[dict[str, str], str]:
    """Copy src/unbroken to target/unbroken; returns the environment that runs the deploy
    CLI from that copy, and which build it is.

    The deploy ships a wheel of the unbroken it runs from and refuses a host set up with
    another build, so an edit of src/ during the run would fail every later deploy: one
    run measures one build.
    """
    shutil.copytree(REPO / "src" / "unbroken", target / "unbroken",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(target), *filter(None, [os.environ.get("PYTHONPATH")])])}
    head = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).stdout.strip()
    changed = run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src/unbroken"]
                  ).stdout.split()[1::2]
    return env, f"{head or '?'}" + (f" + uncommitted {', '.join(changed)}" if changed else "")


def start_deploy(root: Path, arguments: tuple[str, ...], env: dict[str, str]
                 ) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "unbroken", "deploy", *arguments],
                            cwd=root, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish_deploy(process: subprocess.Popen[str], started: float,
                  timeout: float = DEPLOY_TIMEOUT) -> Ran:
    """Wait for a deploy (bounded); past the bound, kill its process group: exit 124."""
    try:
        out, err = process.communicate(timeout=max(1.0, timeout))
        code = process.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate(timeout=10)
        code = 124
        err += f"\n[bench] killed after {timeout:.0f} s"
    return Ran(code, out, err, time.monotonic() - started)


def switched(ran: Ran) -> list[str]:
    return [e["host"] for e in ran.events() if e.get("event") == "step"
            and e.get("step") == "switch" and e.get("phase") == "start"]


def install_times(ran: Ran) -> dict[str, float]:
    """Per host, the uv step of the prepare (`seconds.install` in the summary)."""
    return {row["host"]: row["seconds"]["install"] for row in ran.summary().get("hosts", [])
            if "install" in row.get("seconds", {})}


@dataclass
class UnbrokenFleet:
    lab: SSHLab
    haproxy: HAProxy
    project: Project
    env: dict[str, str]  # runs the CLI from the run's snapshot of src/unbroken
    commits: dict[str, str] = field(default_factory=dict)  # commit -> version it answers
    cold_install: dict[str, float] = field(default_factory=dict)

    def commit(self, version: str, **knobs: Any) -> None:
        self.commits[self.project.commit(version, **knobs)] = version

    def deploy(self, *arguments: str, timeout: float = DEPLOY_TIMEOUT) -> Ran:
        started = time.monotonic()
        return finish_deploy(start_deploy(self.project.root, arguments, self.env), started,
                             timeout)

    def status(self) -> tuple[list[dict[str, Any]], str]:
        ran = self.deploy("status", "--json", timeout=COMMAND_TIMEOUT)
        if ran.code != 0:
            return [], f"`deploy status --json` exit {ran.code}: {ran.stderr.strip()[-300:]}"
        try:
            return json.loads(ran.stdout), ""
        except json.JSONDecodeError as error:
            return [], f"`deploy status --json` printed no JSON: {error}"

    def version_of(self, release: str) -> str:
        manifest = self.lab.host(1).home / "shop" / "releases" / release / "RELEASE.json"
        try:
            commit = json.loads(manifest.read_text())["commit"]
        except (OSError, ValueError, KeyError):
            return f"release {release}"
        return self.commits.get(commit, f"commit {commit[:8]}")

    def check(self) -> tuple[str | None, str]:
        """(version, "") when every host's `current`, master and HTTP answer name one
        release; (None, what is wrong) otherwise."""
        rows, problem = self.status()
        if problem:
            return None, problem
        currents = {row.get("current") for row in rows}
        if len(currents) != 1 or None in currents:
            return None, "current differs: " + ", ".join(
                f"{row.get('host')}={row.get('current')}" for row in rows)
        (current,) = currents
        for row in rows:
            master = row.get("master") or {}
            if master.get("release") != current or master.get("phase") != "serving":
                return None, (f"{row.get('host')}: master {master.get('release')} "
                              f"{master.get('phase')}, current {current}")
            if row.get("lease") is not None:
                return None, f"{row.get('host')}: lease still held: {row['lease']}"
        version = self.version_of(str(current))
        answers = {host.alias: probe(host) or "no answer" for host in self.lab.hosts}
        wrong = {alias: answer for alias, answer in answers.items()
                 if answer.split(" ")[0] != version}
        if wrong:
            return None, f"current is {version} but the apps answer {wrong}"
        return version, ""


_FLEETS: dict[Path, UnbrokenFleet] = {}


def unbroken_fleet(lab: SSHLab, haproxy: HAProxy, workdir: Path) -> UnbrokenFleet:
    """The lab's project, set up and on v1 (once per lab, not measured)."""
    if lab.root in _FLEETS:
        return _FLEETS[lab.root]
    if PROJECT_PORT != APP_PORT:
        raise RuntimeError(f"deployproject serves on {PROJECT_PORT}, HAProxy has {APP_PORT}")
    root = workdir / f"unbroken-{lab.root.parent.name}"
    env, build = snapshot_tool(root / "tool")
    print(f"... unbroken under test: {build} (a copy of src/unbroken, taken now)",
          file=sys.stderr, flush=True)
    project = Project(root, lab)
    for host in lab.hosts:
        project.shared_env(host.index, SHARED_ENV)
    fleet = UnbrokenFleet(lab, haproxy, project, env)
    fleet.commit("v1")
    for arguments in (("setup",), ("--json",)):
        ran = fleet.deploy(*arguments)
        if ran.code != 0:
            raise RuntimeError(f"`unbroken deploy {' '.join(arguments)}` while setting up "
                               f"the fleet:\n{tail(ran)}")
        print(f"... `unbroken deploy {' '.join(arguments)}` (fleet setup, not measured): "
              f"{ran.seconds:.1f} s", file=sys.stderr, flush=True)
    fleet.cold_install = install_times(ran)
    version, problem = fleet.check()
    if version != "v1":
        raise RuntimeError(f"the fleet is not on v1 after its first deploy: {problem}")
    _FLEETS[lab.root] = fleet
    return fleet


T = TypeVar("T")


def under_load(haproxy: HAProxy, action: Callable[[], T]) -> tuple[T, FleetResult]:
    """action() (the deploy commands) with 8 clients on HAProxy, WARMUP before, TAIL after."""
    load = FleetLoad(haproxy.port, clients=8,
                     max_seconds=WARMUP + LEASE_TIMEOUT + 2 * DEPLOY_TIMEOUT + TAIL)
    load.start()
    try:
        time.sleep(WARMUP)
        outcome = action()
        time.sleep(TAIL)
    finally:
        result = load.stop()
    return outcome, result


def unbroken_result(fleet: UnbrokenFleet, name: str, description: str, load: FleetResult,
                    rans: dict[str, Ran], expected: dict[str, int], final: str | None,
                    notes: list[str]) -> ScenarioResult:
    """The row of one scenario. The last deploy in `rans` gives exit_code; `final` is the
    release every host must be on afterwards."""
    main = list(rans)[-1]
    wrong = [key for key in rans if rans[key].code != expected[key]]
    for key, ran in rans.items():
        message = ran.summary().get("message")
        hosts = switched(ran)
        label = f"{key}: " if len(rans) > 1 else ""
        notes.append(f"{label}switch started on {', '.join(hosts)}" if hosts
                     else f"{label}no host switched")
        if message:
            notes.append(f"{label}summary: {message[:300]}")
    version, problem = fleet.check()
    if version is None:
        consistent = f"NOT consistent: {problem}"
    elif final is not None and version != final:
        consistent = f"all on {version}, expected {final}"
    else:
        consistent = f"all on {version}"
    return ScenarioResult(
        name=name, description=description, total=load.total, failed=load.failed,
        failures=load.failures, answers=load.answers, deploy_seconds=rans[main].seconds,
        converged_seconds=None, exit_code=rans[main].code, p99=load.p99,
        max_latency=load.max_latency,
        final={host.alias: probe(host) or "no answer" for host in fleet.lab.hosts},
        notes=notes, expected_exit=expected[main],
        exits={key: ran.code for key, ran in rans.items()} if len(rans) > 1 else {},
        expected_exits=dict(expected) if len(rans) > 1 else {},
        walls={key: ran.seconds for key, ran in rans.items()} if len(rans) > 1 else {},
        consistent=consistent,
        output_tail="\n\n".join(f"[{key}] {tail(rans[key])}" for key in wrong))


def one_deploy(lab: SSHLab, haproxy: HAProxy, workdir: Path, name: str, description: str,
               expected: int, arrange: Callable[[UnbrokenFleet], None],
               restore: Callable[[UnbrokenFleet], None] | None = None,
               arguments: tuple[str, ...] = ("--json",),
               final: Callable[[UnbrokenFleet, str], str] | None = None,
               inspect: Callable[[Ran], list[str]] | None = None) -> ScenarioResult:
    """arrange(), then the deploy command under load, then restore() (always).

    final(fleet, version before) is the release every host must end on; by default the
    one before (for a deploy that must not switch, or must roll back). inspect(ran)
    gives the scenario's own notes."""
    fleet = unbroken_fleet(lab, haproxy, workdir)
    before, problem = fleet.check()
    notes = [f"fleet not consistent BEFORE the scenario: {problem}"] if problem else []
    expected_final = final(fleet, before or "?") if final else before

    def action() -> Ran:
        arrange(fleet)
        try:
            return fleet.deploy(*arguments)
        finally:
            if restore is not None:
                restore(fleet)

    ran, load = under_load(haproxy, action)
    if inspect is not None:
        notes.extend(inspect(ran))
    result = unbroken_result(fleet, name, description, load, {"deploy": ran},
                             {"deploy": expected}, expected_final, notes)
    if name == "unbroken-deploy":
        result.install_seconds = {"cold": fleet.cold_install, "warm": install_times(ran)}
    return result


def unbroken_deploy(lab: SSHLab, haproxy: HAProxy, workdir: Path) -> ScenarioResult:
    # The same pins as v1 (six 1.16.0), so the uv step runs on a warm cache.
    return one_deploy(
        lab, haproxy, workdir, "unbroken-deploy",
        "v1 -> v2 (2 s import), batches [1, 50%], soak 2 s", 0,
        lambda fleet: fleet.commit("v2", import_delay=BOOT_SECONDS),
        final=lambda fleet, before: "v2")


def unbroken_import_error(lab: SSHLab, haproxy: HAProxy, workdir: Path) -> ScenarioResult:
    def arrange(fleet: UnbrokenFleet) -> None:
        fleet.project.shared_env(2, BREAK_ENV)
        fleet.commit("v3-broken", fail_import=True)

    return one_deploy(lab, haproxy, workdir, "unbroken-import-error",
                      "release fails to import on h2 only", 1, arrange,
                      lambda fleet: fleet.project.shared_env(2, SHARED_ENV))


def unbroken_after_switch(lab: SSHLab, haproxy: HAProxy, workdir: Path) -> ScenarioResult:
    def arrange(fleet: UnbrokenFleet) -> None:
        fleet.project.shared_env(3, BREAK_ENV)
        fleet.commit("v4-crashes", crash_after=1.0)

    def inspect(ran: Ran) -> list[str]:
        rolled = [e["host"] for e in ran.events() if e.get("event") == "step"
                  and e.get("step") == "rollback" and e.get("phase") == "end"
                  and e.get("outcome") == "ok"]
        left = [host for host in switched(ran) if host not in rolled and host != "h3"]
        return [f"rolled back: {', '.join(rolled) or 'none'}"] + (
            [f"switched but NOT rolled back: {', '.join(left)}"] if left else [])

    return one_deploy(lab, haproxy, workdir, "unbroken-after-switch",
                      "release crashes 1 s after Ready on h3 only", 3, arrange,
                      lambda fleet: fleet.project.shared_env(3, SHARED_ENV), inspect=inspect)


def unbroken_unsatisfiable(lab: SSHLab, haproxy: HAProxy, workdir: Path) -> ScenarioResult:
    return one_deploy(
        lab, haproxy, workdir, "unbroken-unsatisfiable",
        "requirements.txt six==1.16.0 + six==1.17.0", 1,
        lambda fleet: fleet.commit("v5-unsat", requirements="six==1.16.0\nsix==1.17.0\n"))


def unbroken_hung_host(lab: SSHLab, haproxy: HAProxy, workdir: Path) -> ScenarioResult:
    def arrange(fleet: UnbrokenFleet) -> None:
        fleet.commit("v6")
        fleet.lab.hang(2)

    def inspect(ran: Ran) -> list[str]:
        return [f"NOT fast: {ran.seconds:.1f} s >= {HUNG_FAST:.0f} s"] \
            if ran.seconds >= HUNG_FAST else []

    return one_deploy(lab, haproxy, workdir, "unbroken-hung-host",
                      "h2's sshd SIGSTOPped during the deploy", 1, arrange,
                      lambda fleet: fleet.lab.resume(2), inspect=inspect)


def unbroken_two_at_once(lab: SSHLab, haproxy: HAProxy, workdir: Path) -> ScenarioResult:
    fleet = unbroken_fleet(lab, haproxy, workdir)
    before, problem = fleet.check()
    notes = [f"fleet not consistent BEFORE the scenario: {problem}"] if problem else []
    fleet.commit("v7", import_delay=1.5)
    lease = lab.host(1).home / "shop" / ".unbroken" / "lease.json"

    def action() -> dict[str, Ran]:
        started = time.monotonic()
        first = start_deploy(fleet.project.root, ("--json",), fleet.env)
        try:
            deadline = started + LEASE_TIMEOUT
            while not lease.exists() and first.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if not lease.exists():
                notes.append(f"the first deploy held no lease on h1 after "
                             f"{time.monotonic() - started:.1f} s")
            else:
                notes.append(f"second deploy started {time.monotonic() - started:.1f} s "
                             "after the first")
            second = fleet.deploy("--json")
        finally:
            ran = finish_deploy(first, started)
        return {"first": ran, "second": second}

    rans, load = under_load(haproxy, action)
    if rans["second"].code == 75:
        refused = [e for e in rans["second"].events() if e.get("event") == "locked"]
        holder = (refused[0].get("holder") or {}).get("deploy_id") if refused else None
        if holder is None or holder != rans["first"].summary().get("deploy_id"):
            notes.append(f"the refusal names holder {holder}, the first deploy is "
                         f"{rans['first'].summary().get('deploy_id')}")
    return unbroken_result(fleet, "unbroken-two-at-once", "a second deploy while v7 deploys",
                           load, rans, {"first": 0, "second": 75},
                           "v7" if before is not None else None, notes)


def unbroken_rollback_offline(lab: SSHLab, haproxy: HAProxy, workdir: Path
                              ) -> ScenarioResult:
    fleet = unbroken_fleet(lab, haproxy, workdir)
    rows, _ = fleet.status()
    if rows and not rows[0].get("previous"):  # run alone: a release to go back from first
        fleet.commit("v2")
        fleet.deploy("--json")

    def previous(fleet: UnbrokenFleet, before: str) -> str:
        rows, problem = fleet.status()
        release = rows[0].get("previous") if rows else None
        return fleet.version_of(str(release)) if release else f"? ({problem or 'none'})"

    def offline(fleet: UnbrokenFleet) -> None:
        for host in fleet.lab.hosts:
            fleet.project.uv_config(host.index, UV_OFFLINE)

    def online(fleet: UnbrokenFleet) -> None:
        for host in fleet.lab.hosts:
            fleet.project.uv_config(host.index, UV_DEFAULT)

    return one_deploy(lab, haproxy, workdir, "unbroken-rollback-offline",
                      "`deploy rollback`, package index unreachable from the hosts", 0,
                      offline, online, arguments=("rollback", "--json"), final=previous)


def unbroken_host_key(lab: SSHLab, haproxy: HAProxy, workdir: Path) -> ScenarioResult:
    fingerprints: list[str] = []

    def arrange(fleet: UnbrokenFleet) -> None:
        fleet.commit("v8")
        fingerprints.append(fleet.lab.fingerprint(3))
        fingerprints.append(fleet.lab.rotate_host_key(3))

    def inspect(ran: Ran) -> list[str]:
        text = ran.stdout + ran.stderr
        shown = [fingerprint for fingerprint in fingerprints if fingerprint in text]
        return [f"fingerprints shown: {len(shown)} of 2 (old, new)"]

    return one_deploy(lab, haproxy, workdir, "unbroken-host-key",
                      "h3's host key changed (not in known_hosts)", 1, arrange,
                      lambda fleet: fleet.lab.trust(3), inspect=inspect)


SCENARIOS: dict[str, Scenario] = {
    "rsync-restart": rsync_restart,
    "rsync-hup": rsync_hup,
    "unbroken-deploy": unbroken_deploy,
    "unbroken-import-error": unbroken_import_error,
    "unbroken-after-switch": unbroken_after_switch,
    "unbroken-unsatisfiable": unbroken_unsatisfiable,
    "unbroken-hung-host": unbroken_hung_host,
    "unbroken-two-at-once": unbroken_two_at_once,
    "unbroken-rollback-offline": unbroken_rollback_offline,
    "unbroken-host-key": unbroken_host_key,
}
UNBROKEN = tuple(name for name in SCENARIOS if name.startswith("unbroken-"))


# -- report ----------------------------------------------------------------------------


def kinds_of(result: ScenarioResult) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in result.failures.items()) or "-"


def describe(result: ScenarioResult) -> str:
    kinds = kinds_of(result)
    if result.expected_exit is not None:
        exits = (", ".join(f"{key} {code}" for key, code in result.exits.items())
                 if result.exits else str(result.exit_code))
        walls = (", ".join(f"{key} {seconds:.1f}s" for key, seconds in result.walls.items())
                 if result.walls else f"{result.deploy_seconds:.1f}s")
        return (f"{result.name}: exit {exits} (expected {expected_text(result)}); "
                f"{result.failed} failed / {result.total} ({kinds}); deploy "
                f"{walls}; {result.consistent}; "
                f"p99 {result.p99 * 1000:.0f} ms, max {result.max_latency * 1000:.0f} ms; "
                f"answers {result.answers}"
                + (f"; {'; '.join(result.notes)}" if result.notes else ""))
    converged = (f"{result.converged_seconds:.1f}s" if result.converged_seconds is not None
                 else "never")
    return (f"{result.name}: {result.failed} failed / {result.total} ({kinds}); deploy "
            f"{result.deploy_seconds:.1f}s, all v2 after {converged}; exit {result.exit_code}; "
            f"p99 {result.p99 * 1000:.0f} ms, max {result.max_latency * 1000:.0f} ms; "
            f"answers {result.answers}; final {result.final}"
            + (f"; {'; '.join(result.notes)}" if result.notes else ""))


def expected_text(result: ScenarioResult) -> str:
    if result.expected_exits:
        return ", ".join(f"{key} {code}" for key, code in result.expected_exits.items())
    return str(result.expected_exit)


def exit_matches(result: ScenarioResult) -> bool:
    if result.expected_exits:
        return result.exits == result.expected_exits
    return result.exit_code == result.expected_exit


def markdown(results: list[ScenarioResult], health_checks: bool) -> str:
    lines = [f"HAProxy health checks: {'on (GET /healthz)' if health_checks else 'off'}"]
    baselines = [r for r in results if r.expected_exit is None]
    unbroken = [r for r in results if r.expected_exit is not None]
    if baselines or not unbroken:
        lines += ["", "| scenario | failed / total | failures by kind | deploy wall "
                  "| all v2 after | exit | p99 / max latency | final |",
                  "|---|---|---|---|---|---|---|---|"]
    for r in baselines:
        converged = f"{r.converged_seconds:.1f} s" if r.converged_seconds is not None else "never"
        final = " ".join(f"{alias}={release}" for alias, release in r.final.items())
        lines.append(f"| {r.name} | {r.failed} / {r.total} | {kinds_of(r)} | "
                     f"{r.deploy_seconds:.1f} s | {converged} | {r.exit_code} | "
                     f"{r.p99 * 1000:.0f} / {r.max_latency * 1000:.0f} ms | {final} |")
    if unbroken:
        lines += ["", "| scenario | expected exit | exit | failed / total | failures by kind "
                  "| deploy wall | p99 / max latency | fleet after |",
                  "|---|---|---|---|---|---|---|---|"]
    for r in unbroken:
        exits = (", ".join(f"{key} {code}" for key, code in r.exits.items()) if r.exits
                 else str(r.exit_code))
        mark = "" if exit_matches(r) else " **(unexpected)**"
        wall = (", ".join(f"{key} {seconds:.1f} s" for key, seconds in r.walls.items())
                if r.walls else f"{r.deploy_seconds:.1f} s")
        lines.append(f"| {r.name} | {expected_text(r)} | {exits}{mark} | {r.failed} / {r.total}"
                     f" | {kinds_of(r)} | {wall} | {r.p99 * 1000:.0f} / "
                     f"{r.max_latency * 1000:.0f} ms | {r.consistent} |")
    for r in unbroken:
        if r.install_seconds:
            cold, warm = r.install_seconds.get("cold", {}), r.install_seconds.get("warm", {})
            hosts = sorted(set(cold) | set(warm))
            figures = ", ".join(f"{host} {cold.get(host, float('nan')):.2f} s -> "
                                f"{warm.get(host, float('nan')):.2f} s" for host in hosts)
            lines += ["", "uv install step (summary `seconds.install`), first deploy v1 "
                      f"(cold cache) -> second deploy v2 (warm cache): {figures or 'none'}"]
    notes = [r for r in unbroken if r.notes]
    if notes:
        lines += ["", "Notes:"]
        lines += [f"- {r.name}: {'; '.join(r.notes)}" for r in notes]
    for r in unbroken:
        if r.output_tail:
            lines += ["", f"{r.name}: exit {expected_text(r)} expected, got "
                      f"{', '.join(f'{k} {c}' for k, c in r.exits.items()) or r.exit_code}:",
                      "```", r.output_tail, "```"]
    return "\n".join(lines)


@contextlib.contextmanager
def fleet(workdir: Path, health_checks: bool, provision_hosts: bool = True
          ) -> Iterator[tuple[SSHLab, HAProxy]]:
    """A lab session: the hosts are empty at its start and every host process is gone
    at its end. provision_hosts: the baselines' venv with gunicorn and supervisor."""
    started = time.monotonic()
    with SSHLab(workdir / "lab") as lab:
        print(f"... lab up in {time.monotonic() - started:.1f} s (waits for {LOCK_PATH} "
              "while another lab, say the deploy tests, holds it)", file=sys.stderr,
              flush=True)
        if provision_hosts:
            provision(lab)
        backends = [(host.alias, host.address, APP_PORT) for host in lab.hosts]
        with HAProxy(workdir / "haproxy", backends,
                     health_path="/healthz" if health_checks else None,
                     health_host=None if provision_hosts else "shop.example.com") as haproxy:
            yield lab, haproxy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, from: {', '.join(SCENARIOS)}")
    parser.add_argument("--health-checks", action="store_true",
                        help="HAProxy checks GET /healthz every 500 ms (off: a plain config)")
    parser.add_argument("--json", action="store_true",
                        help="JSON on stdout; progress and the table go to stderr")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    reason = skip_reason() or (None if shutil.which("rsync") else "rsync is not installed")
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    report = sys.stderr if args.json else sys.stdout
    workdir = Path(tempfile.mkdtemp(prefix="deploy-compare-"))
    results: list[ScenarioResult] = []
    try:
        # Two lab sessions: the baselines' gunicorn and the unbroken fleet both serve on
        # 127.0.0.{2,3,4}:18000, and a new session starts from empty hosts.
        groups = [([name for name in names if name not in UNBROKEN], "baseline", True),
                  ([name for name in names if name in UNBROKEN], "unbroken", False)]
        for group, label, provision_hosts in groups:
            if not group:
                continue
            started = time.monotonic()
            print(f"... lab session for {label} scenarios", file=sys.stderr, flush=True)
            with fleet(workdir / label, args.health_checks, provision_hosts) as (lab, haproxy):
                for name in group:
                    print(f"... {name}", file=sys.stderr, flush=True)
                    results.append(SCENARIOS[name](lab, haproxy, workdir))
                    print(describe(results[-1]), file=sys.stderr, flush=True)
            print(f"... {label} session: {time.monotonic() - started:.0f} s",
                  file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(markdown(results, args.health_checks), file=report)
    if args.json:
        print(json.dumps([asdict(result) for result in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
