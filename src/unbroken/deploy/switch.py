"""Switching one host to a release, and back, as one journalled transaction.

`activate` writes the journal (what `current` and `previous` were), starts a watchdog,
switches `current`, asks the master for a gated reload, checks that the generation now
serving was resolved to exactly this release and its interpreter, watches it for the
soak window (a worker that dies after Ready fails it), and asks it over HTTP with the
configured Host header. Any failure puts the host back at once. The switch is "commit
confirmed": a host the deploy stops talking to (no confirm, no lease heartbeat for
`confirm_timeout`) is put back by its watchdog, so a dropped link or a killed
orchestrator never leaves a host half-switched or alone on the new release.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
from typing import Any

from unbroken.control.client import ControlUnavailable, call
from unbroken.deploy import service
from unbroken.deploy.hostfiles import (
    AgentError,
    append_history,
    host_lock,
    keep_lease,
    read_json,
    write_json,
)
from unbroken.deploy.layout import Layout, link_target, point, unpoint

ARGUMENTS_ENV = "UNBROKEN_AGENT_ARGS"  # how the watchdog gets its request (no stdin)
SOAK_POLL = 0.2
WATCHDOG_POLL = 1.0
WATCHDOG_LIFETIME = 24 * 3600.0


def master_status(layout: Layout, timeout: float = 5.0) -> dict[str, Any] | None:
    try:
        reply = call(layout.control, "status", timeout=timeout)
    except (ControlUnavailable, OSError):
        return None
    return reply.data if reply.ok else None


def master_summary(layout: Layout) -> dict[str, Any] | None:
    status = master_status(layout)
    return summarize(status) if status is not None else None


def summarize(status: dict[str, Any]) -> dict[str, Any]:
    """What a deploy needs of a master's status: above all, which release it serves."""
    generation = status.get("generations", {}).get(str(status.get("generation")), {})
    return {"pid": status["master_pid"], "phase": status["phase"],
            "generation": status["generation"], "directory": generation.get("directory"),
            "release": os.path.basename(generation.get("directory") or "") or None,
            "workers": sum(1 for w in status["workers"]
                           if w["generation"] == status["generation"]),
            "binds": status.get("binds", [])}


def _journal(layout: Layout, deploy_id: str) -> dict[str, Any] | None:
    return read_json(layout.journal(deploy_id))


def _save(layout: Layout, journal: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(layout.journal("x")), exist_ok=True)
    write_json(layout.journal(journal["deploy_id"]), journal)


def _requests(status: dict[str, Any]) -> dict[int, int]:
    return {w["pid"]: w["requests"] for w in status["workers"]}


class _Counter:
    """Requests served by every worker, old and new, while this host switched: the
    highest count seen of each worker PID, less what it had already served."""

    def __init__(self, status: dict[str, Any] | None) -> None:
        self.baseline = _requests(status) if status else {}
        self.highest = dict(self.baseline)

    def sample(self, status: dict[str, Any] | None) -> None:
        for pid, count in (_requests(status) if status else {}).items():
            self.highest[pid] = max(count, self.highest.get(pid, 0))

    @property
    def served(self) -> int:
        return sum(count - self.baseline.get(pid, 0) for pid, count in self.highest.items())


