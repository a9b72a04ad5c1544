"""TLS settings that cannot work together are refused before any worker starts."""

from __future__ import annotations

from typing import Any

import pytest

from unbroken.config import ConfigError, load_config


def load(**values: Any) -> Any:
    return load_config({"app": "app:app", **values}, environ={})


def test_defaults_are_plain_http() -> None:
    config = load()
    assert (config.certfile, config.keyfile, config.cert_reqs) == (None, None, "none")


def test_certificate_and_key() -> None:
    config = load(certfile="c.pem", keyfile="k.pem", ca_certs="ca.pem", cert_reqs="required")
    assert config.cert_reqs == "required"


@pytest.mark.parametrize(("values", "message"), [
    ({"certfile": "c.pem"}, "TLS needs both --certfile and --keyfile"),
    ({"keyfile": "k.pem"}, "TLS needs both --certfile and --keyfile"),
    ({"cert_reqs": "required", "ca_certs": "ca.pem"}, "--cert-reqs required needs TLS"),
    ({"certfile": "c", "keyfile": "k", "cert_reqs": "optional"}, "needs --ca-certs"),
    ({"certfile": "c", "keyfile": "k", "worker_class": "gevent"}, "not gevent"),
    ({"certfile": "c", "keyfile": "k", "proxy_protocol": True}, "--proxy-protocol with"),
])
def test_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(**values)


def test_cert_reqs_values() -> None:
    with pytest.raises(ConfigError, match="must be one of none, optional, required"):
        load_config({"app": "app:app"}, environ={"UNBROKEN_CERT_REQS": "always"})
