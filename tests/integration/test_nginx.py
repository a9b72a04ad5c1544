"""nginx for real in front of unbroken: upstream keep-alive through reloads, never a 502.

nginx pools idle connections to the upstream and reuses them for later requests, which is
where a reload usually shows: a worker that closes a pooled connection as nginx writes to it
gives the client a 502. The proxy's retry on such a failure is switched off here, so only
unbroken's own behaviour can keep the count at zero.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from asuser import SRC, need_root_tools, need_runnable, open_directory, system_user, traversable
from loadcheck import assert_no_failures, load_both, stop_both, versions
from processes import stop_process
from release import point_current, write_release

RELOADS = ("v2", "v3", "v4")
START_TIMEOUT = 10.0  # seconds for nginx to answer its first request


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def nginx_config(tmp_path: Path, port: int, upstream: str, user: str | None = None) -> Path:
    temp_paths = "\n".join(f"    {kind}_temp_path {tmp_path / kind};"
                           for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # As root, nginx's workers would switch to `nobody`, which cannot enter pytest's
    # mode-0700 tmp directory (the unix socket, the temp paths); non-root ignores `user`.
    if user is None:
        user = "user root;" if os.geteuid() == 0 else ""
    config = tmp_path / "nginx.conf"
    config.write_text(f"""\
