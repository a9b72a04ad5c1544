"""Every setting is declared once, here.

Rule: a setting is one dataclass field of `Config` created with `setting()`. The
CLI flags (`cli/`), the environment variables (`UNBROKEN_<NAME>`), the config-file
keys and `docs/settings.md` are all generated from these declarations; nothing
copies a setting by hand through another signature (uvicorn's 47 settings copied
through four signatures is the cautionary tale).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from unbroken.config.parse import (
    access_log_format,
    address_list,
    byte_size,
    cert_reqs,
    command,
    event_loop,
    log_level,
    non_negative_float,
    non_negative_int,
    octal,
    positive_float,
    positive_int,
    signal_name,
    switch,
    worker_class,
)

SECONDS = 1.0
KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class Declaration:
    """How one setting appears outside the code."""

    flags: tuple[str, ...]
    help: str
    parse: Callable[[str], Any]
    repeatable: bool = False
    metavar: str | None = None


def setting(
    default: Any,
    *flags: str,
    help: str,
    parse: Callable[[str], Any] = str,
    repeatable: bool = False,
    metavar: str | None = None,
) -> Any:
    """Declare one setting: its default, its CLI flags and its help text."""
    declaration = Declaration(flags, help, parse, repeatable, metavar)
    return field(default=default, metadata={"declaration": declaration})


@dataclass(frozen=True)
class Config:
    """The whole configuration of one service. Frozen: a reload makes a new one."""

    app: str | None = setting(
        None, help="The application: `module:attr`, `path/to/file.py:attr` or `module:factory()`."
    )
    bind: tuple[str, ...] = setting(
        ("127.0.0.1:8000",), "-b", "--bind", repeatable=True, metavar="ADDRESS",
        help="Listen on `host:port`, `[::]:port`, `unix:/path` or `fd://N` (repeatable).",
    )
    workers: int = setting(
        1, "-w", "--workers", parse=positive_int, help="Worker processes to keep serving."
    )
    threads: int = setting(
        1, "--threads", parse=positive_int,
        help="Threads per WSGI worker running the app. 1: the app runs on the worker's event "
        "loop when nothing else waits (fastest; docs/performance.md). N > 1: every request "
        "in a pool of N threads, so one slow request does not stop the others.",
    )
    worker_class: str = setting(
        "auto", "-k", "--worker-class", parse=worker_class,
        help="Engine that serves the app: wsgi, asgi or gevent; auto picks wsgi or asgi "
        "from the app object, and a -k that does not fit the app is refused at boot. "
        "gunicorn's sync, gthread and uvicorn.workers.UvicornWorker are taken too, with a "
        "note (docs/migrating.md)."
    )
    loop: str = setting(
        "auto", "--loop", parse=event_loop,
        help="The workers' event loop: auto (uvloop where installed, asyncio's own "
        "otherwise, and always for -k gevent), asyncio or uvloop.",
    )
    health_path: str | None = setting(
        None, "--health-path", metavar="PATH",
        help="A new worker calls the app in-process with `GET PATH` and must get a 2xx "
        "before it counts as ready.",
    )
    cmd: str | None = setting(
        None, "--cmd", parse=command, metavar="'PROGRAM ARGS'",
        help="Run each worker as this program instead of a Python app: it gets the sockets "
        "as systemd passes them (fd 3.., LISTEN_FDS) and NOTIFY_SOCKET for READY=1.",
    )
    ready_after: float | None = setting(
        None, "--ready-after", parse=non_negative_float, metavar="SECONDS",
        help="For --cmd programs that cannot send READY=1: count as ready after this long.",
    )
    drain_signal: str = setting(
        "TERM", "--drain-signal", parse=signal_name,
        help="Signal that tells a --cmd worker to stop accepting and finish (then SIGKILL "
        "after --graceful-timeout).",
    )
    boot_timeout: float = setting(
        60 * SECONDS, "--boot-timeout", parse=positive_float,
        help="Seconds a new worker may take to import, pass its probe and accept.",
    )
    boot_nice: int = setting(
        10, "--boot-nice", parse=non_negative_int, metavar="N",
        help="A booting worker runs N nice levels lower in CPU priority (capped at 19) and "
        "goes back to the master's before it accepts, so a reload's imports do not take CPU "
        "from the serving workers. Only where the worker may raise its priority again "
        "(CAP_SYS_NICE, or RLIMIT_NICE: systemd's LimitNICE=); else it boots as is. 0: off.",
    )
    graceful_timeout: float = setting(
        30 * SECONDS, "--graceful-timeout", parse=non_negative_float,
        help="Seconds a draining worker may take to finish in-flight requests.",
    )
    keep_alive: float = setting(
        5 * SECONDS, "--keep-alive", parse=non_negative_float,
        help="Seconds an idle keep-alive connection is kept open (0: no keep-alive; every "
        "response says Connection: close).",
    )
    header_timeout: float = setting(
        10 * SECONDS, "--header-timeout", parse=positive_float,
        help="Seconds a client has to send a request line and all its headers (then 408).",
    )
    body_timeout: float = setting(
        20 * SECONDS, "--body-timeout", parse=positive_float,
        help="Seconds a request body has for its first bytes, and the longest gap between two "
        "of its parts (then 408).",
    )
    body_min_rate: float = setting(
        500.0, "--body-min-rate", parse=non_negative_float, metavar="BYTES_PER_SECOND",
        help="After its first --body-timeout seconds a request body must average this many "
        "bytes a second, or it is cut with 408 (Apache's MinRate; 0: only the gap counts).",
    )
    discard_timeout: float = setting(
        5 * SECONDS, "--discard-timeout", parse=positive_float,
        help="Seconds the rest of a body the app stopped reading is read and dropped after "
        "the response, to keep the connection alive; then it closes. A body the app never "
        "asked for is not waited for: its response says Connection: close.",
    )
    timeout: float = setting(
        30 * SECONDS, "-t", "--timeout", parse=positive_float,
        help="A worker silent (no heartbeat) for this many seconds is killed and replaced. "
        "Unlike gunicorn's --timeout, a long request does not make a worker silent (it "
        "heartbeats from a thread): for that, --request-timeout.",
    )
    request_timeout: float = setting(
        0.0, "--request-timeout", parse=non_negative_float, metavar="SECONDS",
        help="A request running longer is answered 503 (its connection closed if the "
        "response had begun), logged, and its worker replaced: a new one is ready before "
        "it drains (uWSGI's harakiri; 0: off). Not gunicorn's --timeout, which is ours too: "
        "a worker silent that long is killed.",
    )
    max_requests: int = setting(
        0, "--max-requests", parse=non_negative_int,
        help="Recycle a worker after this many requests, through the same gated roll (0: never).",
    )
    max_requests_jitter: int = setting(
        0, "--max-requests-jitter", parse=non_negative_int,
        help="Add up to this many requests at random to each worker's --max-requests.",
    )
    reload_surge: int = setting(
        0, "--reload-surge", parse=non_negative_int, metavar="K",
        help="Roll K workers at a time on reload; 0 boots the whole new generation first.",
    )
    reload_stable_for: float = setting(
        3 * SECONDS, "--reload-stable-for", parse=non_negative_float, metavar="SECONDS",
        help="After a reload's new workers are ready, keep the old ones parked (not "
        "accepting, able to resume) this long; a new worker dying meanwhile rolls back.",
    )
    reload_on_touch: str | None = setting(
        None, "--reload-on-touch", metavar="FILE", help="Reload when FILE's mtime changes."
    )
    control: str | None = setting(
        None, "--control", metavar="PATH",
        help="Control socket path (default: in the runtime dir, named after --name).",
    )
    master_fifo: str | None = setting(
        None, "--master-fifo", metavar="PATH",
        help="A FIFO taking one-letter commands: r reload, q stop, + and - scale.",
    )
    ready_bind: str | None = setting(
        None, "--ready-bind", metavar="ADDRESS",
        help="Serve a readiness endpoint for load balancers here (`host:port`): 200 while "
        "serving, 503 from the moment a stop begins.",
    )
    drain_delay: float = setting(
        0 * SECONDS, "--drain-delay", parse=non_negative_float, metavar="SECONDS",
        help="At a graceful stop, answer 503 on --ready-bind this long before workers stop "
        "accepting, so a load balancer stops sending first.",
    )
    metrics_bind: str | None = setting(
        None, "--metrics-bind", metavar="ADDRESS",
        help="Serve Prometheus metrics at `/metrics` here (`host:port`), aggregated from "
        "all workers by the master.",
    )
    pid: str | None = setting(None, "-p", "--pid", metavar="FILE", help="Write the master's PID.")
    chdir: str | None = setting(
        None, "--chdir", metavar="DIR",
        help="Directory the workers run in; a symlink is resolved again at every reload.",
    )
    python: str | None = setting(
        None, "--python", metavar="PATH",
        help="Interpreter the Python workers run with (a release's `.venv/bin/python`); "
        "relative to --chdir, and resolved again at every reload like it, so "
        "`current/.venv/bin/python` follows the switch. Default: the master's own.",
    )
    name: str = setting("unbroken", "-n", "--name", help="Service name (default control path).")
    log_level: str = setting(
        "info", "--log-level", parse=log_level, help="debug, info, warning, error or critical."
    )
    access_logfile: str | None = setting(
        None, "--access-logfile", metavar="FILE", help="Access log path, or `-` for stdout."
    )
    worker_connections: int = setting(
        1000, "--worker-connections", parse=positive_int,
        help="Connections a worker holds open at once (and a gevent worker's greenlets). At "
        "the cap, with a client waiting, the longest-idle kept-alive connection is closed "
        "for it, else the one stalled longest (silent, or a head or body trickling: 408).",
    )
    certfile: str | None = setting(
        None, "--certfile", metavar="FILE",
        help="Serve HTTPS with this PEM certificate (chain); read by each new worker at boot, "
        "so a reload rotates it. Needs --keyfile.",
    )
    keyfile: str | None = setting(
        None, "--keyfile", metavar="FILE", help="The PEM private key of --certfile."
    )
    ca_certs: str | None = setting(
        None, "--ca-certs", metavar="FILE",
        help="PEM bundle of the CAs that client certificates must chain to (--cert-reqs).",
    )
    cert_reqs: str = setting(
        "none", "--cert-reqs", parse=cert_reqs,
        help="Client certificates: none, optional (verified when sent) or required.",
    )
    user: str | None = setting(
        None, "-u", "--user", metavar="USER",
        help="Run workers as this user (the master binds first, so ports below 1024 work); "
        "needs the master to run as root.",
    )
    group: str | None = setting(
        None, "-g", "--group", metavar="GROUP",
        help="Run workers with this group (default: --user's primary group).",
    )
    umask: int | None = setting(
        None, "--umask", parse=octal, metavar="MASK",
        help="umask of the master and its workers (a unix socket is 0660 whatever it is, 0666 "
        "with umask 0).",
    )
    access_log_format: str = setting(
        "combined", "--access-log-format", parse=access_log_format, metavar="combined|json",
        help="Access log lines: `combined` (Apache/nginx) or `json` (one object per line).",
    )
    forwarded_allow_ips: str = setting(
        "127.0.0.1,::1", "--forwarded-allow-ips", parse=address_list, metavar="ADDRESSES",
        help="Comma-separated IPs or networks (`10.0.0.0/8`), or `*`: proxies whose "
        "X-Forwarded-For/-Proto/-Host set the client address, scheme and host, and who may "
        "send a --proxy-protocol header. A unix-socket peer is always trusted.",
    )
    proxy_protocol: bool = setting(
        False, "--proxy-protocol", parse=switch,
        help="Each connection starts with a PROXY protocol v1 or v2 header (HAProxy "
        "`send-proxy`); its source address becomes the client. Peers outside "
        "--forwarded-allow-ips are closed.",
    )
    backlog: int = setting(
        2048, "--backlog", parse=positive_int, help="Listen queue length of each socket."
    )
    limit_request_line: int = setting(
        8 * KIB, "--limit-request-line", parse=positive_int,
        help="Longest request line in bytes (then 414).",
    )
    limit_request_fields: int = setting(
        100, "--limit-request-fields", parse=positive_int,
        help="Most header fields in a request (then 431).",
    )
    limit_request_field_size: int = setting(
        8 * KIB, "--limit-request-field-size", parse=positive_int,
        help="Longest header field in bytes (then 431).",
    )
    limit_request_body: int = setting(
        1024 * MIB, "--limit-request-body", parse=byte_size, metavar="BYTES",
        help="Largest request body (10M, 1G; 0: no limit). 413 before the app runs when "
        "Content-Length says more; a chunked body is cut with 413 when it crosses it.",
    )
    limit_chunk_extensions: int = setting(
        4 * KIB, "--limit-chunk-extensions", parse=byte_size, metavar="BYTES",
        help="Largest total of chunk extensions (`;name=value` after a chunk size, which no "
        "app sees) in one request body; more is 400.",
    )


def declarations() -> list[tuple[dataclasses.Field[Any], Declaration]]:
    """Each field of `Config` with its declaration, in declaration order."""
    return [(f, f.metadata["declaration"]) for f in dataclasses.fields(Config)]
