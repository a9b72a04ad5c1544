"""gunicorn.conf.py: every gunicorn setting is mapped, accepted or refused with one line."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path
from typing import Any

import pytest

from unbroken.config import ConfigError, hooks
from unbroken.config.gunicorn import (
    COMBINED,
    SETTINGS,
    assignment_lines,
    execute,
    from_namespace,
)
from unbroken.config.source import ConfigSource

# Every setting and hook gunicorn's config.py declares (25.x, with its HTTP/2, ASGI,
# dirty-arbiter and control-socket settings).
GUNICORN_NAMES_TEXT = """
config wsgi_app bind backlog workers worker_class threads worker_connections max_requests
max_requests_jitter timeout graceful_timeout keepalive limit_request_line limit_request_fields
limit_request_field_size reload reload_engine reload_extra_files spew check_config
print_config preload_app sendfile reuse_port chdir daemon raw_env pidfile worker_tmp_dir user
group umask initgroups tmp_upload_dir secure_scheme_headers forwarded_allow_ips accesslog
disable_redirect_access_to_syslog access_log_format errorlog loglevel capture_output
logger_class logconfig logconfig_dict logconfig_json syslog_addr syslog syslog_prefix
syslog_facility enable_stdio_inheritance statsd_host dogstatsd_tags statsd_prefix
enable_backlog_metric proc_name default_proc_name pythonpath paste on_starting on_reload
when_ready pre_fork post_fork post_worker_init worker_int worker_abort pre_exec pre_request
post_request child_exit worker_exit nworkers_changed on_exit ssl_context proxy_protocol
proxy_allow_ips protocol uwsgi_allow_ips keyfile certfile ssl_version cert_reqs ca_certs
suppress_ragged_eofs do_handshake_on_connect ciphers http_protocols http2_cleartext
http2_max_concurrent_streams http2_initial_window_size http2_max_frame_size
http2_max_header_list_size raw_paste_global_conf permit_obsolete_folding strip_header_spaces
permit_unconventional_http_method permit_unconventional_http_version casefold_http_method
forwarder_headers header_map asgi_loop asgi_lifespan asgi_disconnect_grace_period
http_parser root_path dirty_apps dirty_workers dirty_timeout dirty_threads
dirty_graceful_timeout on_dirty_starting dirty_post_fork dirty_worker_init dirty_worker_exit
control_socket control_socket_mode control_socket_disable
"""
GUNICORN_NAMES = GUNICORN_NAMES_TEXT.split()

ROOT_USER = pwd.getpwuid(0).pw_name
ROOT_GROUP = grp.getgrgid(0).gr_name


def values(namespace: dict[str, Any]) -> dict[str, Any]:
    return from_namespace(namespace, "gunicorn.conf.py").values


def problem(namespace: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as error:
        from_namespace(namespace, "gunicorn.conf.py", {name: 7 for name in namespace})
    message = str(error.value)
    assert "\n" not in message
    return message


def test_every_gunicorn_name_is_a_setting_rule_or_a_hook() -> None:
    known = set(SETTINGS) | set(hooks.KNOWN) | set(hooks.NEVER)
    assert sorted(set(GUNICORN_NAMES) - known) == []
    assert not set(SETTINGS) & (set(hooks.KNOWN) | set(hooks.NEVER))


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("wsgi_app", "app:app", {"app": "app:app"}),
    ("bind", "127.0.0.1:9000", {"bind": ("127.0.0.1:9000",)}),
    ("bind", ["0.0.0.0:80", "unix:/run/a.sock"], {"bind": ("0.0.0.0:80", "unix:/run/a.sock")}),
    ("bind", "unix:///run/a.sock", {"bind": ("unix:/run/a.sock",)}),
    ("bind", "fd://3", {"bind": ("fd://3",)}),
    ("bind", "localhost", {"bind": ("localhost:8000",)}),
    ("bind", "[::1]", {"bind": ("[::1]:8000",)}),
    ("bind", "tcp://10.0.0.1:81", {"bind": ("10.0.0.1:81",)}),
    ("backlog", 64, {"backlog": 64}),
    ("workers", 4, {"workers": 4}),
    ("workers", "3", {"workers": 3}),
    ("worker_class", "sync", {"worker_class": "sync"}),
    ("worker_class", "gthread", {"worker_class": "gthread"}),
    ("worker_class", "uvicorn.workers.UvicornWorker",
     {"worker_class": "uvicorn.workers.UvicornWorker"}),
    ("worker_class", "asgi", {"worker_class": "asgi"}),
    ("threads", 8, {"threads": 8}),
    ("worker_connections", 500, {"worker_connections": 500}),
    ("max_requests", 1000, {"max_requests": 1000}),
    ("max_requests_jitter", 50, {"max_requests_jitter": 50}),
    ("timeout", 120, {"timeout": 120.0}),
    ("graceful_timeout", 10, {"graceful_timeout": 10.0}),
    ("keepalive", 2, {"keep_alive": 2.0}),
    ("limit_request_line", 4094, {"limit_request_line": 4094}),
    ("limit_request_fields", 50, {"limit_request_fields": 50}),
    ("limit_request_field_size", 8190, {"limit_request_field_size": 8190}),
    ("chdir", "/srv/app", {"chdir": "/srv/app"}),
    ("pidfile", "/run/app.pid", {"pid": "/run/app.pid"}),
    ("user", "nobody", {"user": "nobody"}),
    ("user", 0, {"user": ROOT_USER}),
    ("group", "0", {"group": ROOT_GROUP}),
    ("umask", 0o007, {"umask": 0o007}),
    ("umask", "0022", {"umask": 0o022}),
    ("umask", "0o27", {"umask": 0o027}),
    ("umask", 18, {"umask": 18}),
    ("accesslog", "-", {"access_logfile": "-"}),
    ("accesslog", "/var/log/a.log", {"access_logfile": "/var/log/a.log"}),
    ("access_log_format", COMBINED, {"access_log_format": "combined"}),
    ("access_log_format", "json", {"access_log_format": "json"}),
    ("loglevel", "warning", {"log_level": "warning"}),
    ("loglevel", "DEBUG", {"log_level": "debug"}),
    ("proc_name", "myapp", {"name": "myapp"}),
    ("forwarded_allow_ips", "10.0.0.0/8,127.0.0.1", {"forwarded_allow_ips":
                                                     "10.0.0.0/8,127.0.0.1"}),
    ("forwarded_allow_ips", ["10.0.0.1", "10.0.0.2"], {"forwarded_allow_ips":
                                                       "10.0.0.1,10.0.0.2"}),
    ("forwarded_allow_ips", "*", {"forwarded_allow_ips": "*"}),
    ("proxy_allow_ips", "10.0.0.1", {"forwarded_allow_ips": "10.0.0.1"}),
    ("proxy_protocol", True, {"proxy_protocol": True}),
    ("proxy_protocol", "v2", {"proxy_protocol": True}),
    ("proxy_protocol", "off", {"proxy_protocol": False}),
    ("certfile", "/etc/tls/cert.pem", {"certfile": "/etc/tls/cert.pem"}),
    ("keyfile", "/etc/tls/key.pem", {"keyfile": "/etc/tls/key.pem"}),
    ("ca_certs", "/etc/tls/ca.pem", {"ca_certs": "/etc/tls/ca.pem"}),
    ("cert_reqs", 2, {"cert_reqs": "required"}),
    ("cert_reqs", 0, {"cert_reqs": "none"}),
    ("asgi_loop", "uvloop", {"loop": "uvloop"}),
    ("asgi_loop", "asyncio", {"loop": "asyncio"}),
])
def test_mapped(name: str, value: Any, expected: dict[str, Any]) -> None:
    assert values({name: value}) == expected


@pytest.mark.parametrize(("name", "value"), [
    ("preload_app", False), ("daemon", False), ("reload", False), ("reload", "false"),
    ("spew", False), ("check_config", False), ("print_config", False), ("sendfile", None),
    ("sendfile", True), ("reuse_port", False), ("worker_tmp_dir", "/dev/shm"),
    ("tmp_upload_dir", None), ("raw_env", []), ("initgroups", False),
    ("secure_scheme_headers", {"X-Forwarded-Proto": "https"}), ("header_map", "drop"),
    ("pythonpath", None), ("paste", None), ("logger_class", "gunicorn.glogging.Logger"),
    ("logconfig", None), ("logconfig_dict", {}), ("syslog", False), ("statsd_host", None),
    ("protocol", "http"), ("http_protocols", "h1"), ("errorlog", "-"), ("errorlog", None),
    ("capture_output", False), ("dirty_workers", 0), ("asgi_lifespan", "auto"),
    ("forwarder_headers", "SCRIPT_NAME,PATH_INFO"), ("root_path", ""), ("ciphers", None),
])
def test_accepted_as_what_unbroken_always_does(name: str, value: Any) -> None:
    read = from_namespace({name: value}, "gunicorn.conf.py")
    assert read.values == {}
    assert read.notes == (f"gunicorn.conf.py: {name}: accepted, unbroken always works so",)


@pytest.mark.parametrize(("name", "value", "says"), [
    ("preload_app", True, "unbroken never preloads: every worker imports the app fresh, so "
     "a reload loads the new code"),
    ("daemon", True, "stays in the foreground"),
    ("reload", True, "unbroken does not watch the code"),
    ("reload_extra_files", ["a.py"], "--reload-on-touch FILE"),
    ("spew", True, "no line tracer"),
    ("check_config", True, "use `unbroken check -c FILE`"),
    ("sendfile", False, "always uses sendfile(2)"),
    ("reuse_port", True, "SO_REUSEPORT is not offered"),
    ("raw_env", ["A=1"], "workers inherit it"),
    ("initgroups", True, "no supplementary groups"),
    ("tmp_upload_dir", "/tmp", "does not buffer uploads"),
    ("secure_scheme_headers", {"X-FORWARDED-SSL": "on"}, "X-Forwarded-Proto only"),
    ("pythonpath", "/srv/lib", "PYTHONPATH in the environment"),
    ("paste", "development.ini", "PasteDeploy is not supported"),
    ("errorlog", "/var/log/error.log", "unbroken logs to stderr"),
    ("access_log_format", "%(h)s %(r)s", "custom formats are not supported"),
    ("logconfig", "logging.conf", "its own logger"),
    ("syslog", True, "its own logger"),
    ("statsd_host", "localhost:8125", "--metrics-bind"),
    ("protocol", "uwsgi", "unbroken speaks HTTP only"),
    ("http_protocols", "h2,h1", "HTTP/1.1 only"),
    ("timeout", 0, "0 (no watchdog) is not offered"),
    ("limit_request_line", 0, "0 (unlimited) is not offered"),
    ("limit_request_field_size", 0, "0 (unlimited) is not offered"),
    ("strip_header_spaces", True, "no such switch"),
    ("root_path", "/api", "no root_path setting"),
    ("dirty_apps", ["x:y"], "no dirty arbiter"),
    ("control_socket", "/run/g.ctl", "its own control socket"),
    ("default_proc_name", "x", "use proc_name"),
    ("config", "other.py", "has no effect inside a config file"),
    ("ssl_version", 5, "deprecated"),
    ("worker_class", "eventlet", "eventlet is not supported"),
    ("worker_class", "tornado", "tornado workers are not supported"),
    ("worker_class", "mypkg.MyWorker", "unknown worker class"),
    ("workers", 0, "'0' must be at least 1"),
    ("workers", True, "True is not a string or a number"),
    ("bind", 8000, "is not a string or a list of strings"),
    ("loglevel", "loud", "must be one of debug"),
    ("user", 123456789, "no user with id 123456789"),
    ("umask", "rw", "is not a mask"),
    ("proxy_protocol", "maybe", "is not on or off"),
])
def test_refused_with_one_line_naming_the_file_the_line_and_the_setting(
        name: str, value: Any, says: str) -> None:
    message = problem({name: value})
    assert message.startswith(f"gunicorn config file gunicorn.conf.py: line 7: {name}: ")
    assert says in message


def test_every_problem_at_once() -> None:
    message = problem({"workers": 0, "preload_app": True, "daemon": True})
    assert message.count("line 7:") == 3


def test_two_names_for_one_setting_must_agree() -> None:
    assert values({"forwarded_allow_ips": "10.0.0.1", "proxy_allow_ips": "10.0.0.1"}) == {
        "forwarded_allow_ips": "10.0.0.1"}
    message = problem({"forwarded_allow_ips": "10.0.0.1", "proxy_allow_ips": "10.0.0.2"})
    assert "proxy_allow_ips: sets forwarded_allow_ips as line 7: forwarded_allow_ips does" \
        in message


def test_a_class_object_is_named_by_its_path() -> None:
    class UvicornWorker:
        pass

    UvicornWorker.__module__ = "uvicorn.workers"
    UvicornWorker.__qualname__ = "UvicornWorker"
    assert values({"worker_class": UvicornWorker}) == {
        "worker_class": "uvicorn.workers.UvicornWorker"}


def test_imports_helpers_and_private_names_are_left_alone_and_listed() -> None:
    import multiprocessing

    def helper() -> int:
        return 1

    read = from_namespace({"multiprocessing": multiprocessing, "_x": 1, "helper": helper,
                           "port": 8000, "HOST": "x", "workers": 2}, "g.py")
    assert read.values == {"workers": 2}
    assert read.notes == ("g.py: port, HOST: not gunicorn settings, not used (gunicorn "
                          "ignores them too)",)


def test_a_typo_of_a_setting_or_a_hook_is_refused_with_the_name_meant() -> None:
    assert "worker: is not a gunicorn setting: did you mean workers?" in problem({"worker": 4})
    assert "did you mean post_fork?" in problem({"post_forks": lambda s, w: None})


GUNICORN_HOOKS = ["on_starting", "on_reload", "when_ready", "pre_fork", "post_fork",
                  "post_worker_init", "worker_int", "worker_abort", "pre_request",
                  "post_request", "child_exit", "worker_exit", "nworkers_changed", "on_exit",
                  "ssl_context"]


@pytest.mark.parametrize("name", sorted(set(GUNICORN_HOOKS) - hooks.WIRED))
def test_a_hook_not_wired_yet_is_refused_naming_its_process(name: str) -> None:
    assert name in hooks.KNOWN and name not in hooks.WIRED
    message = problem({name: lambda *args: None})
    assert f"{name}: hook {name} is recognised but not yet supported (unbroken will call it " \
        f"in the {hooks.KNOWN[name].runs_in}); remove it for now, see issue 16" in message


@pytest.mark.parametrize("name", ["pre_exec", "on_dirty_starting", "dirty_post_fork",
                                  "dirty_worker_init", "dirty_worker_exit"])
def test_a_hook_without_an_equivalent_is_refused_for_good(name: str) -> None:
    assert f"hook {name} has no equivalent: " in problem({name: lambda *args: None})


@pytest.mark.parametrize("name", sorted(hooks.WIRED))
def test_a_wired_hook_is_accepted(name: str) -> None:
    arguments = ", ".join(hooks.KNOWN[name].arguments)
    namespace: dict[str, object] = {}
    exec(f"def hook({arguments}):\n    pass\n", namespace)
    settings = from_namespace({name: namespace["hook"]}, "gunicorn.conf.py", {name: 7})
    hook = settings.hooks.get(name)
    assert hook is not None and hook.runs_in == hooks.KNOWN[name].runs_in and hook.line == 7


def test_where_each_hook_runs() -> None:
    runs = {name: spec.runs_in for name, spec in hooks.KNOWN.items()}
    assert {name for name, where in runs.items() if where == "master"} == {
        "on_starting", "when_ready", "on_reload", "pre_fork", "child_exit",
        "nworkers_changed", "on_exit"}
    assert sorted(runs) == sorted(GUNICORN_HOOKS)


def test_a_wired_hook_is_loaded_into_the_record(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setattr(hooks, "WIRED", frozenset({"post_fork", "when_ready", "pre_request"}))
    path = tmp_path / "gunicorn.conf.py"
    path.write_text("def post_fork(server, worker):\n    return 'forked'\n\n"
                    "when_ready = 'os.getcwd'\n"
                    "def pre_request(worker):\n    pass\n")
    with pytest.raises(ConfigError, match=r"line 5: pre_request: must take 2 argument\(s\) "
                                          r"\(worker, req\)"):
        ConfigSource({"app": "a:b"}, path).load_all()
    path.write_text("def post_fork(server, worker):\n    return 'forked'\n\n"
                    "when_ready = 'os.getcwd'\n")
    record = ConfigSource({"app": "a:b"}, path).load_all().hooks
    fork = record.get("post_fork")
    assert fork is not None and (fork.runs_in, fork.line, fork.file) == ("worker", 1, str(path))
    assert fork.load()(None, None) == "forked"  # a worker runs the file again
    assert fork.function is not None and fork.function(None, None) == "forked"
    ready = record.get("when_ready")
    assert ready is not None and ready.runs_in == "master" and ready.load() is os.getcwd
    assert [hook.name for hook in record.running_in("master")] == ["when_ready"]


def test_the_file_runs_as_gunicorn_runs_it(tmp_path: Path) -> None:
    path = tmp_path / "gunicorn.conf.py"
    path.write_text("import os\nbind = [f'unix:{os.path.dirname(__file__)}/a.sock']\n"
                    "assert __name__ == '__config__'\nworkers = 2 * 2\n")
    source = ConfigSource({"app": "a:b"}, path)
    loaded = source.load_all(notes=True)
    assert loaded.config.bind == (f"unix:{tmp_path}/a.sock",)
    assert loaded.config.workers == 4
    assert loaded.notes == ()


def test_a_file_that_does_not_run_is_one_line_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "gunicorn.conf.py"
    path.write_text("workers = 2\nbind = undefined_name\n")
    with pytest.raises(ConfigError, match=r"gunicorn config file .*gunicorn.conf.py line 2: "
                                          r"NameError: name 'undefined_name' is not defined"):
        execute(path)
    path.write_text("workers = (\n")
    with pytest.raises(ConfigError, match=r"line 1: SyntaxError"):
        execute(path)


def test_assignment_lines_are_the_last_binding_outside_functions() -> None:
    source = ("import os\nworkers = 1\nif os:\n    workers = 2\n"
              "def post_fork(server, worker):\n    bind = 'x'\n")
    assert assignment_lines(source) == {"os": 1, "workers": 4, "post_fork": 5}


def test_worker_class_alias_is_noted_once_at_start_not_at_reload(tmp_path: Path) -> None:
    path = tmp_path / "gunicorn.conf.py"
    path.write_text("worker_class = 'gthread'\nthreads = 4\n")
    source = ConfigSource({"app": "a:b"}, path)
    loaded = source.load_all(notes=True)
    assert loaded.config.worker_class == "wsgi"
    assert loaded.notes == ("-k gthread is served by unbroken's wsgi engine (--threads sets "
                            "the pool size, as in gunicorn)",)
    assert source.load_all().notes == ()
    assert source.load().worker_class == "wsgi"


def test_the_command_line_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gunicorn.conf.py"
    path.write_text("workers = 3\nwsgi_app = 'a:b'\n")
    assert ConfigSource({"workers": 5}, path).load().workers == 5
