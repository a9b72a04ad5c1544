"""`-c gunicorn.conf.py`: a gunicorn configuration file, read as gunicorn reads it.

The file is Python: it runs in a fresh namespace (`__name__ == "__config__"`, `__file__`
set), and its module-level names that gunicorn knows are its settings; other names
(imports, helpers) are left alone, as gunicorn leaves them. Each gunicorn setting is
mapped to unbroken's (`SETTINGS`), accepted because unbroken always works so, or refused
with one line saying why and what to use. The server hooks (`on_starting`, `post_fork`,
...) are loaded into `hooks.Hooks`; see there which are called. docs/migrating.md has
the table.

The master runs the file again at every reload, as gunicorn does on SIGHUP.
"""

from __future__ import annotations

import ast
import difflib
import grp
import inspect
import pwd
import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unbroken.config import hooks
from unbroken.config.foreign import Collector, FileSettings, Mapped, Refused, text
from unbroken.config.load import ConfigError

KIND = "gunicorn config"

# gunicorn's default access log format: unbroken's `combined`.
COMBINED = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

Rule = Callable[[Any], Mapped | None]  # None: accepted, unbroken always works so


def execute(path: str | Path) -> dict[str, Any]:
    """Run the file as gunicorn does and return its module-level names.

    ConfigError (one line, with the file's line) when it does not run."""
    filename = str(path)
    try:
        source = Path(filename).read_bytes()
    except OSError as error:
        raise ConfigError(f"{KIND} file {filename}: {error.strerror}") from None
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as error:
        raise ConfigError(f"{KIND} file {filename} line {error.lineno}: SyntaxError: "
                          f"{error.msg}") from None
    module = types.ModuleType("__config__")
    module.__file__ = filename
    try:
        exec(code, module.__dict__)
    except Exception as error:
        line = _failing_line(error, filename)
        where = f" line {line}" if line else ""
        raise ConfigError(f"{KIND} file {filename}{where}: {type(error).__name__}: "
                          f"{error}".rstrip(": ")) from None
    return dict(module.__dict__)


def _failing_line(error: BaseException, filename: str) -> int | None:
    line = None
    trace = error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == filename:
            line = trace.tb_lineno
        trace = trace.tb_next
    return line


def assignment_lines(source: str) -> dict[str, int]:
    """The line where each module-level name is last bound (not inside functions)."""
    lines: dict[str, int] = {}

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                lines[child.name] = child.lineno
                continue  # their bodies bind local names
            if isinstance(child, ast.Lambda):
                continue
            if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                lines[child.id] = child.lineno
            elif isinstance(child, ast.alias):
                lines[(child.asname or child.name).split(".")[0]] = child.lineno
            visit(child)

    visit(ast.parse(source))
    return lines


def read(path: Path) -> FileSettings:
    """The settings and hooks of a gunicorn configuration file; ConfigError naming
    every problem, in one line."""
    namespace = execute(path)
    try:
        lines = assignment_lines(path.read_text())
    except (SyntaxError, ValueError):  # ran, so it parses; a decoding oddity at worst
        lines = {}
    return from_namespace(namespace, path, lines)


def from_namespace(namespace: dict[str, Any], path: Path | str,
                   lines: dict[str, int] | None = None) -> FileSettings:
    """Map a gunicorn file's module-level names (plain data in the tests)."""
    lines = lines or {}
    collector = Collector(path, KIND)
    found: dict[str, hooks.Hook] = {}
    unused: list[str] = []
    for name, value in namespace.items():
        line = lines.get(name)
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if name in hooks.KNOWN or name in hooks.NEVER:
            hook = _hook(collector, name, value, str(path), line)
            if hook is not None:
                found[name] = hook
            continue
        rule = SETTINGS.get(name)
        if rule is None:
            close = difflib.get_close_matches(name, [*SETTINGS, *hooks.KNOWN], n=1, cutoff=0.8)
            if close:
                collector.refuse(name, line, f"is not a gunicorn setting: did you mean "
                                 f"{close[0]}?")
            elif not callable(value):
                unused.append(name)
            continue
        try:
            mapped = rule(value)
        except Refused as refused:
            collector.refuse(name, line, str(refused))
            continue
        except ValueError as error:
            collector.refuse(name, line, str(error))
            continue
        if mapped is None:
            collector.accept(name)
        else:
            collector.set(name, line, mapped)
    values = collector.values()
    if unused:
        collector.notes.append(f"{path}: {', '.join(unused)}: not gunicorn settings, not "
                               "used (gunicorn ignores them too)")
    return FileSettings(values, collector.all_notes(), hooks.Hooks(found))


