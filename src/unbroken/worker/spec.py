"""What the master tells a new worker: one frozen record, passed as JSON in the environment.

The environment (not argv) so that `ps` stays readable and nothing is parsed twice.

The engine's part is an `EngineSettings`, derived from the configuration here and
only here (`spec_for`): each engine setting comes from the `Config` field named in
`FROM_CONFIG`, or from the TLS settings, or is one no setting declares yet
(`ENGINE_ONLY`: the engine's default holds). A test fails when an engine setting is
in none of them, so a new one cannot be left unfed by accident. `unbroken check`
boots with the same record as a real worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from unbroken.engines import EngineSettings

if TYPE_CHECKING:
    from unbroken.config import Config
    from unbroken.config.hooks import Hooks

ENV_KEY = "UNBROKEN_WORKER"

# EngineSettings field -> the Config field it is fed from.
FROM_CONFIG: dict[str, str] = {
    "threads": "threads",
    "keep_alive_timeout": "keep_alive",
    "header_timeout": "header_timeout",
    "limit_chunk_extensions": "limit_chunk_extensions",
    "body_timeout": "body_timeout",
    "body_min_rate": "body_min_rate",
    "discard_timeout": "discard_timeout",
    "limit_request_line": "limit_request_line",
    "limit_request_fields": "limit_request_fields",
    "limit_request_field_size": "limit_request_field_size",
    "access_log": "access_logfile",
    "access_log_format": "access_log_format",
    "worker_connections": "worker_connections",
    "max_connections": "worker_connections",  # gunicorn's: the clients a worker holds
    "forwarded_allow_ips": "forwarded_allow_ips",
    "proxy_protocol": "proxy_protocol",
}
TLS_FILES = ("certfile", "keyfile", "ca_certs")
FROM_TLS = frozenset({"url_scheme", "cert_reqs", *TLS_FILES})
# EngineSettings field -> the Config field it is fed from, and how its value is read.
CONVERTED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "max_body_size": ("limit_request_body", lambda size: size or None),  # 0: no limit
}
# Engine settings with no declared setting (yet): the engine's defaults apply.
ENGINE_ONLY = frozenset({"limit_request_headers"})


@dataclass(frozen=True)
class WorkerSpec:
    app: str
    worker_class: str
    worker: int
    generation: int
    listeners: tuple[int, ...]
    channel: int
    health_path: str | None = None
    graceful_timeout: float = 30.0
    heartbeat_interval: float = 1.0
    max_requests: int = 0
    loop: str = "auto"  # --loop: auto, asyncio or uvloop
    request_timeout: float = 0.0  # 0: off (worker/request_timeout.py)
    boot_nice: int = 0  # --boot-nice: nice levels lower while booting (worker/priority.py)
    # The master's nice, when the master nices the worker from its start (priority.py
    # rule 4): the nice to go back to at Ready.
    niced_from: int | None = None
    log_level: str = "info"
    engine: EngineSettings = field(default_factory=EngineSettings)
    master_pid: int = 0  # the worker's parent; another parent means the master died
    # gunicorn hooks the worker calls: (name, file, line, import path or None); the
    # worker runs the file again to get them (worker/hooks.py).
    hooks: tuple[tuple[str, str, int, str | None], ...] = ()

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> WorkerSpec:
        data = json.loads(text)
        data["listeners"] = tuple(data["listeners"])
        data["engine"] = EngineSettings(**data["engine"])
        data["hooks"] = tuple(tuple(hook) for hook in data.get("hooks", ()))
        return cls(**data)


def spec_for(config: Config, max_requests: int | None = None,
             hooks: Hooks | None = None) -> WorkerSpec:
    """The record for a worker of `config` (worker, generation, listeners and channel
    are filled in at spawn). `max_requests` is the master's, jitter included."""
    assert config.app is not None, "serve checks that APP or --cmd is given"
    return WorkerSpec(
        app=config.app, worker_class=config.worker_class, loop=config.loop, worker=0,
        generation=0,
        listeners=(), channel=-1, health_path=config.health_path,
        graceful_timeout=config.graceful_timeout,
        heartbeat_interval=min(1.0, config.timeout / 4),
        max_requests=config.max_requests if max_requests is None else max_requests,
        request_timeout=config.request_timeout, boot_nice=config.boot_nice,
        log_level=config.log_level, engine=engine_settings(config),
        hooks=tuple((hook.name, hook.file, hook.line, hook.import_path)
                    for hook in (hooks.running_in("worker") if hooks else ())))


def engine_settings(config: Config) -> EngineSettings:
    values: dict[str, Any] = {engine: getattr(config, name) for engine, name in FROM_CONFIG.items()}
    values |= {engine: read(getattr(config, name)) for engine, (name, read) in CONVERTED.items()}
    return EngineSettings(**values, **_tls_settings(config))


def _tls_settings(config: Config) -> dict[str, Any]:
    """Paths only; the worker reads the files. Made absolute against the master's
    directory (where the command was given), since workers run in the generation's."""
    if not config.certfile:
        return {}
    files = {name: getattr(config, name) for name in TLS_FILES}
    return {"url_scheme": "https", "cert_reqs": config.cert_reqs,
            **{name: os.path.abspath(path) if path else None for name, path in files.items()}}


def unfed_engine_settings() -> set[str]:
    """Engine settings no part of this module accounts for (a test wants none)."""
    return ({f.name for f in fields(EngineSettings)} - set(FROM_CONFIG) - set(CONVERTED)
            - FROM_TLS - ENGINE_ONLY)
