"""`--ini uwsgi.ini` and `-c uwsgi.ini`: the `[uwsgi]` section of a uWSGI ini file.

Each option is mapped to a setting (`OPTIONS`), accepted because unbroken always works so
(`master`, `lazy-apps`, ...), or refused with one line saying why and what to use; an
option unbroken does not know is refused too, never skipped. docs/migrating.md has the
table.

The file is read by a small reader of our own rather than configparser: uWSGI repeats
keys (two `http-socket` lines are two sockets), and an error should name its line.
Placeholders: `%d` `%p` `%s` `%n` `%x` `%c` `%h` `%k` `%%`, `%(option)` (an option or
`set-placeholder` set earlier) and `$(VAR)` (the environment); any other is refused.
"""

from __future__ import annotations

import dataclasses
import difflib
import grp
import os
import pwd
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from unbroken.config.foreign import Collector, FileSettings, Mapped, Refused
from unbroken.config.load import ConfigError

KIND = "uWSGI ini"
SECTION = "uwsgi"

TRUE = ("1", "true", "yes", "on", "y", "")
FALSE = ("0", "false", "no", "off", "n")


@dataclass(frozen=True)
class Option:
    section: str
    line: int
    key: str
    value: str


def parse_ini(text: str, path: str = "uwsgi.ini") -> list[Option]:
    """Every `key = value` line with its section and line number, repeats kept."""
    options: list[Option] = []
    section = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith((";", "#")):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError(f"{KIND} file {path} line {number}: {line!r}: a section "
                                  "header ends with ]")
            section = line[1:-1].strip()
            continue
        key, equals, value = line.partition("=")
        if not equals:
            raise ConfigError(f"{KIND} file {path} line {number}: {line!r}: expected "
                              "key = value")
        options.append(Option(section, number, key.strip(), value.strip()))
    return options


# -- placeholders ----------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"%\((?P<name>[^)]*)\)|\$\((?P<env>[^)]*)\)|%(?P<magic>.)|%$")


def expand(value: str, path: Path, known: Mapping[str, str],
           environ: Mapping[str, str]) -> str:
    """uWSGI's simple placeholders; ValueError naming one that is not supported."""
    absolute = path.resolve()
    magic = {
        "d": str(absolute.parent) + "/", "p": str(absolute), "s": absolute.name,
        "n": absolute.stem, "x": absolute.suffix.lstrip("."), "c": absolute.parent.name,
        "h": socket.gethostname(), "k": str(os.cpu_count() or 1), "%": "%",
    }

    def replace(match: re.Match[str]) -> str:
        if match.group("name") is not None:
            name = match.group("name")
            if name not in known:
                raise ValueError(f"placeholder %({name}) names no option or "
                                 "set-placeholder set before it")
            return known[name]
        if match.group("env") is not None:
            variable = match.group("env")
            if variable not in environ:
                raise ValueError(f"$({variable}): the environment variable is not set")
            return environ[variable]
        letter = match.group("magic")
        if letter in magic:
            return magic[letter]
        raise ValueError(f"placeholder %{letter or ''} is not supported (only %d %p %s %n "
                         "%x %c %h %k %%, %(option) and $(VAR))")

    return _PLACEHOLDER.sub(replace, value)


# -- rules -----------------------------------------------------------------------------

Rule = Callable[[str], Mapped | None]  # None: accepted, unbroken always works so


@dataclass(frozen=True)
class Never:
    """Refused whatever the value (and before any placeholder in it is expanded)."""

    why: str


def to(setting: str) -> Rule:
    return lambda value: {setting: value}


def always(why: str) -> Rule:
    """A switch unbroken is always on for: true is accepted, false refused."""
    def rule(value: str) -> Mapped | None:
        if value.lower() in TRUE:
            return None
        if value.lower() in FALSE:
            raise Refused(why)
        raise ValueError(f"{value!r} is not true or false")
    return rule


def address(value: str) -> str:
    """uWSGI's socket forms in unbroken's words: `:8000`, `host:port`, `/path.sock`."""
    if value.startswith("@"):
        raise Refused("abstract unix sockets are not supported: use a path")
    if value.startswith("="):
        raise Refused("a socket by number: use fd://N (--bind)")
    if "/" in value or value.endswith(".sock"):
        return f"unix:{value}"
    return value