def _hook(collector: Collector, name: str, value: Any, path: str,
          line: int | None) -> hooks.Hook | None:
    if value is None:
        return None  # `post_fork = None`: no hook
    refused = hooks.refusal(name)
    if refused:
        collector.refuse(name, line, refused)
        return None
    spec = hooks.KNOWN[name]
    if isinstance(value, str):
        if "." not in value:
            collector.refuse(name, line, f"{value!r} is not an import path (module.function)")
            return None
        return hooks.Hook(name, spec.runs_in, path, line or 0, import_path=value)
    if not callable(value):
        collector.refuse(name, line, "is not callable")
        return None
    if not _accepts(value, len(spec.arguments)) and not (
            name == "post_request" and any(_accepts(value, n) for n in (2, 3))):
        collector.refuse(name, line, f"must take {len(spec.arguments)} argument(s) "
                         f"({', '.join(spec.arguments)}), as in gunicorn")
        return None
    return hooks.Hook(name, spec.runs_in, path, line or 0, function=value)


def _accepts(function: Callable[..., Any], count: int) -> bool:
    try:
        inspect.signature(function).bind(*range(count))
    except TypeError:
        return False
    except ValueError:  # no signature (a builtin): take it
        return True
    return True


# -- value conversions -------------------------------------------------------------


def to(setting: str, convert: Callable[[Any], str] = text) -> Rule:
    return lambda value: {setting: convert(value)}


def only(accepted: tuple[Any, ...], why: str) -> Rule:
    """Accepted when the value asks for what unbroken always does; refused otherwise."""
    def rule(value: Any) -> Mapped | None:
        if any(_same(value, ok) for ok in accepted):
            return None
        raise Refused(why)
    return rule


def _same(value: Any, ok: Any) -> bool:
    if isinstance(ok, bool):  # gunicorn takes True/False or "true"/"false"
        return value is ok or (isinstance(value, str) and value.strip().lower() == str(ok).lower())
    if isinstance(value, bool):
        return False
    if isinstance(ok, list) and isinstance(value, list | tuple):
        return list(value) == ok
    return bool(value == ok)


def never(why: str) -> Rule:
    def rule(value: Any) -> Mapped | None:
        raise Refused(why)
    return rule


def _strings(value: Any) -> list[str]:
    """gunicorn's list settings: a string or a list of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value]
    raise ValueError(f"{value!r} is not a string or a list of strings")


def _address(text_: str) -> str:
    """gunicorn's bind forms, in unbroken's words: `HOST` alone means port 8000."""
    address = text_.strip()
    for prefix in ("unix://", "unix:"):
        if address.startswith(prefix):
            return "unix:" + address[len(prefix):]
    if address.startswith("fd://"):
        return address
    address = address.removeprefix("tcp://")
    if address.startswith("[") and address.endswith("]"):
        return f"{address}:8000"
    if ":" not in address:
        return f"{address}:8000"
    return address


def bind(value: Any) -> Mapped:
    return {"bind": tuple(_address(item) for item in _strings(value))}


def worker_class(value: Any) -> Mapped:
    if inspect.isclass(value):
        return {"worker_class": f"{value.__module__}.{value.__qualname__}"}
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a worker class name")
    return {"worker_class": value.strip()}


def positive(setting: str, zero: str) -> Rule:
    """gunicorn's 0 means `unlimited` or `off` where unbroken needs a number."""
    def rule(value: Any) -> Mapped:
        if text(value).strip() in ("0", "0.0"):
            raise Refused(zero)
        return {setting: text(value)}
    return rule


