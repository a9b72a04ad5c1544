from __future__ import annotations

from pathlib import Path

import pytest

from unbroken.config import ConfigError
from unbroken.config.files import find_config_file, from_file
from unbroken.config.source import ConfigSource


def test_unbroken_toml_values_go_through_the_flag_parsers(tmp_path: Path) -> None:
    path = tmp_path / "unbroken.toml"
    path.write_text('app = "proj.wsgi:app"\nworkers = 3\ngraceful-timeout = 2.5\n'
                    'bind = ["127.0.0.1:1", "unix:/tmp/a.sock"]\n')
    assert find_config_file(None, tmp_path) == path
    assert from_file(path) == {"app": "proj.wsgi:app", "workers": 3, "graceful_timeout": 2.5,
                               "bind": ("127.0.0.1:1", "unix:/tmp/a.sock")}


def test_pyproject_tool_table_is_found_only_when_present(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert find_config_file(None, tmp_path) is None
    (tmp_path / "pyproject.toml").write_text('[tool.unbroken]\nthreads = 4\n')
    path = find_config_file(None, tmp_path)
    assert path is not None and from_file(path) == {"threads": 4}


def test_every_bad_key_is_named_at_once(tmp_path: Path) -> None:
    path = tmp_path / "unbroken.toml"
    path.write_text('workers = 0\ncolour = "blue"\nthreads = "many"\nbind = true\n')
    with pytest.raises(ConfigError) as error:
        from_file(path)
    message = str(error.value)
    for key in ("workers (0 must be at least 1", "colour (unknown setting)", "threads ('many'",
                "bind (True is not a string or a number)"):
        assert key in message


def test_file_then_environment_then_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "unbroken.toml"
    path.write_text('app = "a:b"\nworkers = 3\nthreads = 2\ntimeout = 9\n')
    monkeypatch.setenv("UNBROKEN_THREADS", "5")
    config = ConfigSource({"timeout": 7.0}, path).load()
    assert (config.workers, config.threads, config.timeout) == (3, 5, 7.0)


def test_not_toml_and_missing_file_say_so(tmp_path: Path) -> None:
    bad = tmp_path / "unbroken.toml"
    bad.write_text("workers = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        from_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        find_config_file(str(tmp_path / "nope.toml"))


def test_web_concurrency_is_the_default_worker_count_under_every_other_source() -> None:
    from unbroken.config.load import load_config

    app = {"app": "app:app"}
    assert load_config(app, environ={"WEB_CONCURRENCY": "5"}).workers == 5
    assert load_config(app, environ={"WEB_CONCURRENCY": "5"},
                       file_values={"workers": 3}).workers == 3
    assert load_config(app, environ={"WEB_CONCURRENCY": "5", "UNBROKEN_WORKERS": "4"}).workers == 4
    assert load_config({**app, "workers": 2}, environ={"WEB_CONCURRENCY": "5"}).workers == 2
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY: 'lots'"):
        load_config(app, environ={"WEB_CONCURRENCY": "lots"})