daemon off;
master_process on;
worker_processes 2;
{user}
pid {tmp_path / 'nginx.pid'};
error_log {tmp_path / 'nginx-error.log'} warn;
events {{ worker_connections 512; }}
http {{
    log_format upstream '$status $upstream_status $upstream_addr $request_time';
    access_log {tmp_path / 'nginx-access.log'} upstream;
{temp_paths}
    upstream app {{
        server {upstream};
        keepalive 16;
        # Below unbroken's --keep-alive (5 s by default): nginx drops an idle pooled
        # connection before the worker would, so the two never race to use and close it.
        keepalive_timeout 4s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Stricter than docs/nginx.md: no retry may hide a failed upstream exchange.
            proxy_next_upstream off;
        }}
    }}
}}
""")
    return config


class Nginx:
    def __init__(self, binary: str, tmp_path: Path, upstream: str,
                 user: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        config = nginx_config(tmp_path, self.port, upstream, user)
        # -e: the error log nginx opens before it has read the config (not /var/log).
        self.process = subprocess.Popen(
            [binary, "-p", str(tmp_path), "-c", str(config), "-e",
             str(tmp_path / "nginx-error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def output(self) -> str:
        logs = ("nginx-error.log", "nginx-access.log")
        return "\n".join((self.tmp_path / name).read_text(errors="replace")[-2000:]
                         for name in logs if (self.tmp_path / name).exists())

    def wait_answering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited:\n{self.output()}")
            try:
                with socket.create_connection(self.address, timeout=5) as probe:
                    probe.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if probe.recv(100).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass  # not listening yet
            time.sleep(0.05)
        raise AssertionError(f"nginx did not answer within {START_TIMEOUT}s:\n{self.output()}")

    def stop(self) -> None:
        stop_process(self.process, signal.SIGQUIT, timeout=10)  # nginx's graceful shutdown


@pytest.fixture
def nginx_binary() -> str:
    # Debian puts nginx in /usr/sbin, which a non-root PATH often lacks.
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is missing; scripts/install-test-deps installs it")
        pytest.skip("nginx is not installed")
    return found


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_nginx_keepalive_upstream_sees_no_502_across_reloads(
        nginx_binary: str, transport: str, service_factory: Any, releases: Path,
        tmp_path: Path) -> None:
    app_socket = tmp_path / "app.sock"
    if transport == "unix":
        service = service_factory("-b", f"unix:{app_socket}")
        upstream = f"unix:{app_socket}"
    else:
        service = service_factory()
        upstream = "{}:{}".format(*service.address)
    service.wait_serving()
    for version in RELOADS:
        write_release(releases, version)
    nginx = Nginx(nginx_binary, tmp_path, upstream)
    try:
        nginx.wait_answering()
        loads = load_both(nginx)
        time.sleep(0.3)  # some requests against generation 1 first
        for version in RELOADS:
            point_current(releases, version)
            reply = service.reload()
            assert reply.ok, (reply, service.output()[-3000:])
            time.sleep(0.3)  # load on the new generation before the next reload
        samples = stop_both(loads)
        assert service.status()["generation"] == 1 + len(RELOADS)
        assert_no_failures(samples, nginx)
        assert versions(samples)[-1] == RELOADS[-1]
        assert {"v1", *RELOADS} <= set(versions(samples))
    finally:
        nginx.stop()


DOC = Path(__file__).resolve().parents[2] / "docs" / "nginx.md"


def documented(starts: str) -> str:
    """The shell line of docs/nginx.md that starts with `starts`, without its comment."""
    lines = [line.split("#")[0].strip() for line in DOC.read_text().splitlines()
             if line.startswith(starts)]
    assert len(lines) == 1, (starts, lines)
    return lines[0]


def test_the_unix_socket_set_up_of_the_nginx_page_as_written(nginx_binary: str) -> None:
    """docs/nginx.md's unix socket lines, run: the service as its own user, nginx's workers
    as another put in the service's group by the page's `usermod`; the socket's 0660 lets
    them connect (the 0755 that the usual umask 022 gave answered 502)."""
    need_root_tools("usermod", "install")
    scratch = open_directory("ubt-nginx-unix-")
    app_user, proxy_user = "ubtngxapp", "ubtngxproxy"

    def named(line: str) -> str:
        return (line.replace("/run/myapp", str(scratch / "run"))
                .replace("myapp", app_user).replace("www-data", proxy_user))

    try:
        with system_user(app_user), system_user(proxy_user):
            need_runnable(app_user, scratch)
            # `systemctl restart nginx` is the nginx started below, after the usermod.
            usermod = documented("usermod").split("&&")[0]
            assert "systemctl restart nginx" in documented("usermod")
            subprocess.run(named(usermod), shell=True, check=True)
            subprocess.run(named(documented("install -d")), shell=True, check=True)
            package = scratch / "app" / app_user
            package.mkdir(parents=True)
            (package / "__init__.py").write_text("")
            (package / "wsgi.py").write_text(
                "def application(environ, start_response):\n"
                "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                "    return [b'v1']\n")
            (scratch / "nginx").mkdir()
            serve = named(documented("unbroken serve myapp.wsgi")).replace(
                "unbroken", f"{sys.executable} -m unbroken", 1)
            app_socket = scratch / "run" / "app.sock"
            assert f"unix:{app_socket}" in serve
            log = open(scratch / "service.log", "wb")  # noqa: SIM115 -- closed below
            service = subprocess.Popen(
                traversable(app_user, ["runuser", "-u", app_user, "--", "sh", "-c",
                                       f"exec {serve} -w 1"], scratch),
                cwd=scratch / "app", env={**os.environ, "PYTHONPATH": str(SRC)}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
            nginx = None
            try:
                deadline = time.monotonic() + 30
                while not app_socket.exists():
                    assert service.poll() is None and time.monotonic() < deadline, \
                        (scratch / "service.log").read_text()
                    time.sleep(0.05)
                info = app_socket.stat()
                assert (stat.S_IMODE(info.st_mode), app_socket.owner(), app_socket.group()) \
                    == (0o660, app_user, app_user)
                nginx = Nginx(nginx_binary, scratch / "nginx", f"unix:{app_socket}",
                              user=f"user {proxy_user};")
                nginx.wait_answering()  # a 200 through the socket, from nginx's worker
            finally:
                if nginx is not None:
                    nginx.stop()
                stop_process(service, timeout=40)
                log.close()
                shutil.rmtree(f"/tmp/unbroken-{pwd.getpwnam(app_user).pw_uid}",
                              ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
