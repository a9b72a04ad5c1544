"""deploy.toml: every key declared once, every bad key named at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from unbroken.deploy.config import (
    DeployConfigError,
    Host,
    find_deploy_config,
    load_deploy_config,
    parse_deploy_config,
)

MINIMAL = {"app": "shop", "deploy_to": "~/shop", "serve": "app:app -b {host}:8000",
           "hosts": {"web": ["deploy@app1:2222", "app2"]}}


def test_minimal_config_and_defaults(tmp_path: Path) -> None:
    config = parse_deploy_config(MINIMAL, tmp_path, "deploy.toml")
    assert config.hosts == (Host("deploy@app1:2222", "web"), Host("app2", "web"))
    assert config.rollout.batches == (1, "50%")
    assert config.rollout.max_fail == 0
    assert config.keep_releases == 5
    assert config.serve_line(config.hosts[0], "10.0.0.5") == "app:app -b 10.0.0.5:8000"


def test_a_host_may_override_serve(tmp_path: Path) -> None:
    table = {**MINIMAL, "hosts": {"web": ["a", {"host": "b", "serve": "app:app -w 8"}]}}
    config = parse_deploy_config(table, tmp_path, "deploy.toml")
    assert config.serve_line(config.hosts[1], "x") == "app:app -w 8"


def test_every_bad_key_is_named_in_one_message(tmp_path: Path) -> None:
    table = {"app": "shop", "serve": 3, "colour": "red",
             "hosts": {"web": ["a", "a"], "db": []},
             "ssh": {"connect_timeout": -1, "bogus": 1},
             "rollout": {"batches": [0], "max_fail": "lots"},
             "lock": "yes"}
    with pytest.raises(DeployConfigError) as caught:
        parse_deploy_config(table, tmp_path, "deploy.toml")
    message = str(caught.value)
    for part in ("serve (3 must be a non-empty string)", "colour (unknown key)",
                 "ssh.connect_timeout", "ssh.bogus (unknown key)",
                 "rollout.batches ([0] has a batch of 0 hosts)", "rollout.max_fail",
                 "lock (must be a table)", "hosts.db (must be a non-empty list",
                 "hosts ('a' is listed twice)", "deploy_to (missing)"):
        assert part in message, part
    assert len(message.splitlines()) == 1


def test_durations_take_units_and_paths_are_relative_to_the_project(tmp_path: Path) -> None:
    table = {**MINIMAL, "rollout": {"confirm_timeout": "2m", "soak": "500ms"},
             "ssh": {"config": "ssh/config", "known_hosts": "/etc/ssh/known"}}
    config = parse_deploy_config(table, tmp_path, "deploy.toml")
    assert config.rollout.confirm_timeout == 120.0
    assert config.rollout.soak == 0.5
    assert config.ssh.config == tmp_path / "ssh" / "config"
    assert config.ssh.known_hosts == Path("/etc/ssh/known")


def test_found_beside_the_app_or_in_pyproject(tmp_path: Path) -> None:
    with pytest.raises(DeployConfigError, match=r"no deploy\.toml"):
        find_deploy_config(None, tmp_path)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.unbroken.deploy]\napp = "shop"\ndeploy_to = "/srv/shop"\nserve = "a:b"\n'
        '[tool.unbroken.deploy.hosts]\nweb = ["h1"]\n')
    path = find_deploy_config(None, tmp_path)
    assert path.name == "pyproject.toml"
    config = load_deploy_config(path)
    assert config.root == tmp_path.resolve() and config.deploy_to == "/srv/shop"
    (tmp_path / "deploy.toml").write_text("app = [\n")
    with pytest.raises(DeployConfigError, match="not valid TOML"):
        load_deploy_config(find_deploy_config(None, tmp_path))


def test_the_example_in_the_docs_is_a_valid_config(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[3] / "docs" / "deploy.md").read_text()
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "deploy.toml").write_text(block)
    config = load_deploy_config(tmp_path / "deploy.toml")
    assert [h.name for h in config.hosts] == ["app1", "deploy@10.0.0.12:2222", "app3"]
    assert config.hooks.once == "python manage.py migrate --noinput"
    assert config.rollout.confirm_timeout == 60.0