def activate(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    release_id, deploy_id = args["release"], args["deploy_id"]
    if not os.path.exists(layout.manifest(release_id)):
        raise AgentError(f"release {release_id} is not prepared on this host")
    started = time.monotonic()
    with host_lock(layout):
        journal = _journal(layout, deploy_id)
        if journal is not None and journal["state"] in ("reverted", "rolled back"):
            # The orchestrator rolled this host back before this switch got the lock (an
            # interrupt right as the switch was sent, a slow host): never switch after it.
            raise AgentError(f"deploy {deploy_id} was already rolled back on this host; "
                             "not switching")
        if journal is None:
            journal = {"deploy_id": deploy_id, "release": release_id,
                       "before": {"current": link_target(layout.current),
                                  "previous": link_target(layout.previous)},
                       "state": "switching", "confirmed": False, "started": time.time(),
                       "confirm_timeout": float(args["confirm_timeout"])}
            _save(layout, journal)
        before = journal["before"]["current"]
        counter = _Counter(master_status(layout))
        if before and before != release_id:
            point(layout.previous, before)
        point(layout.current, release_id)
        journal["state"] = "switched"
        _save(layout, journal)
        try:
            generation = _serve(layout, release_id, args, counter)
        except Exception as error:
            details = getattr(error, "details", "")
            try:
                _put_back(layout, journal, args, counter)
            except Exception as second:
                journal["state"] = "diverged"
                _save(layout, journal)
                raise AgentError(f"{error}; and putting the host back failed: {second}",
                             f"{details}\n{getattr(second, 'details', '')}") from None
            journal["state"] = "reverted"
            _save(layout, journal)
            raise
        journal["state"] = "active"
        _save(layout, journal)
    return {"generation": generation, "seconds": round(time.monotonic() - started, 2),
            "requests": counter.served, "before": before}


def _serve(layout: Layout, release_id: str, args: dict[str, Any], counter: _Counter) -> int:
    """Make the master serve `release_id` (reload, or a first start) and prove it does."""
    want = os.path.realpath(layout.release(release_id))
    status = master_status(layout)
    if status is None:
        service.start(layout, float(args.get("timeout", 300)))
    else:
        summary = summarize(status)
        if not (summary["directory"] == want and status["phase"] == "serving"):
            reply = call(layout.control, "reload", timeout=float(args.get("timeout", 300)))
            if not reply.ok:
                raise AgentError(f"reload refused: {reply.message}", reply.details)
    return _verify(layout, release_id, args, counter)


def _verify(layout: Layout, release_id: str, args: dict[str, Any], counter: _Counter) -> int:
    want = os.path.realpath(layout.release(release_id))
    python = os.path.join(want, ".venv", "bin", "python")
    status = master_status(layout)
    if status is None:
        raise AgentError("the master does not answer on its control socket")
    counter.sample(status)
    number = status["generation"]
    generation = status.get("generations", {}).get(str(number), {})
    if generation.get("directory") != want:
        raise AgentError(f"the master serves {generation.get('directory')}, not {want}")
    if generation.get("python") != python:
        raise AgentError(f"the master's workers run {generation.get('python')}, not {python}")
    _soak(layout, number, float(args.get("soak", 0)), counter)
    _ask_http(status, args.get("health_path"), args.get("health_host"),
              float(args.get("health_timeout", 5)))
    return int(number)


def _serving_pids(status: dict[str, Any], number: int) -> set[int]:
    return {w["pid"] for w in status["workers"]
            if w["generation"] == number and w["state"] == "ready"}


def _soak(layout: Layout, number: int, seconds: float, counter: _Counter) -> None:
    """A release that passes its probe and dies a second later fails here, not in
    production: the generation must keep the same ready workers for the whole window."""
    status = master_status(layout)
    pids = _serving_pids(status, number) if status else set()
    deadline = time.monotonic() + seconds
    while True:
        if status is None:
            raise AgentError("the master stopped answering while the release was watched")
        counter.sample(status)
        now_pids = _serving_pids(status, number)
        if status["generation"] != number:
            raise AgentError(f"generation {number} stopped serving during the soak window")
        if now_pids != pids or not pids:
            gone = len(pids - now_pids)
            raise AgentError(f"{gone or 'a'} worker(s) of generation {number} died within "
                         f"{seconds:g}s of serving", service.log_tail(layout))
        if time.monotonic() >= deadline:
            return
        time.sleep(SOAK_POLL)
        status = master_status(layout)


def _ask_http(status: dict[str, Any], path: str | None, host: str | None,
              timeout: float) -> None:
    """The release answers on the service's own address, with the Host header the app
    checks (Django's ALLOWED_HOSTS rejects an IP)."""
    binds = [b for b in status.get("binds", []) if not b.startswith("unix:")]
    if not binds:
        return
    address = binds[0]
    name, _, port = address.rpartition(":")
    name = name.strip("[]")
    connection = http.client.HTTPConnection(name, int(port), timeout=timeout)
    try:
        connection.request("GET", path or "/", headers={"Host": host or address,
                                                        "Connection": "close"})
        response = connection.getresponse()
        body = response.read(2000)
    except OSError as error:
        raise AgentError(f"GET {path or '/'} on {address}: {error}") from None
    finally:
        connection.close()
    failed = response.status >= 300 if path else response.status >= 500
    if failed:
        raise AgentError(f"GET {path or '/'} on {address} (Host: {host or address}) answered "
                     f"{response.status}", body.decode(errors="replace"))


def _put_back(layout: Layout, journal: dict[str, Any], args: dict[str, Any],
              counter: _Counter) -> None:
    """Restore `current` and `previous` as the journal found them, and the master's
    generation with them; no network, no install: the old release is all still here."""
    before = journal["before"]
    if before["previous"]:
        point(layout.previous, before["previous"])
    else:
        unpoint(layout.previous)
    if before["current"] is None:
        unpoint(layout.current)
        service.stop(layout)
        return
    point(layout.current, before["current"])
    want = os.path.realpath(layout.release(before["current"]))
    summary = master_summary(layout)
    if summary is None:
        service.start(layout, float(args.get("timeout", 300)))
    elif summary["directory"] != want or summary["phase"] != "serving":
        reply = call(layout.control, "reload", timeout=float(args.get("timeout", 300)))
        if not reply.ok:
            raise AgentError(f"reload back to {before['current']} refused: {reply.message}",
                         reply.details)
    _verify(layout, before["current"], {**args, "soak": 0}, counter)


def rollback(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    """Undo this deploy's switch on this host; a no-op if it never switched."""
    started = time.monotonic()
    with host_lock(layout):
        journal = _journal(layout, args["deploy_id"])
        if journal is None or journal["state"] in ("reverted", "rolled back", "switching"):
            if journal is None:
                # No switch began here yet, but one may still be on its way (sent just
                # before the interrupt; its process not yet started): leave a fence, so
                # that it refuses instead of switching after this rollback.
                current = link_target(layout.current)
                journal = {"deploy_id": args["deploy_id"], "release": None,
                           "before": {"current": current,
                                      "previous": link_target(layout.previous)},
                           "state": "reverted", "confirmed": True, "started": time.time(),
                           "confirm_timeout": 0.0}
                _save(layout, journal)
            elif journal["state"] == "switching":
                # cut off before `current` moved: nothing to undo, say so for good
                journal["state"] = "reverted"
                _save(layout, journal)
            return {"changed": False, "release": link_target(layout.current)}
        counter = _Counter(master_status(layout))
        _put_back(layout, journal, args, counter)
        journal["state"] = "rolled back"
        journal["confirmed"] = True
        _save(layout, journal)
    return {"changed": True, "release": journal["before"]["current"],
            "seconds": round(time.monotonic() - started, 2), "requests": counter.served}


def confirm(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    with host_lock(layout):
        journal = _journal(layout, args["deploy_id"])
        if journal is None:
            return {"confirmed": False}
        if journal["state"] != "active":
            raise AgentError(f"cannot confirm: this host's switch is {journal['state']}")
        journal["confirmed"] = True
        _save(layout, journal)
    return {"confirmed": True}


def start_watchdog(layout: Layout, deploy_id: str) -> None:
    """A process of its own session that outlives this SSH channel and this agent; its
    output goes to a file, so the channel closes as soon as the agent answers."""
    os.makedirs(layout.logs, exist_ok=True)
    log = os.path.join(layout.logs, f"watchdog-{deploy_id}.log")
    arguments = json.dumps({"deploy_to": layout.deploy_to, "app": layout.app,
                            "deploy_id": deploy_id})
    os.posix_spawn(
        sys.executable, [sys.executable, "-m", "unbroken.deploy.agent", "watchdog"],
        {**os.environ, ARGUMENTS_ENV: arguments},
        file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                      (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                       0o600),
                      (os.POSIX_SPAWN_DUP2, 1, 2)],
        setsid=True)


def watchdog(layout: Layout, args: dict[str, Any]) -> dict[str, Any]:
    """Started with the lease: when the deploy goes silent, undo what it left here.

    A switched, unconfirmed host is put back once the lease has had no heartbeat for
    `confirm_timeout`; an unswitched host just lets the stale lease go (after its TTL),
    so a killed deploy leaves nothing locked and no host alone on a new release.
    """
    deploy_id = args["deploy_id"]
    born = time.monotonic()
    while time.monotonic() - born < WATCHDOG_LIFETIME:
        time.sleep(WATCHDOG_POLL)
        lease = read_json(layout.lease)
        journal = _journal(layout, deploy_id)
        ours = bool(lease and lease.get("deploy_id") == deploy_id)
        silent = time.time() - float(lease.get("heartbeat", 0)) if ours and lease else None
        if not unconfirmed(journal):
            if not ours:
                return {"outcome": "not needed"}
            assert lease is not None and silent is not None
            if not lease.get("diverged") and silent > float(lease["ttl"]):
                _expire(layout, deploy_id)
                return {"outcome": "lease expired"}
            continue
        assert journal is not None
        if ours and silent is not None and silent <= float(journal["confirm_timeout"]):
            continue
        outcome = _revert(layout, deploy_id)
        if outcome:
            return {"outcome": outcome}
    return {"outcome": "gave up"}


def unconfirmed(journal: dict[str, Any] | None) -> bool:
    """A switch of this deploy that nobody confirmed or undid yet."""
    return bool(journal and not journal["confirmed"]
                and journal["state"] in ("switched", "active"))


def _expire(layout: Layout, deploy_id: str) -> None:
    with host_lock(layout):
        lease = read_json(layout.lease)
        if lease and lease.get("deploy_id") == deploy_id and not lease.get("diverged"):
            os.unlink(layout.lease)
            append_history(layout, {"event": "lease expired", "deploy_id": deploy_id,
                                    "holder": lease.get("holder")})


def _revert(layout: Layout, deploy_id: str) -> str | None:
    with host_lock(layout, wait=False) as locked:
        if not locked:
            return None  # a step is running now; look again after it
        journal = _journal(layout, deploy_id)
        if journal is None or not unconfirmed(journal):
            return None
        try:
            _put_back(layout, journal, {"timeout": 300}, _Counter(None))
        except Exception as error:
            journal["state"] = "diverged"
            _save(layout, journal)
            keep_lease(layout, deploy_id, f"watchdog could not put back: {error}")
            return "diverged"
        journal["state"] = "reverted"
        _save(layout, journal)
        append_history(layout, {"event": "reverted by watchdog", "deploy_id": deploy_id,
                                "release": journal["before"]["current"]})
        lease = read_json(layout.lease)
        if lease and lease.get("deploy_id") == deploy_id:
            os.unlink(layout.lease)
    return "reverted"
