"""The deploy: resolve here, then pre-flight, lock, prepare, check, switch batch by batch
and confirm on every host; on any failure, put every switched host back.

The sequence is fixed and each step is a host-agent call with a deadline, run for all
hosts of a step at once on one event loop. Nothing serves differently until every
host has its release prepared and checked inside the release, so everything that can
fail without traffic (connection, host key, lock, upload, install, import) fails
before the first switch with exit 1. After it, a failure rolls back every host that
switched, in reverse, from its own disk (exit 3); a host that cannot be put back is
named, keeps its lease with the reason (exit 4). A host the deploy loses track of
puts itself back when its lease goes silent (see `switch.watchdog`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from unbroken import __version__
from unbroken.deploy import plan
from unbroken.deploy.config import DeployConfig, Host
from unbroken.deploy.errors import DeployError, LockHeld, StepFailed, reason_of
from unbroken.deploy.report import Reporter, summary_table
from unbroken.deploy.source import Release, Wheel, build_release, build_wheel, holder
from unbroken.deploy.transport import Connection, TransportError

T = TypeVar("T")


class LinkFailed(StepFailed):
    """A step whose host stopped answering: its outcome there is unknown."""
QUICK = 30.0  # seconds for the agent's small steps (info, lock, confirm)
MIN_FREE = 200 * 1024 * 1024  # bytes a host needs beyond the archive for a new venv


@dataclass
class Target:
    """One host during a deploy."""

    host: Host
    connection: Connection | None = None
    deploy_to: str = ""  # absolute, `~` expanded on the host
    address: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    locked: bool = False
    prepared: bool = False
    activated: bool = False  # an activate was sent: its outcome may be unknown
    failed: str = ""

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def tool_python(self) -> str:
        return os.path.join(self.deploy_to, ".unbroken", "venv", "bin", "python")


@dataclass
class Options:
    ref: str | None = None
    hosts: Sequence[str] = ()
    dry_run: bool = False
    lock_wait: float = 0.0
    allow_dirty: bool = False
    to: str | None = None  # rollback target


class Deployer:
    """One run of a deploy command against the configured fleet."""

    def __init__(self, config: DeployConfig, reporter: Reporter, options: Options) -> None:
        self.config = config
        self.reporter = reporter
        self.options = options
        self.deploy_id = f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-" \
            f"{uuid.uuid4().hex[:6]}"
        reporter.deploy_id = self.deploy_id
        self.targets = [Target(host) for host in self._selected()]
        self.heartbeat: asyncio.Task[None] | None = None
        self.lease_lost = ""

    def _selected(self) -> list[Host]:
        if not self.options.hosts:
            return list(self.config.hosts)
        known = {host.name: host for host in self.config.hosts}
        groups = {host.group for host in self.config.hosts}
        chosen: list[Host] = []
        for name in self.options.hosts:
            if name in groups:
                chosen += [h for h in self.config.hosts if h.group == name and h not in chosen]
            elif name in known:
                if known[name] not in chosen:
                    chosen.append(known[name])
            else:
                raise DeployError(f"--hosts: {name} is not a host or group of the config")
        return chosen

    # -- plumbing ----------------------------------------------------------------------

    def note(self, message: str, **data: Any) -> None:
        self.reporter.event("note", message=message, **data)

    @contextlib.asynccontextmanager
    async def step(self, target: Target, name: str) -> AsyncIterator[None]:
        self.reporter.event("step", host=target.name, step=name, phase="start")
        started = time.monotonic()
        try:
            yield
        except BaseException as error:
            reason = error.reason if isinstance(error, StepFailed) else str(error) \
                or type(error).__name__
            self.reporter.event("step", host=target.name, step=name, phase="end",
                                outcome="failed" if not isinstance(error, asyncio.CancelledError)
                                else "interrupted", error=reason,
                                seconds=round(time.monotonic() - started, 3))
            raise
        self.reporter.event("step", host=target.name, step=name, phase="end", outcome="ok",
                            seconds=round(time.monotonic() - started, 3))

    async def call(self, target: Target, step: str, operation: str,
                   within: float = QUICK, **args: Any) -> dict[str, Any]:
        """An agent call that either answers ok or raises StepFailed naming host + step."""
        assert target.connection is not None
        try:
            answer = await target.connection.agent(
                target.tool_python, operation,
                {"deploy_to": target.deploy_to, "app": self.config.app, **args}, within)
        except TransportError as error:
            raise LinkFailed(target.name, step, str(error).removeprefix(f"{target.name}: "),
                             getattr(error, "details", "")) from None
        if not answer.get("ok"):
            raise StepFailed(target.name, step, answer.get("error", "failed"),
                             answer.get("details", ""))
        return answer

    async def each(self, targets: Sequence[Target], work: Callable[[Target], Awaitable[T]]
                   ) -> list[T | BaseException]:
        """Run `work` on every target at once; one host's failure waits for no other."""
        return await asyncio.gather(*(work(t) for t in targets), return_exceptions=True)

    @staticmethod
    def first_failure(results: Sequence[object]) -> BaseException | None:
        for result in results:
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                return result
        return None

    def serve_args(self, target: Target) -> list[str]:
        return shlex.split(self.config.serve_line(target.host, target.address))

    # -- connecting and pre-flight -----------------------------------------------------

    async def connect(self, target: Target) -> None:
        async with self.step(target, "connect"):
            try:
                target.connection = await Connection.open(target.name, self.config.ssh)
            except TransportError as error:
                raise StepFailed(target.name, "connect",
                                 str(error).removeprefix(f"{target.name}: ")) from None
            result = await target.connection.run('printf "%s\\n" "$HOME"', timeout=QUICK)
            home = result.stdout.strip()
            deploy_to = self.config.deploy_to
            if deploy_to == "~" or deploy_to.startswith("~/"):
                deploy_to = home + deploy_to[1:]
            target.deploy_to = deploy_to.rstrip("/")
            target.address = target.connection.address

    async def connect_all(self) -> None:
        failure = self.first_failure(await self.each(self.targets, self.connect))
        if failure:
            raise failure

    async def preflight(self, target: Target, wheel: Wheel | None,
                        release: Release | None) -> None:
        async with self.step(target, "pre-flight"):
            try:
                target.info = await self.call(target, "pre-flight", "info")
            except StepFailed as error:
                if "No such file" in error.reason or "not found" in error.reason \
                        or "no answer" in error.reason:
                    raise StepFailed(target.name, "pre-flight",
                                     f"unbroken is not set up in {target.deploy_to} "
                                     "(run `unbroken deploy setup`)", error.details) from None
                raise
            info = target.info
            if wheel is not None and info.get("tool_wheel") != wheel.sha256:
                raise StepFailed(target.name, "pre-flight",
                                 f"the host runs another build of unbroken ({info['version']}); "
                                 "run `unbroken deploy setup` to bring it to this one")
            if info.get("service") is None:
                raise StepFailed(target.name, "pre-flight",
                                 "no service on this host (run `unbroken deploy setup`)")
            master = info.get("master")
            if master is None and info.get("current"):
                raise StepFailed(target.name, "pre-flight",
                                 f"the master is not running (current is {info['current']}): "
                                 "start the service before deploying")
            if master is not None and master["phase"] != "serving":
                raise StepFailed(target.name, "pre-flight",
                                 f"the master is {master['phase']}, not serving")
            need = MIN_FREE + (len(release.archive) * 3 if release else 0)
            if info["disk_free"] < need:
                raise StepFailed(target.name, "pre-flight",
                                 f"only {info['disk_free'] // 2**20} MiB free in "
                                 f"{target.deploy_to}, {need // 2**20} MiB needed")
            lease = info.get("lease")
            if lease and lease.get("diverged"):
                raise StepFailed(target.name, "pre-flight",
                                 f"locked: {lease['diverged']} (fix it, then "
                                 "`unbroken deploy lock release`)")

    async def preflight_all(self, wheel: Wheel | None, release: Release | None) -> None:
        failure = self.first_failure(await self.each(
            self.targets, lambda t: self.preflight(t, wheel, release)))
        if failure:
            raise failure

    # -- the lock ------------------------------------------------------------------------

    async def lock_all(self) -> None:
        """Lease every host in a fixed order; if any is held, give back what was taken
        (two deploys on disjoint halves must not deadlock: Shipit #254)."""
        deadline = time.monotonic() + self.options.lock_wait
        while True:
            held: tuple[Target, dict[str, Any]] | None = None
            for target in sorted(self.targets, key=lambda t: t.name):
                answer = await self.call(target, "lock", "lock-acquire",
                                         deploy_id=self.deploy_id, holder=holder(),
                                         ttl=self.config.lock.ttl)
                if answer["held"]:
                    held = (target, answer["holder"])
                    break
                target.locked = True
                if answer.get("previous_holder"):
                    self.note(f"{target.name}: took over a stale lock of "
                              f"{answer['previous_holder']['holder']} (deploy "
                              f"{answer['previous_holder']['deploy_id']})")
            if held is None:
                self.heartbeat = asyncio.create_task(self._renew())
                return
            await self.unlock_all()
            if time.monotonic() >= deadline:
                self.reporter.event("locked", host=held[0].name, holder=held[1])
                raise LockHeld(held[0].name, held[1])
            self.note(f"{held[0].name}: locked by {held[1].get('holder')}; waiting")
            await asyncio.sleep(min(2.0, max(0.1, deadline - time.monotonic())))

    async def _renew(self) -> None:
        interval = max(0.5, self.config.lock.ttl / 3)
        while True:
            await asyncio.sleep(interval)
            locked = [t for t in self.targets if t.locked]
            results = await self.each(locked, lambda t: self.call(
                t, "lock", "lock-renew", deploy_id=self.deploy_id))
            for target, result in zip(locked, results, strict=True):
                if isinstance(result, StepFailed) and "lease lost" in result.reason:
                    self.lease_lost = f"{target.name}: {result.reason}"

    async def unlock_all(self) -> None:
        await self.each([t for t in self.targets if t.locked], self._unlock)

    async def _unlock(self, target: Target) -> None:
        await self.call(target, "unlock", "lock-release", deploy_id=self.deploy_id)
        target.locked = False

    def stop_heartbeat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            self.heartbeat = None

    # -- prepare, check, once --------------------------------------------------------------

    async def upload_wheel(self, target: Target, wheel: Wheel) -> str:
        remote = os.path.join(target.deploy_to, ".unbroken", "wheels", wheel.sha256[:16],
                              wheel.name)
        assert target.connection is not None
        if wheel.sha256[:16] not in target.info.get("wheels", []):
            await target.connection.run(
                f"mkdir -p {shlex.quote(os.path.dirname(remote))}", timeout=QUICK)
            await target.connection.put(wheel.data, remote, self.config.ssh.step_timeout)
        return remote

    async def prepare(self, target: Target, release: Release, wheel: Wheel) -> None:
        assert target.connection is not None
        async with self.step(target, "upload"):
            try:
                wheel_path = await self.upload_wheel(target, wheel)
                await target.connection.put(
                    release.archive,
                    os.path.join(target.deploy_to, ".unbroken", "uploads", f"{release.id}.tar"),
                    self.config.ssh.step_timeout)
            except TransportError as error:
                raise StepFailed(target.name, "upload",
                                 str(error).removeprefix(f"{target.name}: ")) from None
        target.prepared = True
        async with self.step(target, "prepare"):
            answer = await self.call(
                target, "prepare", "prepare", within=self.config.ssh.step_timeout + 5,
                release=release.id, sha256=release.sha256, manifest=release.manifest,
                wheel=wheel_path, python=self.config.python, lock=release.lock,
                linked_files=list(self.config.linked_files),
                linked_dirs=list(self.config.linked_dirs), build=self.config.hooks.build,
                env=self.hook_env(target, release.id), timeout=self.config.ssh.step_timeout)
            self.reporter.row(target.name).seconds["install"] = answer.get("install_seconds", 0)

    def hook_env(self, target: Target, release_id: str) -> dict[str, str]:
        return {"UNBROKEN_DEPLOY_ID": self.deploy_id, "UNBROKEN_HOST": target.name,
                "UNBROKEN_RELEASE": release_id}

    async def check(self, target: Target, release_id: str) -> None:
        async with self.step(target, "check"):
            await self.call(target, "check", "check", within=self.config.ssh.step_timeout + 5,
                            release=release_id, serve=self.serve_args(target),
                            health_path=self.config.health.path,
                            timeout=self.config.ssh.step_timeout)

    async def once(self, target: Target, release_id: str) -> None:
        if not self.config.hooks.once:
            return
        async with self.step(target, "once"):
            await self.call(target, "once", "hook", within=self.config.ssh.step_timeout + 5,
                            release=release_id, name="once", command=self.config.hooks.once,
                            env=self.hook_env(target, release_id),
                            timeout=self.config.ssh.step_timeout)

    async def all_or_fail(self, targets: Sequence[Target],
                          work: Callable[[Target], Awaitable[object]]) -> None:
        failure = self.first_failure(await self.each(targets, work))
        if failure:
            raise failure

    # -- switching -----------------------------------------------------------------------

    def switch_args(self, release_id: str) -> dict[str, Any]:
        return {"release": release_id, "deploy_id": self.deploy_id,
                "confirm_timeout": self.config.rollout.confirm_timeout,
                "soak": self.config.rollout.soak, "health_path": self.config.health.path,
                "health_host": self.config.health.host,
                "health_timeout": self.config.health.timeout,
                "timeout": self.config.ssh.step_timeout}

    async def activate(self, target: Target, release_id: str) -> None:
        async with self.step(target, "switch"):
            target.activated = True
            answer = await self.call(target, "switch", "activate",
                                     within=self.config.ssh.step_timeout + 30,
                                     **self.switch_args(release_id))
            row = self.reporter.row(target.name)
            row.release, row.requests = release_id, answer.get("requests")

    async def roll_out(self, release_id: str) -> None:
        """Batch by batch; after each, the failures so far are held against max_fail."""
        failed = 0
        for number, batch in enumerate(plan.batches(self.targets, self.config.rollout.batches),
                                       1):
            self.note(f"batch {number}: {', '.join(t.name for t in batch)}")
            results = await self.each(batch, lambda t: self.activate(t, release_id))
            for target, result in zip(batch, results, strict=True):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                if isinstance(result, BaseException):
                    target.failed = str(result)
                    failed += 1
            if self.lease_lost:
                raise DeployError(f"lock lost: {self.lease_lost}")
            if plan.too_many_failures(failed, len(self.targets), self.config.rollout.max_fail):
                raise next(r for r in results if isinstance(r, BaseException)) \
                    if any(isinstance(r, BaseException) for r in results) \
                    else DeployError(f"{failed} host(s) failed")
            for target in batch:
                if target.failed:  # within max_fail: this one goes back alone
                    await self.each([target], self.rollback_one)

    async def rollback_one(self, target: Target) -> None:
        """Undo this deploy's switch on one host. A lost link is not a stopped step (the
        remote switch may still be running): connect again and ask; the agent's rollback
        waits for that switch to end, then undoes it."""
        async with self.step(target, "rollback"):
            try:
                answer = await self._rollback(target)
            except LinkFailed as error:
                self.note(f"{target.name}: {error.reason}; connecting again to roll back")
                await self.reconnect(target)
                answer = await self._rollback(target)
            row = self.reporter.row(target.name)
            row.release = answer.get("release")

    async def _rollback(self, target: Target) -> dict[str, Any]:
        return await self.call(target, "rollback", "rollback",
                               within=self.config.ssh.step_timeout + 30,
                               **self.switch_args(""))

    async def reconnect(self, target: Target, attempts: int = 3) -> None:
        if target.connection is not None:
            target.connection.close()
        for attempt in range(attempts):
            try:
                target.connection = await Connection.open(target.name, self.config.ssh)
                return
            except TransportError as error:
                if attempt == attempts - 1:
                    raise LinkFailed(target.name, "rollback",
                                     str(error).removeprefix(f"{target.name}: ")) from None
                await asyncio.sleep(1.0)

    async def rollback_all(self) -> list[str]:
        """Every host that was sent an activate goes back, whatever it answered; the
        agent's rollback waits for a switch still running there, then undoes it."""
        switched = [t for t in reversed(self.targets) if t.activated]
        if not switched:
            return []
        self.note(f"rolling back {', '.join(t.name for t in switched)}")
        results = await self.each(switched, self.rollback_one)
        stranded = []
        for target, result in zip(switched, results, strict=True):
            if isinstance(result, BaseException):
                stranded.append(target.name)
                with contextlib.suppress(DeployError):
                    await self.call(target, "lock", "lock-diverged", deploy_id=self.deploy_id,
                                    holder=holder(),
                                    reason=f"deploy {self.deploy_id} could not roll back: "
                                    f"{result}")
                target.locked = False  # the lease stays, with the reason
        return stranded

    # -- the whole deploy ---------------------------------------------------------------------

    async def guarded(self, work: Callable[[], Awaitable[int]]) -> int:
        """Any failure before the first switch still ends in a summary and its code."""
        try:
            return await work()
        except DeployError as error:
            self.reporter.event("failed", message=f"FAILED: {error}", details=error.details)
            self.summary(error.exit_code, str(error), error.details)
            return error.exit_code

    async def deploy(self) -> int:
        return await self.guarded(self._deploy)

    async def _deploy(self) -> int:
        release = build_release(self.config, self.options.ref, self.options.allow_dirty)
        wheel = build_wheel()
        self.note(f"release {release.id} ({release.lock}), {len(release.archive)} bytes, "
                  f"deploy {self.deploy_id}", release=release.id)
        await self.local_hook("local_pre", self.config.hooks.local_pre, release.id)
        return await self.with_fleet(wheel, release,
                                     lambda: self.ship(release, wheel))

    async def with_fleet(self, wheel: Wheel | None, release: Release | None,
                         body: Callable[[], Awaitable[int]], lock: bool = True) -> int:
        """Connect, pre-flight, lock (unless not asked to); run `body`; always unlock
        and close."""
        try:
            await self.connect_all()
            await self.preflight_all(wheel, release)
            if self.options.dry_run:
                return self.dry_run(release)
            if lock:
                await self.lock_all()
            return await body()
        finally:
            self.stop_heartbeat()
            with contextlib.suppress(Exception):
                await self.unlock_all()
            for target in self.targets:
                if target.connection is not None:
                    target.connection.close()

    def dry_run(self, release: Release | None) -> int:
        for number, batch in enumerate(plan.batches(self.targets, self.config.rollout.batches),
                                       1):
            self.note(f"would switch batch {number}: "
                      + ", ".join(f"{t.name} ({t.info.get('current')} -> "
                                  f"{release.id if release else self.options.to})"
                                  for t in batch))
        return plan.exit_code(plan.Verdict(failed=False, switched=0))

    async def ship(self, release: Release, wheel: Wheel) -> int:
        try:
            await self.all_or_fail(self.targets, lambda t: self.prepare(t, release, wheel))
            await self.all_or_fail(self.targets, lambda t: self.check(t, release.id))
            await self.once(self.targets[0], release.id)
            await self.roll_out(release.id)
            await self.all_or_fail([t for t in self.targets if not t.failed],
                                   lambda t: self.call(t, "confirm", "confirm",
                                                       deploy_id=self.deploy_id))
        except (DeployError, asyncio.CancelledError) as error:
            return await self.fail(error, release.id)
        # within max_fail: those hosts went back alone, and the deploy says so
        behind = [t.name for t in self.targets if t.failed]
        message = f"{', '.join(behind)} failed within max_fail and serve(s) the previous " \
            "release" if behind else ""
        await self.finish(release.id, "ok" if not behind else "partial", message)
        await self.local_hook("local_post", self.config.hooks.local_post, release.id)
        self.summary(0, message)
        return 0

    async def fail(self, error: BaseException, release_id: str) -> int:
        interrupted = isinstance(error, asyncio.CancelledError)
        message = "interrupted" if interrupted else str(error)
        self.reporter.event("failed", message=f"FAILED: {message}",
                            details=getattr(error, "details", ""))
        task = asyncio.ensure_future(self._undo(release_id, message))
        # an interrupt must not cut the rollback short: shield it, and wait for it
        while True:
            try:
                stranded = await asyncio.shield(task)
                break
            except asyncio.CancelledError:
                interrupted = True
        switched = sum(1 for t in self.targets if t.activated)
        code = plan.exit_code(plan.Verdict(failed=True, switched=switched,
                                           rollback_failed=tuple(stranded),
                                           interrupted=interrupted))
        self.summary(code, message, getattr(error, "details", ""), stranded)
        return code

    async def _undo(self, release_id: str, message: str) -> list[str]:
        stranded = await self.rollback_all()
        if any(t.activated for t in self.targets) and not stranded:
            self.reporter.event("rolled back", message="every host is back on its previous "
                                "release")
        # the release folders are not used by anything now: take them away
        await self.each([t for t in self.targets if t.prepared and t.name not in stranded],
                        lambda t: self.call(t, "abort", "abort", release=release_id))
        await self.finish(release_id, "failed", message,
                          skip={*stranded, *(t.name for t in self.targets
                                             if t.connection is None)})
        return stranded

    async def finish(self, release_id: str, outcome: str, message: str,
                     skip: set[str] | None = None) -> None:
        self.stop_heartbeat()
        targets = [t for t in self.targets if t.name not in (skip or set())
                   and t.connection is not None]
        await self.each(targets, lambda t: self.call(
            t, "finish", "finish", deploy_id=self.deploy_id, release=release_id,
            keep_releases=self.config.keep_releases, keep=[release_id] if outcome == "ok"
            else [], result={"deploy_id": self.deploy_id, "release": release_id,
                             "outcome": outcome, "message": message, "by": holder(),
                             "unbroken": __version__}))
        for target in targets:
            target.locked = False

    async def local_hook(self, name: str, command: str | None, release_id: str) -> None:
        if not command:
            return
        process = await asyncio.create_subprocess_shell(
            command, cwd=self.config.root,
            env={**os.environ, "UNBROKEN_DEPLOY_ID": self.deploy_id,
                 "UNBROKEN_RELEASE": release_id,
                 "UNBROKEN_HOSTS": ",".join(t.name for t in self.targets)})
        if await process.wait() != 0:
            raise DeployError(f"{name} hook failed with exit status {process.returncode}")

    def summary(self, code: int, message: str, details: str = "",
                stranded: Sequence[str] = ()) -> None:
        rows = [self.reporter.row(t.name) for t in self.targets]
        self.reporter.event("summary", exit_code=code, message=message, details=details,
                            stranded=list(stranded),
                            seconds=round(time.monotonic() - self.reporter.started, 2),
                            hosts=[{"host": r.name, "release": r.release, "seconds": r.seconds,
                                    "requests": r.requests, "error": r.error} for r in rows],
                            table=summary_table(rows))

    # -- rollback by hand ------------------------------------------------------------------

    async def rollback(self) -> int:
        return await self.guarded(lambda: self.with_fleet(None, None, self._switch_back))

    async def _switch_back(self) -> int:
        targets: dict[str, str] = {}
        for target in self.targets:
            wanted = self.options.to or target.info.get("previous")
            if not wanted:
                raise StepFailed(target.name, "rollback", "no previous release to go back to")
            targets[target.name] = wanted
        release_ids = set(targets.values())
        label = release_ids.pop() if len(release_ids) == 1 else "previous"
        try:
            for number, batch in enumerate(
                    plan.batches(self.targets, self.config.rollout.batches), 1):
                self.note(f"batch {number}: {', '.join(t.name for t in batch)}")
                await self.all_or_fail(batch, lambda t: self.activate(t, targets[t.name]))
            await self.all_or_fail(self.targets, lambda t: self.call(
                t, "confirm", "confirm", deploy_id=self.deploy_id))
        except (DeployError, asyncio.CancelledError) as error:
            return await self.fail(error, "")
        await self.finish(label, "ok", "rollback")
        self.summary(0, "")
        return 0

    # -- read-only commands -------------------------------------------------------------------

    async def survey(self, operation: str = "info", **args: Any) -> list[dict[str, Any]]:
        """Connect to every host and ask; unreachable hosts are reported, not fatal."""
        async def one(target: Target) -> dict[str, Any]:
            try:
                await self.connect(target)
                answer = await self.call(target, operation, operation, **args)
            except DeployError as error:
                return {"host": target.name, "error": str(error)}
            finally:
                if target.connection is not None:
                    target.connection.close()
            return {"host": target.name, "deploy_to": target.deploy_to, **answer}
        results = await self.each(self.targets, one)
        return [r if isinstance(r, dict) else {"error": str(r)} for r in results]

    async def check_only(self) -> int:
        async def work() -> int:
            code = await self.with_fleet(build_wheel(), None, self._report_leases, lock=False)
            self.summary(code, "")
            return code
        return await self.guarded(work)

    async def _report_leases(self) -> int:
        for target in self.targets:
            lease = target.info.get("lease")
            if lease:
                self.note(f"{target.name}: locked by {lease.get('holder')} "
                          f"(deploy {lease.get('deploy_id')})")
        return 0

    async def release_locks(self) -> list[dict[str, Any]]:
        return await self.survey("lock-release", force=True, holder=holder())


