"""uwsgi.ini: every option is mapped, accepted or refused with one line naming its line."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path
from typing import Any

import pytest

from unbroken.config import ConfigError
from unbroken.config.source import ConfigSource
from unbroken.config.uwsgi import OPTIONS, Never, expand, from_options, parse_ini

PATH = Path("/srv/app/uwsgi.ini")


def read(text: str, environ: dict[str, str] | None = None) -> Any:
    return from_options(parse_ini(text), PATH, environ or {})


def values(*lines: str) -> dict[str, Any]:
    return dict(read("[uwsgi]\n" + "\n".join(lines) + "\n").values)


def problem(*lines: str) -> str:
    with pytest.raises(ConfigError) as error:
        read("[uwsgi]\n" + "\n".join(lines) + "\n")
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("line", "expected"), [
    ("http = :8000", {"bind": (":8000",)}),
    ("http-socket = 127.0.0.1:8001", {"bind": ("127.0.0.1:8001",)}),
    ("http-socket = /run/app.sock", {"bind": ("unix:/run/app.sock",)}),
    ("http-socket = app.sock", {"bind": ("unix:app.sock",)}),
    ("https = :8443,/tls/c.pem,/tls/k.pem", {"bind": (":8443",), "certfile": "/tls/c.pem",
                                            "keyfile": "/tls/k.pem"}),
    ("chdir = /srv/app", {"chdir": "/srv/app"}),
    ("module = pkg.wsgi:app", {"app": "pkg.wsgi:app"}),
    ("module = pkg.wsgi", {"app": "pkg.wsgi:application"}),
    ("wsgi = pkg.wsgi:application", {"app": "pkg.wsgi:application"}),
    ("wsgi-file = app.py", {"app": "app.py:application"}),
    ("processes = 4", {"workers": 4}),
    ("workers = 3", {"workers": 3}),
    ("threads = 8", {"threads": 8}),
    ("master-fifo = /tmp/app.fifo", {"master_fifo": "/tmp/app.fifo"}),
    ("touch-reload = /srv/app/reload", {"reload_on_touch": "/srv/app/reload"}),
    ("touch-chain-reload = /srv/app/reload", {"reload_on_touch": "/srv/app/reload"}),
    ("touch-workers-reload = /srv/app/reload", {"reload_on_touch": "/srv/app/reload"}),
    ("pidfile = /run/app.pid", {"pid": "/run/app.pid"}),
    ("pidfile2 = /run/app.pid", {"pid": "/run/app.pid"}),
    ("uid = www-data", {"user": "www-data"}),
    ("uid = 0", {"user": pwd.getpwuid(0).pw_name}),
    ("gid = 0", {"group": grp.getgrgid(0).gr_name}),
    ("umask = 007", {"umask": 0o007}),
    ("max-requests = 5000", {"max_requests": 5000}),
    ("max-requests-delta = 20", {"max_requests_jitter": 20}),
    ("listen = 1024", {"backlog": 1024}),
    ("worker-reload-mercy = 20", {"graceful_timeout": 20.0}),
    ("reload-mercy = 20", {"graceful_timeout": 20.0}),
    ("home = /srv/venv", {"python": "/srv/venv/bin/python"}),
    ("virtualenv = /srv/venv", {"python": "/srv/venv/bin/python"}),
    ("gevent = 200", {"worker_class": "gevent", "worker_connections": 200}),
    ("chdir = %d", {"chdir": "/srv/app/"}),
    ("pidfile = %d%n.pid", {"pid": "/srv/app/uwsgi.pid"}),
    ("pidfile = /run/%c-%s.%x", {"pid": "/run/app-uwsgi.ini.ini"}),
    ("pidfile = /tmp/100%%", {"pid": "/tmp/100%"}),
])
def test_mapped(line: str, expected: dict[str, Any]) -> None:
    assert values(line) == expected


def test_module_with_callable_and_wsgi_file_with_callable() -> None:
    assert values("module = pkg.wsgi", "callable = app") == {"app": "pkg.wsgi:app"}
    assert values("module = pkg.wsgi:app", "callable = app") == {"app": "pkg.wsgi:app"}
    assert values("wsgi-file = %dapp.py", "callable = app") == {"app": "/srv/app/app.py:app"}
    assert "callable: 'other' and module = pkg:app (line 2) name different callables" in \
        problem("module = pkg:app", "callable = other")
    assert "wsgi-file: and module (line 2) both name the app" in \
        problem("module = pkg:app", "wsgi-file = app.py")
    assert "line 2: callable: needs module or wsgi-file" in problem("callable = app")


def test_repeated_sockets_are_all_bound() -> None:
    assert values("http-socket = :8000", "http-socket = /run/a.sock", "http = :9000") == {
        "bind": (":8000", "unix:/run/a.sock", ":9000")}


@pytest.mark.parametrize("option", ["master", "lazy-apps", "lazy", "die-on-term",
                                    "enable-threads", "single-interpreter", "vacuum",
                                    "need-app", "strict", "no-orphans", "reaper",
                                    "ignore-sigpipe", "py-call-osafterfork"])
def test_accepted_because_unbroken_always_works_so(option: str) -> None:
    result = read(f"[uwsgi]\n{option} = true\n")
    assert result.values == {}
    assert result.notes == (f"{PATH}: {option}: accepted, unbroken always works so",)
    assert f"line 2: {option}: " in problem(f"{option} = false")


@pytest.mark.parametrize("line", ["plugins = python3", "plugin = python3,http",
                                  "plugins = python311 gevent", "disable-logging = true"])
def test_accepted_values(line: str) -> None:
    assert values(line) == {}


NEVER = sorted(name for name, rule in OPTIONS.items() if isinstance(rule, Never))


@pytest.mark.parametrize("option", NEVER)
def test_every_refused_option_says_why_on_its_line(option: str) -> None:
    rule = OPTIONS[option]
    assert isinstance(rule, Never)
    message = problem(f"{option} = x")
    assert message == f"uWSGI ini file {PATH}: line 2: {option}: {rule.why}"


@pytest.mark.parametrize(("line", "says"), [
    ("socket = 127.0.0.1:3031", "speaks the uwsgi protocol; unbroken speaks HTTP: use "
     "http-socket, and proxy_pass instead of uwsgi_pass in nginx"),
    ("env = DJANGO_SETTINGS_MODULE=x", "workers inherit it"),
    ("logto = /var/log/uwsgi.log", "unbroken logs to stderr"),
    ("cheaper = 2", "unbroken scale N"),
    ("cheaper-algo = spare", "unbroken scale N"),
    ("hook-pre-app = exec:x", "uWSGI hooks are not available"),
    ("route-uri = ^/x$ break:403", "no request router"),
    ("if-env = X", "conditional blocks are not supported"),
    ("spooler = /tmp/spool", "no spooler"),
    ("attach-daemon = celery", "no attached daemons"),
    ("static-expires = x 1", "serve static files from nginx"),
    ("http-socket = @abstract", "abstract unix sockets are not supported"),
    ("http-socket = =0", "use fd://N"),
    ("https = :8443,c.pem", "`address,certfile,keyfile`"),
    ("plugins = php", "php: only the python, http and gevent plugins"),
    ("disable-logging = false", "access_logfile"),
    ("processes = 0", "'0' must be at least 1"),
    ("master = maybe", "'maybe' is not true or false"),
    ("uid = 123456789", "no user with id 123456789"),
    ("procesess = 4", "is not a uWSGI option unbroken knows: did you mean processes?"),
    ("frobnicate = 1", "is not a uWSGI option unbroken knows; nothing in unbroken maps to it"),
    ("pidfile = %h%(nope).pid", "placeholder %(nope) names no option"),
    ("pidfile = $(NOT_SET_ANYWHERE)", "$(NOT_SET_ANYWHERE): the environment variable is not"),
    ("pidfile = %U.pid", "placeholder %U is not supported (only %d %p %s %n %x %c %h %k %%"),
])
def test_refused(line: str, says: str) -> None:
    message = problem(line)
    key = line.split("=")[0].strip()
    assert message.startswith(f"uWSGI ini file {PATH}: line 2: {key}: "), message
    assert says in message


def test_two_options_for_one_setting_must_agree() -> None:
    assert values("processes = 2", "workers = 2") == {"workers": 2}
    assert "line 3: workers: sets workers as line 2: processes does, to another value" in \
        problem("processes = 2", "workers = 3")
    assert "touch-chain-reload: sets reload_on_touch" in \
        problem("touch-reload = /a", "touch-chain-reload = /b")


def test_placeholders_options_and_environment() -> None:
    assert values("set-placeholder = base=/srv/www", "chdir = %(base)/current",
                  "master-fifo = %(chdir)/fifo") == {"chdir": "/srv/www/current",
                                                     "master_fifo": "/srv/www/current/fifo"}
    read_ = read("[uwsgi]\nchdir = $(APP_HOME)\n", environ={"APP_HOME": "/opt/x"})
    assert read_.values == {"chdir": "/opt/x"}
    assert expand("%k", PATH, {}, {}) == str(os.cpu_count() or 1)


def test_every_problem_at_once_and_refusals_are_not_expanded() -> None:
    message = problem("socket = %(nope)", "harakiri = soon", "processes = 0")
    assert "line 2: socket: speaks the uwsgi protocol" in message
    assert "line 3: harakiri: " in message and "line 4: processes: '0'" in message


def test_other_sections_are_noted_and_a_file_without_uwsgi_is_refused() -> None:
    result = read("[uwsgi]\nprocesses = 2\n[uwsgi-staging]\nprocesses = 9\n")
    assert result.values == {"workers": 2}
    assert result.notes == (f"{PATH}: sections other than [uwsgi] are not read: "
                            "[uwsgi-staging]",)
    with pytest.raises(ConfigError, match=r"no \[uwsgi\] section"):
        read("[app]\nx = 1\n")


def test_syntax_errors_name_the_line() -> None:
    with pytest.raises(ConfigError, match=r"line 2: 'processes 4': expected key = value"):
        read("[uwsgi]\nprocesses 4\n")
    with pytest.raises(ConfigError, match=r"line 1: '\[uwsgi': a section header ends with \]"):
        read("[uwsgi\n")


def test_comments_underscores_and_case() -> None:
    assert values("; a comment", "# another", "Processes = 2", "max_requests = 9") == {
        "workers": 2, "max_requests": 9}


def test_ini_by_flag_or_by_extension(tmp_path: Path) -> None:
    ini = tmp_path / "app.conf"
    ini.write_text("[uwsgi]\nmodule = app:app\nprocesses = 2\nmaster = true\n")
    loaded = ConfigSource.locate({}, None, ini=str(ini)).load_all(notes=True)
    assert (loaded.config.app, loaded.config.workers) == ("app:app", 2)
    assert loaded.notes == (f"{ini}: master: accepted, unbroken always works so",)
    by_extension = tmp_path / "uwsgi.ini"
    by_extension.write_text(ini.read_text())
    assert ConfigSource.locate({}, str(by_extension)).load().workers == 2
