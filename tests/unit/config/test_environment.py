"""UNBROKEN_* variables and config-file keys: a typo is refused with the closest name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from unbroken.config import ConfigError, load_config
from unbroken.config.files import from_file
from unbroken.config.load import ENV_PREFIX, OTHER_VARIABLES, env_name
from unbroken.config.settings import declarations

SRC = Path(__file__).resolve().parents[3] / "src" / "unbroken"


def _message(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as error:
        load_config({"app": "a:b"}, environ)
    return str(error.value)


def test_an_unknown_variable_is_refused_with_the_closest_setting() -> None:
    assert _message({"UNBROKEN_WOKERS": "3"}) == (
        "environment: UNBROKEN_WOKERS is not a setting: did you mean UNBROKEN_WORKERS?")


def test_every_unknown_variable_is_named_in_one_line() -> None:
    assert _message({"UNBROKEN_COLOUR": "blue", "UNBROKEN_GRACEFUL_TIMOUT": "3"}) == (
        "environment: UNBROKEN_COLOUR is not a setting (docs/settings.md lists them); "
        "UNBROKEN_GRACEFUL_TIMOUT is not a setting: did you mean UNBROKEN_GRACEFUL_TIMEOUT?")


def test_unbroken_s_own_variables_are_not_settings_and_not_refused() -> None:
    environ = dict.fromkeys(OTHER_VARIABLES, "x")
    assert load_config({"app": "a:b"}, environ).app == "a:b"


def test_every_unbroken_variable_in_the_code_is_a_setting_or_listed() -> None:
    """A new UNBROKEN_* variable (set for a child, read by a hook) must be listed in
    OTHER_VARIABLES, or every `unbroken serve` under it would be refused."""
    settings = {env_name(field.name) for field, _ in declarations()}
    found = {name for path in SRC.rglob("*.py")
             for name in re.findall(r"\bUNBROKEN_[A-Z][A-Z_]*[A-Z]\b", path.read_text())}
    unlisted = found - settings - OTHER_VARIABLES
    assert not unlisted, f"add to config/load.py OTHER_VARIABLES: {sorted(unlisted)}"
    assert all(name.startswith(ENV_PREFIX) for name in OTHER_VARIABLES)


def test_a_bad_number_in_the_environment_reads_plainly() -> None:
    assert _message({"UNBROKEN_WORKERS": "four"}) == \
        "UNBROKEN_WORKERS: 'four' is not a whole number"


def test_a_misspelt_file_key_gets_the_closest_in_its_own_spelling(tmp_path: Path) -> None:
    path = tmp_path / "unbroken.toml"
    path.write_text('wokers = 3\ngraceful-timout = 3\ncolour = "blue"\n')
    with pytest.raises(ConfigError) as error:
        from_file(path)
    assert str(error.value) == (
        f"config file {path}: bad key(s): wokers (unknown setting: did you mean workers?); "
        "graceful-timout (unknown setting: did you mean graceful-timeout?); colour (unknown "
        "setting)")


def test_an_unknown_setting_given_programmatically_gets_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"^unknown setting\(s\): wokers \(did you mean "
                       r"workers\?\)$"):
        load_config({"app": "a:b", "wokers": 3}, {})


def test_gevent_without_gevent_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gevent", None)  # as if not installed
    for given in ("gevent", "gunicorn.workers.ggevent.GeventWorker"):
        with pytest.raises(ConfigError) as error:
            load_config({"app": "a:b", "worker_class": given}, {})
        assert str(error.value) == ("-k gevent needs gevent, which is not installed: "
                                    "pip install 'unbroken[gevent]'")
    # Under --python the workers' interpreter decides; nothing to see from here.
    assert load_config({"app": "a:b", "worker_class": "gevent", "python": "/x/python"},
                       {}).worker_class == "gevent"
