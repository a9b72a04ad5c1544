"""The master->worker record (worker/spec.py): every engine setting is fed, and a
setting given to the master is what the worker's engine gets."""

from __future__ import annotations

from dataclasses import fields, replace

from unbroken.config import Config
from unbroken.engines import EngineSettings
from unbroken.worker.spec import FROM_CONFIG, WorkerSpec, spec_for, unfed_engine_settings


def test_every_engine_setting_is_fed_from_a_setting_or_named_as_engine_only() -> None:
    assert unfed_engine_settings() == set()
    config_fields = {f.name for f in fields(Config)}
    assert set(FROM_CONFIG.values()) <= config_fields


def test_settings_reach_the_engine_and_survive_the_trip_through_the_environment() -> None:
    config = replace(Config(), app="app:app", threads=3, header_timeout=7.0,
                     limit_request_line=1234, proxy_protocol=True, certfile="c.pem",
                     keyfile="k.pem", max_requests=10, boot_nice=7)
    spec = spec_for(config, max_requests=12)
    assert isinstance(spec.engine, EngineSettings)
    assert (spec.engine.threads, spec.engine.header_timeout) == (3, 7.0)
    assert spec.engine.limit_request_line == 1234 and spec.engine.proxy_protocol
    assert spec.engine.url_scheme == "https" and spec.engine.certfile.endswith("/c.pem")  # type: ignore[union-attr]
    assert spec.max_requests == 12 and spec.boot_nice == 7
    assert WorkerSpec.from_env(spec.to_env()) == spec
