"""A small WSGI app standing in for a real project: it says which release answered.

`RELEASE` is rewritten by `unbroken drill` for each release it writes; `BROKEN` makes the
import fail the way a bad deploy does (a typo, a missing dependency).
"""

import json
import os
import time

RELEASE = "v1"
BOOT_SECONDS = 0.0
BROKEN = False

time.sleep(BOOT_SECONDS)  # apps that import a lot take a while before they can serve
if BROKEN:
    raise ImportError("No module named 'a_dependency_this_release_forgot'")


def app(environ, start_response):  # type: ignore[no-untyped-def]
    if environ["PATH_INFO"] == "/healthz":
        body = b"ok\n"
    else:
        body = json.dumps({"release": RELEASE, "pid": os.getpid()}).encode() + b"\n"
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
