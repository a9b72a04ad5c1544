"""A gunicorn.conf.py and a uwsgi.ini with every option issue 16 lists, served and reloaded
under load with no failed request: the reload by SIGHUP for gunicorn's file (its habit),
by the master FIFO and the touch file for uWSGI's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from haproxy import free_port
from loadcheck import assert_no_failures, versions
from release import point_current, write_release
from waiting import wait_until

from unbroken.control.client import ControlUnavailable, call
from unbroken.loadgen import Load

GUNICORN_CONF = """
wsgi_app = "app:app"
bind = ["127.0.0.1:{port}"]
workers = 2
worker_class = "gthread"
threads = 2
timeout = 30
graceful_timeout = 10
keepalive = 5
accesslog = "{dir}/access.log"
errorlog = "-"
loglevel = "info"
pidfile = "{dir}/gunicorn.pid"
preload_app = False
max_requests = 100000
max_requests_jitter = 10
forwarded_allow_ips = "127.0.0.1"
raw_env = []
umask = 0o022
user = "root"
group = "root"
chdir = "{current}"
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
proxy_protocol = False
"""

UWSGI_INI = """[uwsgi]
http-socket = 127.0.0.1:{port}
chdir = {current}
module = app:app
processes = 2
threads = 2
master = true
master-fifo = {dir}/uwsgi.fifo
touch-reload = {dir}/reload.touch
lazy-apps = true
pidfile = {dir}/uwsgi.pid
uid = root
gid = root
vacuum = true
die-on-term = true
enable-threads = true
single-interpreter = true
harakiri = 30
max-requests = 100000
listen = 1024
"""


class Served:
    def __init__(self, argv: list[str], directory: Path, port: int) -> None:
        self.directory, self.port = directory, port
        self.control = str(directory / "ctl.sock")
        self.log = open(directory / "serve.log", "wb")  # noqa: SIM115 -- closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "unbroken", "serve", *argv, "--control", self.control,
             "--reload-stable-for", "0.5"], cwd=directory, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True)

    def generation(self) -> int | None:
        try:
            state = call(self.control, "status", timeout=5).data
        except (ControlUnavailable, OSError):
            return None
        return int(state["generation"]) if state["phase"] == "serving" else None

    def output(self) -> str:
        self.log.flush()
        return (self.directory / "serve.log").read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        code = self.process.wait(30)
        self.log.close()
        return code


def _reloads_under_load(served: Served, releases: Path, triggers: list[tuple[str, object]]) -> None:
    assert wait_until(served.generation, timeout=30, message="serving") == 1
    load = Load(("127.0.0.1", served.port), clients=3, keep_alive=True, duration=60,
                max_requests=200_000, timeout=15).start()
    time.sleep(0.3)
    for number, (version, trigger) in enumerate(triggers, start=2):
        write_release(releases, version)
        point_current(releases, version)
        trigger()  # type: ignore[operator]
        wait_until(lambda n=number: served.generation() == n, timeout=30,
                   message=f"generation {number} serving after {version}")
    time.sleep(0.3)
    samples = load.stop()
    assert_no_failures(samples, served)
    seen = versions(samples)
    assert seen[0] == "v1" and seen[-1] == triggers[-1][0], sorted(set(seen))


def test_a_gunicorn_conf_py_with_every_listed_option_reloads_under_load(
        releases: Path, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(GUNICORN_CONF.format(port=port, dir=tmp_path,
                                           current=releases / "current"))
    served = Served(["-c", str(config)], tmp_path, port)
    try:
        def hup() -> None:
            os.kill(served.process.pid, signal.SIGHUP)

        _reloads_under_load(served, releases, [("v2", hup), ("v3", hup)])
        assert (tmp_path / "gunicorn.pid").read_text().strip() == str(served.process.pid)
        assert '"GET / HTTP/1.1" 200' in (tmp_path / "access.log").read_text()
    finally:
        assert served.stop() == 0, served.output()[-3000:]
    assert not (tmp_path / "gunicorn.pid").exists()


def test_a_uwsgi_ini_with_every_listed_option_reloads_under_load_by_fifo_and_touch(
        releases: Path, tmp_path: Path) -> None:
    port = free_port()
    ini = tmp_path / "uwsgi.ini"
    ini.write_text(UWSGI_INI.format(port=port, dir=tmp_path, current=releases / "current"))
    (tmp_path / "reload.touch").write_text("")
    served = Served(["--ini", str(ini)], tmp_path, port)
    try:
        def fifo() -> None:
            with open(tmp_path / "uwsgi.fifo", "w") as pipe:
                pipe.write("r")

        def touch() -> None:
            os.utime(tmp_path / "reload.touch", (time.time() + 5, time.time() + 5))

        _reloads_under_load(served, releases, [("v2", fifo), ("v3", touch)])
        assert (tmp_path / "uwsgi.pid").read_text().strip() == str(served.process.pid)
    finally:
        assert served.stop() == 0, served.output()[-3000:]