def bind(value: str) -> Mapped:
    return {"bind": tuple(address(part.strip()) for part in value.split(",") if part.strip())}


def https(value: str) -> Mapped:
    parts = [part.strip() for part in value.split(",")]
    if len(parts) != 3:
        raise Refused("unbroken takes `address,certfile,keyfile` here; ciphers and a CA "
                      "go in unbroken.toml (ca_certs, cert_reqs)")
    return {"bind": (address(parts[0]),), "certfile": parts[1], "keyfile": parts[2]}


def identity(setting: str) -> Rule:
    def rule(value: str) -> Mapped:
        if not value.isdigit():
            return {setting: value}
        try:
            return {setting: pwd.getpwuid(int(value)).pw_name if setting == "user"
                    else grp.getgrgid(int(value)).gr_name}
        except KeyError:
            raise ValueError(f"no {setting} with id {value}") from None
    return rule


def python_home(value: str) -> Mapped:
    return {"python": str(Path(value) / "bin" / "python")}


def gevent(value: str) -> Mapped:
    return {"worker_class": "gevent", "worker_connections": value}


def plugins(value: str) -> Mapped | None:
    names = [name.strip() for name in re.split(r"[,\s]+", value) if name.strip()]
    other = [name for name in names
             if not re.fullmatch(r"(python\d*|http|gevent\d*)(_plugin\.so)?", name)]
    if other:
        raise Refused(f"{', '.join(other)}: only the python, http and gevent plugins have "
                      "an equivalent (built in)")
    return None


def harakiri(value: str) -> Mapped:
    return {"request_timeout": value}


def disable_logging(value: str) -> Mapped | None:
    if value.lower() in TRUE:
        return None  # no access log: unbroken's default
    raise Refused("unbroken logs requests only with access_logfile (- for stdout)")


_ENV = ("set it in the environment unbroken starts in (systemd Environment=, supervisor "
        "environment=): workers inherit it")
_LOGS = "unbroken logs to stderr: let systemd or supervisor write it to a file"
_FOREGROUND = "unbroken stays in the foreground: run it under systemd, supervisor or a " \
    "container"
_STATIC = "serve static files from nginx, or from the app (whitenoise)"
_UWSGI_PROTOCOL = ("speaks the uwsgi protocol; unbroken speaks HTTP: use http-socket, and "
                   "proxy_pass instead of uwsgi_pass in nginx")
_RECYCLE = "not available: recycle by count with max-requests"
_SCALE = "no adaptive process spawning: set processes, and `unbroken scale N` to change it"
_BUFFER = "unbroken has no such buffer: its limits are limit_request_line and " \
    "limit_request_field_size (unbroken.toml)"
_ROUTER = "unbroken has no request router: configure it in nginx"
_TIMEOUT = "unbroken's client timeouts are keep_alive and header_timeout (unbroken.toml)"
_NAMES = "unbroken does not rename its processes; --name names the service"

