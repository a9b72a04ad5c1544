"""Any-language workers (--cmd): programs that take their socket from fd 3 and say READY=1.

Each is reloaded under load to a new build with zero failed requests, and a build
that exits at start is refused while the old one keeps serving.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from loadcheck import assert_no_failures, load_both, reload_under_load, stop_both, versions
from release import point_current

from unbroken.loadgen import Load, summarize

APPS = Path(__file__).resolve().parents[1] / "apps"
GO_SOURCE = Path(__file__).resolve().parents[2] / "examples" / "go" / "main.go"


def python_release(root: Path, version: str, *extra: str) -> None:
    """A release whose `run` script starts the stdlib socket server as VERSION."""
    directory = root / "releases" / version
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(APPS / "socket_server.py", directory / "socket_server.py")
    script = directory / "run"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} socket_server.py {version} "
                      f"{' '.join(extra)}\n")
    script.chmod(0o755)


def test_program_reloads_under_load(service_factory: Any, releases: Path) -> None:
    python_release(releases, "v1")
    python_release(releases, "v2", "--boot", "1")
    service = service_factory("--cmd", "./run", app=None)
    state = service.wait_serving()
    assert all(w["state"] == "ready" for w in state["workers"])
    reply, samples = reload_under_load(service, releases, "v2")
    assert reply.ok, (reply, service.output()[-2000:])
    assert reply.data["seconds"] >= 1.0  # ready only once the program said READY=1
    assert_no_failures(samples, service)
    served = versions(samples)
    assert served[0] == "v1" and served[-1] == "v2"


def test_program_that_exits_at_start_is_refused(service_factory: Any, releases: Path) -> None:
    python_release(releases, "v1")
    python_release(releases, "v2", "--fail")
    service = service_factory("--cmd", "./run", app=None)
    service.wait_serving()
    loads = load_both(service)
    point_current(releases, "v2")
    result = service.reload_cli()
    samples = stop_both(loads)
    assert result.returncode == 1
    assert "exited before ready (exit code 1)" in result.stderr
    assert_no_failures(samples, service)
    assert set(versions(samples)) == {"v1"}
    assert service.status()["generation"] == 1


def test_ready_after_for_programs_that_cannot_notify(service_factory: Any,
                                                     releases: Path) -> None:
    python_release(releases, "v1", "--no-notify")
    python_release(releases, "v2", "--no-notify")
    service = service_factory("--cmd", "./run", "--ready-after", "0.5", app=None)
    service.wait_serving()
    reply, samples = reload_under_load(service, releases, "v2")
    assert reply.ok and reply.data["seconds"] >= 0.5
    assert_no_failures(samples, service)


def go_release(root: Path, version: str) -> None:
    directory = root / "releases" / version
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["go", "build", "-o", str(directory / "server"), "-ldflags",
                    f"-X main.version={version}", str(GO_SOURCE)], check=True, timeout=300,
                   env={**os.environ, "GOFLAGS": "-buildvcs=false"})


def require(program: str) -> None:
    if shutil.which(program) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{program} is not installed; .ci/run installs it")
        pytest.skip(f"{program} is not installed")


def test_go_server_reloads_and_bad_build_is_refused(service_factory: Any,
                                                    releases: Path) -> None:
    require("go")
    for version in ("v1", "v2", "broken"):
        go_release(releases, version)
    point_current(releases, "v1")
    service = service_factory("--cmd", "./server", app=None)
    service.wait_serving()
    reply, samples = reload_under_load(service, releases, "v2")
    assert reply.ok, reply
    assert_no_failures(samples, service)
    assert versions(samples)[-1] == "v2"
    reply, samples = reload_under_load(service, releases, "broken")
    assert not reply.ok and "exited before ready" in reply.message
    assert_no_failures(samples, service)
    assert set(versions(samples)) == {"v2"}


GUNICORN_APP = '''
import os
def app(environ, start_response):
    body = ("{version} %d\\n" % os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''

ASGI_APP = '''
import os
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = ("{version} %d\\n" % os.getpid()).encode()
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]}})
    await send({{"type": "http.response.body", "body": body}})
'''

TORNADO_APP = '''
import asyncio, os, signal, socket
import tornado.web, tornado.httpserver

class Main(tornado.web.RequestHandler):
    def get(self):
        if DRAINING.is_set():
            self.set_header("Connection", "close")
        self.write("{version} %d\\n" % os.getpid())

DRAINING = asyncio.Event()

async def main():
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/", Main)]),
                                           idle_connection_timeout=5)
    listener = socket.socket(fileno=3)
    listener.setblocking(False)  # systemd passes sockets blocking, as it was bound
    server.add_sockets([listener])
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, DRAINING.set)
    await DRAINING.wait()
    server.stop()  # stop accepting; the master's socket keeps queueing for others
    # Let connections end by themselves (Connection: close, or the idle timeout):
    # close_all_connections() right away would cut kept-alive ones mid-send.
    deadline = asyncio.get_running_loop().time() + 20
    while server._connections and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)

asyncio.run(main())
'''


def write_app(root: Path, version: str, filename: str, template: str) -> None:
    directory = root / "releases" / version
    directory.mkdir(parents=True, exist_ok=True)
    (directory / filename).write_text(template.format(version=version))


@pytest.mark.parametrize("name, filename, template, command", [
    ("gunicorn", "wsgi_app.py", GUNICORN_APP,
     f"{sys.executable} -m gunicorn -w 1 -k gthread --threads 4 wsgi_app:app"),
    ("uvicorn", "asgi_app.py", ASGI_APP,
     f"{sys.executable} -m uvicorn --fd 3 asgi_app:app --log-level warning"),
    ("tornado", "tornado_app.py", TORNADO_APP, f"{sys.executable} tornado_app.py"),
])
def test_python_servers_as_workers(service_factory: Any, releases: Path, name: str,
                                   filename: str, template: str, command: str) -> None:
    pytest.importorskip(name)
    for version in ("v1", "v2"):
        write_app(releases, version, filename, template)
    point_current(releases, "v1")
    extra = ("--ready-after", "1.5") if name == "uvicorn" else ()  # uvicorn sends no READY=1
    service = service_factory("--cmd", command, *extra, app=None)
    service.wait_serving()
    reply, samples = reload_under_load(service, releases, "v2",
                                       keep_alive_clients=name != "uvicorn")
    assert reply.ok, (reply, service.output()[-3000:])
    assert versions(samples)[-1] == "v2"
    if name != "uvicorn":
        assert_no_failures(samples, service)
        return
    # uvicorn, on SIGTERM, closes every connection it accepted that has no request in
    # progress, keep-alive or fresh, racing clients that are sending on it (ANCHORS.md
    # §0: 9-11 keep-alive failures per restart, ~1 with new connections). No master can
    # fix that from outside: docs/cmd-workers.md says so and points at --worker-class asgi.
    # What we can hold it to: no refused connection (the master's socket never closed),
    # no 5xx, and only those few resets.
    summary = summarize(samples)
    assert set(summary.by_kind) <= {"reset"}, summary
    assert summary.requests > 50 and summary.failures <= summary.requests // 100, summary


PROBED_APP = '''
import os
def app(environ, start_response):
    if environ["PATH_INFO"] == "/healthz":
        status = {health!r}
    else:
        status = "200 OK"
    body = ("{version} %d\\n" % os.getpid()).encode()
    start_response(status, [("Content-Length", str(len(body)))])
    return [body]
'''


def test_master_probes_each_program_on_its_private_socket(service_factory: Any,
                                                          releases: Path) -> None:
    """gunicorn serves every socket it is given, so it answers the master's probe on the
    private `probe` socket; a release whose health check fails is refused."""
    pytest.importorskip("gunicorn")
    for version, health in (("v1", "200 OK"), ("v2", "200 OK"), ("v3", "503 Unhealthy")):
        directory = releases / "releases" / version
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "wsgi_app.py").write_text(PROBED_APP.format(version=version, health=health))
    point_current(releases, "v1")
    command = f"{sys.executable} -m gunicorn -w 1 -k gthread --threads 4 wsgi_app:app"
    service = service_factory("--cmd", command, "--health-path", "/healthz", app=None)
    service.wait_serving()
    reply, samples = reload_under_load(service, releases, "v2")
    assert reply.ok, (reply, service.output()[-3000:])
    assert_no_failures(samples, service)
    reply, samples = reload_under_load(service, releases, "v3")
    assert not reply.ok
    assert "health probe GET /healthz answered 'HTTP/1.1 503 Unhealthy'" in reply.message
    assert_no_failures(samples, service)
    # A program accepts from the moment it starts, so (unlike a Python worker, which
    # accepts only after its probe) v3 may answer a few requests before it is refused;
    # once refused, v2 alone serves.
    assert versions(samples)[0] == "v2"
    tail = Load(service.address, clients=2, keep_alive=False, max_requests=40,
                duration=10).start().wait()
    assert len(tail) == 40 and set(versions(tail)) == {"v2"}