def switch(setting: str, on: tuple[str, ...] = ("true", "on", "yes", "1")) -> Rule:
    def rule(value: Any) -> Mapped:
        if isinstance(value, bool):
            return {setting: "on" if value else "off"}
        word = text(value).strip().lower()
        if word in on:
            return {setting: "on"}
        if word in ("false", "off", "no", "0"):
            return {setting: "off"}
        raise ValueError(f"{value!r} is not on or off")
    return rule


def addresses(setting: str) -> Rule:
    return lambda value: {setting: ",".join(_strings(value)) if not isinstance(value, str)
                          else value}


def umask(value: Any) -> Mapped:
    """gunicorn reads `umask` with int(x, 0), "0022" taken as octal; unbroken's is octal."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a mask")
    if isinstance(value, str):
        raw = value.strip()
        if re.match(r"0\d", raw):
            raw = raw.replace("0", "0o", 1)
        try:
            value = int(raw, 0)
        except ValueError:
            raise ValueError(f"{value!r} is not a mask such as 0o022") from None
    if not isinstance(value, int):
        raise ValueError(f"{value!r} is not a mask")
    return {"umask": format(value, "o")}


def identity(setting: str) -> Rule:
    """A user or group name, or a number as gunicorn also takes (a name here)."""
    lookup = pwd.getpwuid if setting == "user" else grp.getgrgid

    def rule(value: Any) -> Mapped | None:
        if value is None:
            return None
        number = value if isinstance(value, int) and not isinstance(value, bool) else (
            int(value) if isinstance(value, str) and value.strip().isdigit() else None)
        if number is None:
            return {setting: text(value).strip()}
        try:
            entry = lookup(number)
        except KeyError:
            raise ValueError(f"no {setting} with id {number}") from None
        name = entry.pw_name if isinstance(entry, pwd.struct_passwd) else entry.gr_name
        return {setting: name}
    return rule


def optional(setting: str) -> Rule:
    """A path setting, where None (gunicorn's default) means none."""
    return lambda value: None if value is None else {setting: text(value)}


def errorlog(value: Any) -> Mapped | None:
    if value in (None, "-"):
        return None
    raise Refused("unbroken logs to stderr: let systemd or supervisor "
                  "(stderr_logfile=) write it to a file, or remove the line")


def access_log_format(value: Any) -> Mapped:
    if isinstance(value, str) and value.strip() == COMBINED:
        return {"access_log_format": "combined"}
    if isinstance(value, str) and value.strip().lower() in ("combined", "json"):
        return {"access_log_format": value.strip().lower()}
    raise Refused("custom formats are not supported: unbroken writes `combined` (gunicorn's "
                  "default format) or `json` lines (--access-log-format)")


def cert_reqs(value: Any) -> Mapped:
    names = {0: "none", 1: "optional", 2: "required"}
    if isinstance(value, int) and not isinstance(value, bool) and value in names:
        return {"cert_reqs": names[value]}
    return {"cert_reqs": text(value)}


def proc_name(value: Any) -> Mapped | None:
    return None if value is None else {"name": text(value)}


def secure_scheme_headers(value: Any) -> Mapped | None:
    if isinstance(value, dict) and {k.upper(): v for k, v in value.items()} == \
            {"X-FORWARDED-PROTO": "https"}:
        return None
    raise Refused("unbroken sets the scheme from X-Forwarded-Proto only, sent by a peer in "
                  "--forwarded-allow-ips: have the proxy send that, and remove the line")


_ENV = ("set these in the environment unbroken starts in (systemd Environment=, "
        "supervisor environment=): workers inherit it")
_LOGGING = "unbroken logs to stderr with its own logger (--log-level); remove the line"
_STATSD = "unbroken has no statsd client: scrape its Prometheus metrics (--metrics-bind)"
_HTTP2 = "unbroken serves HTTP/1.1 only; terminate HTTP/2 at the proxy"
_DIRTY = "unbroken has no dirty arbiter"
_PARSER = "unbroken's HTTP parser has no such switch; remove the line"
_CONTROL = "unbroken has its own control socket (--control; `unbroken status`, `reload`)"
_RELOAD = "unbroken does not watch the code: reload with `unbroken reload`, SIGHUP, " \
    "or --reload-on-touch FILE"

SETTINGS: dict[str, Rule] = {
    # -- mapped ----------------------------------------------------------------------
    "wsgi_app": optional("app"),
    "bind": bind,
    "backlog": to("backlog"),
    "workers": to("workers"),
    "worker_class": worker_class,
    "threads": to("threads"),
    "worker_connections": to("worker_connections"),
    "max_requests": to("max_requests"),
    "max_requests_jitter": to("max_requests_jitter"),
    "timeout": positive("timeout", "0 (no watchdog) is not offered: unbroken always replaces "
                        "a silent worker; give a number of seconds"),
    "graceful_timeout": to("graceful_timeout"),
    "keepalive": to("keep_alive"),
    "limit_request_line": positive("limit_request_line", "0 (unlimited) is not offered: give "
                                   "a size in bytes"),
    "limit_request_fields": to("limit_request_fields"),
    "limit_request_field_size": positive("limit_request_field_size", "0 (unlimited) is not "
                                         "offered: give a size in bytes"),
    "chdir": optional("chdir"),
    "pidfile": optional("pid"),
    "user": identity("user"),
    "group": identity("group"),
    "umask": umask,
    "accesslog": optional("access_logfile"),
    "access_log_format": access_log_format,
    "errorlog": errorlog,
    "loglevel": to("log_level"),
    "proc_name": proc_name,
    "forwarded_allow_ips": addresses("forwarded_allow_ips"),
    "proxy_allow_ips": addresses("forwarded_allow_ips"),
    "proxy_protocol": switch("proxy_protocol", on=("true", "on", "yes", "1", "auto", "v1",
                                                    "v2")),
    "certfile": optional("certfile"),
    "keyfile": optional("keyfile"),
    "ca_certs": optional("ca_certs"),
    "cert_reqs": cert_reqs,
    # -- accepted when they ask for what unbroken always does; refused otherwise ---------
    "preload_app": only((False,), "unbroken never preloads: every worker imports the app "
                        "fresh, so a reload loads the new code; remove the line"),
    "daemon": only((False,), "unbroken stays in the foreground: run it under systemd, "
                   "supervisor or a container"),
    "reload": only((False,), _RELOAD),
    "reload_engine": only(("auto",), _RELOAD),
    "reload_extra_files": only(([],), _RELOAD),
    "spew": only((False,), "unbroken has no line tracer; remove the line"),
    "check_config": only((False,), "use `unbroken check -c FILE`"),
    "print_config": only((False,), "unbroken has no config printer; remove the line"),
    "sendfile": only((None, True), "unbroken always uses sendfile(2) for file responses "
                     "when it can; remove the line"),
    "reuse_port": only((False,), "unbroken's workers share the master's sockets: "
                       "SO_REUSEPORT is not offered"),
    "worker_tmp_dir": lambda value: None,  # no heartbeat file: it goes over a pipe
    "tmp_upload_dir": only((None,), "unbroken does not buffer uploads to files; remove it"),
    "raw_env": only(([], None), _ENV),
    "initgroups": only((False,), "workers run with no supplementary groups (--user, "
                       "--group)"),
    "secure_scheme_headers": secure_scheme_headers,
    "forwarder_headers": only(("SCRIPT_NAME,PATH_INFO",), "unbroken takes no SCRIPT_NAME or "
                              "PATH_INFO from proxy headers"),
    "header_map": only(("drop",), "unbroken drops header names with underscores, as "
                       "gunicorn's `drop`; remove the line"),
    "pythonpath": only((None,), "use --chdir (the app's directory is on sys.path) or "
                       "PYTHONPATH in the environment"),
    "paste": only((None,), "PasteDeploy is not supported: give the app as module:attr "
                  "(wsgi_app)"),
    "raw_paste_global_conf": only(([],), "PasteDeploy is not supported"),
    "disable_redirect_access_to_syslog": only((False,), _LOGGING),
    "capture_output": only((False,), "workers' stdout and stderr go to unbroken's stderr; "
                           "redirect that (systemd, supervisor)"),
    "logger_class": only(("gunicorn.glogging.Logger", "simple"), _LOGGING),
    "logconfig": only((None,), _LOGGING),
    "logconfig_dict": only(({},), _LOGGING),
    "logconfig_json": only((None,), _LOGGING),
    "syslog": only((False,), _LOGGING),
    "syslog_addr": only(("udp://localhost:514", "unix:///var/run/syslog"), _LOGGING),
    "syslog_prefix": only((None,), _LOGGING),
    "syslog_facility": only(("user",), _LOGGING),
    "enable_stdio_inheritance": only((False,), _LOGGING),
    "statsd_host": only((None,), _STATSD),
    "dogstatsd_tags": only(("",), _STATSD),
    "statsd_prefix": only(("",), _STATSD),
    "enable_backlog_metric": only((False,), _STATSD),
    "default_proc_name": never("is gunicorn's own; use proc_name (unbroken's --name)"),
    "protocol": only(("http",), "unbroken speaks HTTP only: use proxy_pass in nginx, not "
                     "uwsgi_pass"),
    "uwsgi_allow_ips": only(("127.0.0.1,::1",), "unbroken speaks HTTP only"),
    "ssl_version": only((2,), "deprecated and ignored by gunicorn too: remove the line"),
    "suppress_ragged_eofs": only((True,), "unbroken's TLS has no such switch; remove it"),
    "do_handshake_on_connect": only((False,), "unbroken's TLS has no such switch; remove it"),
    "ciphers": only((None,), "unbroken uses Python's default TLS ciphers; terminate TLS at "
                    "the proxy for a custom list"),
    "http_protocols": only(("h1",), _HTTP2),
    "http2_cleartext": only(("off", False), _HTTP2),
    "http2_max_concurrent_streams": only((100,), _HTTP2),
    "http2_initial_window_size": only((65535,), _HTTP2),
    "http2_max_frame_size": only((16384,), _HTTP2),
    "http2_max_header_list_size": only((65536,), _HTTP2),
    "permit_obsolete_folding": only((False,), _PARSER),
    "strip_header_spaces": only((False,), _PARSER),
    "permit_unconventional_http_method": only((False,), _PARSER),
    "permit_unconventional_http_version": only((False,), _PARSER),
    "casefold_http_method": only((False,), _PARSER),
    "http_parser": only(("auto",), _PARSER),
    "asgi_loop": to("loop"),
    "asgi_lifespan": only(("auto",), "unbroken runs the lifespan when the app supports it"),
    "asgi_disconnect_grace_period": only((3,), "unbroken has no such setting; remove it"),
    "root_path": only(("",), "unbroken has no root_path setting: mount the app under its "
                      "prefix in the app itself"),
    "dirty_apps": only(([],), _DIRTY),
    "dirty_workers": only((0,), _DIRTY),
    "dirty_timeout": only((300,), _DIRTY),
    "dirty_threads": only((1,), _DIRTY),
    "dirty_graceful_timeout": only((30,), _DIRTY),
    "control_socket": never(_CONTROL),
    "control_socket_mode": never(_CONTROL),
    "control_socket_disable": never(_CONTROL),
    "config": never("has no effect inside a config file; remove it"),
}