OPTIONS: dict[str, Rule | Never] = {
    # -- mapped ----------------------------------------------------------------------
    "http": bind,
    "http-socket": bind,
    "https": https,
    "https-socket": https,
    "chdir": to("chdir"),
    "processes": to("workers"),
    "workers": to("workers"),
    "threads": to("threads"),
    "master-fifo": to("master_fifo"),
    "touch-reload": to("reload_on_touch"),
    "touch-chain-reload": to("reload_on_touch"),
    "touch-workers-reload": to("reload_on_touch"),
    "pidfile": to("pid"),
    "pidfile2": to("pid"),
    "uid": identity("user"),
    "gid": identity("group"),
    "umask": to("umask"),
    "max-requests": to("max_requests"),
    "max-requests-delta": to("max_requests_jitter"),
    "listen": to("backlog"),
    "limit-post": to("limit_request_body"),
    "worker-reload-mercy": to("graceful_timeout"),
    "reload-mercy": to("graceful_timeout"),
    "home": python_home,
    "virtualenv": python_home,
    "venv": python_home,
    "pyhome": python_home,
    "gevent": gevent,
    "harakiri": harakiri,
    "plugin": plugins,
    "plugins": plugins,
    "disable-logging": disable_logging,
    # module, wsgi, wsgi-file, file, callable: put together into `app` by `read`.
    # -- accepted: unbroken always works so -------------------------------------------
    "master": always("unbroken always runs a master"),
    "lazy-apps": always("unbroken always imports the app in each worker (never in the "
                        "master), so a reload loads the new code"),
    "lazy": always("unbroken always imports the app in each worker"),
    "die-on-term": always("SIGTERM always stops unbroken gracefully; SIGHUP reloads"),
    "enable-threads": always("Python threads are always enabled"),
    "single-interpreter": always("each worker always runs one interpreter"),
    "vacuum": always("unbroken always removes its sockets, FIFO and pid file on exit"),
    "need-app": always("a worker whose app does not import never counts as ready"),
    "strict": always("every option is mapped or refused, always"),
    "no-orphans": always("workers always exit when the master is gone"),
    "reaper": always("the master always reaps its workers"),
    "ignore-sigpipe": always("a client that left never kills a worker"),
    "py-call-osafterfork": always("workers are fresh processes, not forks"),
    # -- refused ---------------------------------------------------------------------
    "socket": Never(_UWSGI_PROTOCOL),
    "uwsgi-socket": Never(_UWSGI_PROTOCOL),
    "shared-socket": Never("use http-socket (the master always owns the sockets)"),
    "chmod-socket": Never("a unix socket is 0660 (the service's group may connect: put the "
                          "proxy's user in it), 0666 with umask = 0"),
    "chown-socket": Never("create the socket as the right user (uid, gid) or give the "
                          "proxy's user the group"),
    "env": Never(_ENV),
    "pythonpath": Never("use chdir (the app's directory is on sys.path) or PYTHONPATH in "
                        "the environment"),
    "python-path": Never("use chdir or PYTHONPATH in the environment"),
    "pp": Never("use chdir or PYTHONPATH in the environment"),
    "logto": Never(_LOGS),
    "logto2": Never(_LOGS),
    "logger": Never(_LOGS),
    "req-logger": Never("request lines go to access_logfile (unbroken.toml or "
                        "--access-logfile)"),
    "log-format": Never("unbroken writes combined or json lines (--access-log-format)"),
    "log-x-forwarded-for": Never("the client address comes from X-Forwarded-For when the "
                                 "peer is in --forwarded-allow-ips"),
    "log-maxsize": Never(_LOGS),
    "log-reopen": Never("kill -USR1 the master reopens the access log"),
    "touch-logreopen": Never("kill -USR1 the master reopens the access log"),
    "log-4xx": Never(_LOGS),
    "log-5xx": Never(_LOGS),
    "log-master": Never(_LOGS),
    "daemonize": Never(_FOREGROUND),
    "daemonize2": Never(_FOREGROUND),
    "harakiri-verbose": Never("--request-timeout always logs the request's method, path and "
                              "how long it ran"),
    "buffer-size": Never(_BUFFER),
    "post-buffering": Never("unbroken streams the request body to the app"),
    "limit-as": Never("no address-space limit: use systemd's MemoryMax="),
    "reload-on-rss": Never(_RECYCLE),
    "reload-on-as": Never(_RECYCLE),
    "evil-reload-on-rss": Never(_RECYCLE),
    "evil-reload-on-as": Never(_RECYCLE),
    "max-worker-lifetime": Never(_RECYCLE),
    "memory-report": Never("worker memory is in `unbroken status` (RSS) and the metrics"),
    "stats": Never("use metrics_bind: Prometheus metrics aggregated by the master"),
    "stats-http": Never("use metrics_bind: Prometheus metrics aggregated by the master"),
    "thunder-lock": Never("unbroken has no accept lock to turn on; remove the line"),
    "offload-threads": Never("unbroken sends file bodies with sendfile(2) in the worker"),
    "static-map": Never(_STATIC),
    "static-map2": Never(_STATIC),
    "check-static": Never(_STATIC),
    "mount": Never("one app per service: mount the others in the app (a dispatcher)"),
    "manage-script-name": Never("unbroken sets no SCRIPT_NAME: mount the app under its "
                                "prefix in the app itself"),
    "http-timeout": Never(_TIMEOUT),
    "socket-timeout": Never(_TIMEOUT),
    "http-keepalive": Never("keep-alive is on by default (keep_alive seconds, 0 to turn "
                            "it off)"),
    "so-keepalive": Never("no TCP keepalive setting"),
    "http-auto-chunked": Never("unbroken chunks a response without a Content-Length by "
                               "itself"),
    "add-header": Never(_ROUTER),
    "http-websockets": Never("uWSGI's websocket API is not available: serve WebSockets "
                             "from an ASGI app (-k asgi)"),
    "asyncio": Never("uWSGI's asyncio loop is not available: serve an ASGI app (-k asgi)"),
    "ugreen": Never("use gevent = N"),
    "async": Never("use gevent = N"),
    "procname": Never(_NAMES),
    "procname-prefix": Never(_NAMES),
    "procname-prefix-spaced": Never(_NAMES),
    "procname-master": Never(_NAMES),
    "auto-procname": Never(_NAMES),
    "py-autoreload": Never("unbroken does not watch the code: use touch-reload or "
                           "`unbroken reload`"),
    "python-autoreload": Never("use touch-reload or `unbroken reload`"),
    "chdir2": Never("use chdir"),
    "chroot": Never("no chroot: run unbroken in a container"),
    "cap": Never("no capabilities setting: bind as root, or use systemd's "
                 "AmbientCapabilities="),
    "master-as-root": Never("the master always stays as it was started; uid and gid "
                            "apply to workers"),
    "emperor": Never("one service per unbroken: run several under systemd or supervisor"),
    "vhost": Never("one app per service"),
    "ini": Never("include files are not supported: give one file"),
    "inherit": Never("include files are not supported: give one file"),
    "wsgi-disable-file-wrapper": Never("no such switch; remove the line"),
    "wsgi-env-behaviour": Never("no such switch; remove the line"),
    "ignore-write-errors": Never("no such switch; remove the line"),
    "disable-write-exception": Never("no such switch; remove the line"),
    "threads-stacksize": Never("no such setting; remove the line"),
    "cpu-affinity": Never("no such setting: use systemd's CPUAffinity= or taskset"),
    "pymodule-alias": Never("no such setting: import it in the app"),
    "import": Never("import it in the app"),
    "pyimport": Never("import it in the app"),
    "shared-import": Never("import it in the app"),
    "plugins-dir": Never("unbroken has no plugins"),
    "http-to": Never(_ROUTER),
    "subscribe-to": Never(_ROUTER),
    "cheap": Never(_SCALE),
    "idle": Never(_SCALE),
    "die-on-idle": Never(_SCALE),
    "cron": Never("no cron: use a systemd timer or cron"),
    "unique-cron": Never("no cron: use a systemd timer or cron"),
}

