"""Writes test releases: a directory holding `app.py` whose behaviour the test chooses.

Each release answers `<version> <pid>` so a test can tell which code served each
request. Knobs: a slow import, an import that raises, a failing health path,
and `/slow?seconds` for requests that stay in flight across a reload.
"""

from __future__ import annotations

import os
from pathlib import Path

TEMPLATE = '''\
import os
import time
from urllib.parse import parse_qs

VERSION = {version!r}
time.sleep({import_delay!r})
if {broken!r}:
    raise RuntimeError("release {version} is broken on purpose")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    status = "200 OK"
    if path == "/slow":
        seconds = float(parse_qs(environ["QUERY_STRING"]).get("s", ["2"])[0])
        time.sleep(seconds)
    elif path == "/healthz":
        status = {probe_status!r}
    elif path == "/crash":
        os._exit(1)
    body = ("%s %d\\n" % (VERSION, os.getpid())).encode()
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))])
    return [body]
'''


def write_release(root: Path, version: str, *, import_delay: float = 0.0, broken: bool = False,
                  probe_status: str = "200 OK") -> Path:
    directory = root / "releases" / version
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.py").write_text(TEMPLATE.format(
        version=version, import_delay=import_delay, broken=broken, probe_status=probe_status))
    return directory


def point_current(root: Path, version: str) -> Path:
    """Switch `root/current` to `releases/<version>` atomically, as deploy tools do."""
    current = root / "current"
    temporary = root / ".current.tmp"
    if temporary.is_symlink():
        temporary.unlink()
    os.symlink(os.path.join("releases", version), temporary)
    os.replace(temporary, current)
    return current
