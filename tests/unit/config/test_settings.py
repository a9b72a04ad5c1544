from __future__ import annotations

from pathlib import Path

import pytest

from unbroken.cli.main import build_parser
from unbroken.config import ConfigError, load_config
from unbroken.config.docs import render
from unbroken.config.settings import declarations

ROOT = Path(__file__).resolve().parents[3]


def test_docs_page_matches_the_declarations() -> None:
    assert (ROOT / "docs" / "settings.md").read_text() == render()


def test_every_setting_has_a_cli_flag() -> None:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    destinations = {action.dest for action in serve._actions}
    assert {field.name for field, _ in declarations()} <= destinations


def test_environment_is_parsed_and_cli_wins() -> None:
    environ = {"UNBROKEN_WORKERS": "5", "UNBROKEN_THREADS": "4",
               "UNBROKEN_BIND": "127.0.0.1:1, unix:/tmp/x"}
    config = load_config({"workers": 3, "app": "a:b"}, environ)
    assert (config.workers, config.threads) == (3, 4)
    assert config.bind == ("127.0.0.1:1", "unix:/tmp/x")


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="UNBROKEN_WORKERS: '0' must be at least 1"):
        load_config({}, {"UNBROKEN_WORKERS": "0"})


def test_unknown_worker_class_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown worker class"):
        load_config({}, {"UNBROKEN_WORKER_CLASS": "twisted"})
    with pytest.raises(ConfigError, match="tornado workers are not supported"):
        load_config({}, {"UNBROKEN_WORKER_CLASS": "tornado"})