# Option families refused by their prefix.
PREFIXES: dict[str, str] = {
    "cheaper": _SCALE,
    "hook-": "uWSGI hooks are not available (gunicorn-style hooks: docs/migrating.md)",
    "exec-": "uWSGI hooks are not available",
    "call-": "uWSGI hooks are not available",
    "route": _ROUTER,
    "response-route": _ROUTER,
    "final-route": _ROUTER,
    "error-route": _ROUTER,
    "if-": "conditional blocks are not supported: give the values",
    "endif": "conditional blocks are not supported: give the values",
    "for": "loops are not supported: give the values",
    "endfor": "loops are not supported: give the values",
    "spooler": "no spooler: use a task queue (Celery, RQ)",
    "mule": "no mules: use a task queue, or a separate process under systemd",
    "attach-daemon": "no attached daemons: run them under systemd or supervisor",
    "smart-attach-daemon": "no attached daemons: run them under systemd or supervisor",
    "cache": "no uWSGI cache: use Redis or memcached",
    "sharedarea": "no shared area: use Redis or a database",
    "static-": _STATIC,
    "emperor-": "one service per unbroken: run several under systemd or supervisor",
    "stats-": "use metrics_bind: Prometheus metrics",
    "carbon": "use metrics_bind: Prometheus metrics",
    "metrics": "use metrics_bind: Prometheus metrics",
    "legion": "no clustering: use a load balancer",
    "fastrouter": _ROUTER,
    "rawrouter": _ROUTER,
    "sslrouter": _ROUTER,
    "http-": "uWSGI's http router options do not apply: unbroken's workers serve HTTP "
    "themselves",
    "logfile-": _LOGS,
    "log-": _LOGS,
}

APP_OPTIONS = ("module", "wsgi", "wsgi-file", "file", "callable")
PLACEHOLDER_OPTIONS = ("set-placeholder", "set-ph")
OTHER_SECTIONS_NOTE = "sections other than [uwsgi] are not read"