def run_interruptible(work: Awaitable[int]) -> int:
    """Run a deploy; SIGINT and SIGTERM cancel it, which rolls back, then 130."""
    async def main() -> int:
        task = asyncio.ensure_future(work)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return 130
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
    return asyncio.run(main())


class Setup(Deployer):
    """`deploy setup`: directories, the host's own unbroken (and uv, when the host has
    none), the service under the host's supervisor. Idempotent: run it again at will."""

    async def setup(self) -> int:
        wheel = build_wheel()
        try:
            await self.connect_all()
            await self.all_or_fail(self.targets, lambda t: self.bootstrap(t, wheel))
        except DeployError as error:
            self.reporter.event("failed", message=f"FAILED: {error}",
                                details=getattr(error, "details", ""))
            self.summary(1, str(error), getattr(error, "details", ""))
            return 1
        finally:
            for target in self.targets:
                if target.connection is not None:
                    target.connection.close()
        self.summary(0, "")
        return 0

    async def shell(self, target: Target, step: str, command: str,
                    timeout: float = QUICK) -> str:
        assert target.connection is not None
        try:
            result = await target.connection.run(command, timeout=timeout)
        except TransportError as error:
            raise StepFailed(target.name, step, str(error)) from None
        if result.status != 0:
            raise StepFailed(target.name, step,
                             reason_of(result.stderr or result.stdout,
                                       f"exit status {result.status}"), result.stderr)
        return result.stdout

    async def bootstrap(self, target: Target, wheel: Wheel) -> None:
        assert target.connection is not None
        state = os.path.join(target.deploy_to, ".unbroken")
        uv = os.path.join(state, "bin", "uv")
        quoted = shlex.quote
        async with self.step(target, "setup"):
            facts = (await self.shell(
                target, "setup",
                f"mkdir -p {quoted(state)}/bin {quoted(state)}/wheels && uname -m && "
                f"(test -x {quoted(uv)} && echo {quoted(uv)} || command -v uv || echo -) && "
                "(test -d /run/systemd/system && echo systemd || echo supervisord) && "
                f"(cat {quoted(state)}/tool.json 2>/dev/null || echo -)")).split("\n")
            arch, host_uv, manager = facts[0].strip(), facts[1].strip(), facts[2].strip()
            if host_uv == "-":
                if arch != os.uname().machine:
                    raise StepFailed(target.name, "setup",
                                     f"no uv on the host and it is {arch}, not "
                                     f"{os.uname().machine}: install uv there")
                await target.connection.put(_local_uv(), uv, self.config.ssh.step_timeout)
                await self.shell(target, "setup", f"chmod 755 {quoted(uv)}")
                host_uv = uv
            wheel_path = os.path.join(state, "wheels", wheel.sha256[:16], wheel.name)
            await self.shell(target, "setup", f"mkdir -p {quoted(os.path.dirname(wheel_path))}")
            await target.connection.put(wheel.data, wheel_path, self.config.ssh.step_timeout)
            venv = os.path.join(state, "venv")
            environment = (f"UV_CACHE_DIR={quoted(target.deploy_to)}/cache/uv "
                           "UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1")
            extras = " supervisor" if manager == "supervisord" else ""
            await self.shell(
                target, "setup",
                f"{environment} {quoted(host_uv)} venv --allow-existing --python "
                f"{quoted(self.config.python)} {quoted(venv)} && {environment} "
                f"{quoted(host_uv)} pip install --python {quoted(venv)}/bin/python "
                f"--reinstall-package unbroken {quoted(wheel_path)}{extras}",
                timeout=self.config.ssh.step_timeout)
            answer = await self.call(target, "setup", "setup", within=180,
                                     serve=self.serve_args(target), wheel=wheel.sha256,
                                     manager=manager)
            self.note(f"{target.name}: {answer['manager']} service {answer['note']}"
                      f"{', started' if answer.get('started') else ''}")


def _local_uv() -> bytes:
    """The uv binary of the deploy extra, for a host that has none."""
    try:
        from uv import find_uv_bin
    except ImportError:
        import shutil

        path = shutil.which("uv")
        if path is None:
            raise DeployError("uv is not installed here (pip install 'unbroken[deploy]')") \
                from None
    else:
        path = find_uv_bin()
    with open(path, "rb") as handle:
        return handle.read()