def _refusal(key: str) -> str | None:
    rule = OPTIONS.get(key)
    if isinstance(rule, Never):
        return rule.why
    if rule is None and key not in APP_OPTIONS and key not in PLACEHOLDER_OPTIONS:
        for prefix, why in PREFIXES.items():
            if key.startswith(prefix):
                return why
    return None


def read(path: Path, environ: Mapping[str, str] | None = None) -> FileSettings:
    """The settings of a uWSGI ini file's `[uwsgi]` section; ConfigError naming every
    problem, in one line."""
    try:
        content = path.read_text()
    except OSError as error:
        raise ConfigError(f"{KIND} file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{KIND} file {path}: not UTF-8 text") from None
    return from_options(parse_ini(content, str(path)), path,
                        os.environ if environ is None else environ)


def from_options(options: list[Option], path: Path,
                 environ: Mapping[str, str]) -> FileSettings:
    """Map parsed ini options (plain data in the tests)."""
    collector = Collector(path, KIND)
    known: dict[str, str] = {}  # for %(option): values set so far
    app: dict[str, Option] = {}
    others = sorted({option.section for option in options if option.section != SECTION})
    mine = [option for option in options if option.section == SECTION]
    if not mine:
        raise ConfigError(f"{KIND} file {path}: no [uwsgi] section")
    for option in mine:
        key = option.key.replace("_", "-").lower()
        why = _refusal(key)
        if why is not None:
            collector.refuse(option.key, option.line, why)
            continue
        try:
            value = expand(option.value, path, known, environ)
        except ValueError as error:
            collector.refuse(option.key, option.line, str(error))
            continue
        if key in PLACEHOLDER_OPTIONS:
            name, equals, placeholder = value.partition("=")
            if not equals:
                collector.refuse(option.key, option.line, "expected name=value")
            known[name.strip()] = placeholder.strip()
            continue
        known[key] = value
        if key in APP_OPTIONS:
            if key in app:
                collector.refuse(option.key, option.line, f"given twice (line "
                                 f"{app[key].line} too); one app per service")
            app[key] = dataclasses.replace(option, value=value)
            continue
        rule = OPTIONS.get(key)
        if rule is None:
            close = difflib.get_close_matches(key, [*OPTIONS, *APP_OPTIONS], n=1, cutoff=0.8)
            hint = f": did you mean {close[0]}?" if close else \
                "; nothing in unbroken maps to it (docs/migrating.md lists what does)"
            collector.refuse(option.key, option.line, f"is not a uWSGI option unbroken "
                             f"knows{hint}")
            continue
        assert not isinstance(rule, Never)
        try:
            mapped = rule(value)
        except Refused as refused:
            collector.refuse(option.key, option.line, str(refused))
            continue
        except ValueError as error:
            collector.refuse(option.key, option.line, str(error))
            continue
        if mapped is None:
            collector.accept(option.key)
        else:
            collector.set(option.key, option.line, mapped)
    _app(collector, app)
    values = collector.values()
    if others:
        collector.notes.append(f"{path}: {OTHER_SECTIONS_NOTE}: "
                               f"{', '.join(f'[{name}]' for name in others)}")
    return FileSettings(values, collector.all_notes())


def _app(collector: Collector, app: dict[str, Option]) -> None:
    """`module = pkg.mod[:callable]` or `wsgi-file = path.py`, with `callable`
    (default `application`, as in uWSGI)."""
    module = app.get("module") or app.get("wsgi")
    wsgi_file = app.get("wsgi-file") or app.get("file")
    callable_ = app.get("callable")
    if module and wsgi_file:
        collector.refuse(wsgi_file.key, wsgi_file.line, f"and {module.key} (line "
                         f"{module.line}) both name the app; keep one")
        return
    given = module or wsgi_file
    if given is None:
        if callable_:
            collector.refuse(callable_.key, callable_.line, "needs module or wsgi-file")
        return
    target, colon, attr = given.value.partition(":")
    if given is wsgi_file:
        target, colon, attr = given.value, "", ""
    if colon and callable_ and attr != callable_.value:
        collector.refuse(callable_.key, callable_.line, f"{callable_.value!r} and "
                         f"{given.key} = {given.value} (line {given.line}) name different "
                         "callables; keep one")
        return
    name = attr or (callable_.value if callable_ else "application")
    collector.set(given.key, given.line, {"app": f"{target}:{name}"})
