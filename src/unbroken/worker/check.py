"""`unbroken check`'s throwaway process: import the app, run its startup, probe it, exit.

What a deploy script runs before a reload: the same steps a new worker takes before
it says Ready, in a process of its own (started in the release directory), with the
record a real worker gets (worker/spec.py), so a broken release, or a certificate it
cannot load, is found without touching the service. Then it serves one real request,
over a private socket on 127.0.0.1, through the engine that will serve: `GET` of the
health path (2xx wanted) or of `/` (anything but a 5xx: a 404 or a redirect at `/` is
an app's right, a 500 is what a FastAPI app under the WSGI engine answers to everything).
Exit 0 when all passed.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
import ssl
import sys
import time

from unbroken.engines import Engine, load_engine
from unbroken.engines.core.tls import TLSError
from unbroken.engines.detect import EngineMismatch, choose_engine
from unbroken.worker.loader import AppNotFound, load_app
from unbroken.worker.main import new_loop, user_traceback
from unbroken.worker.spec import ENV_KEY, WorkerSpec


class CheckFailed(Exception):
    pass


async def _boot(engine: Engine, health_path: str | None, scheme: str) -> list[str]:
    steps = []
    await engine.startup()
    steps.append("startup ran")
    if health_path:
        await engine.probe(health_path)
        steps.append(f"GET {health_path} answered 2xx in-process")
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        await engine.start([listener])
        path = health_path or "/"
        port = listener.getsockname()[1]
        status = await asyncio.get_running_loop().run_in_executor(
            None, _get, port, path, scheme)
        if status >= 500 or (health_path and not 200 <= status < 300):
            wanted = "2xx" if health_path else "an answer that is not 5xx"
            raise CheckFailed(f"GET {path} over a socket answered {status}, wanted {wanted}")
        steps.append(f"GET {path} over a socket answered {status}")
    finally:
        await engine.drain(time.monotonic() + 5)  # lifespan shutdown too
        listener.close()
    return steps


def _get(port: int, path: str, scheme: str) -> int:
    """One request, as a client would send it; the status code."""
    connection: http.client.HTTPConnection
    if scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=30,
                                                 context=context)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"User-Agent": "unbroken-check"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def main() -> int:
    spec = WorkerSpec.from_env(os.environ.pop(ENV_KEY))
    try:
        app = load_app(spec.app)
        worker_class = choose_engine(spec.worker_class, app, spec.app)
        loop = new_loop(worker_class, spec.loop)
        engine = load_engine(worker_class)(app, spec.engine, loop)
        steps = loop.run_until_complete(_boot(engine, spec.health_path,
                                              spec.engine.url_scheme))
    except (AppNotFound, EngineMismatch, CheckFailed) as error:
        print(f"unbroken: check failed: {error}", file=sys.stderr)
        return 1
    except TLSError as error:
        print(f"unbroken: check failed: TLS: {error}", file=sys.stderr)
        return 1
    except BaseException as error:
        print(user_traceback(error).rstrip(), file=sys.stderr)
        print(f"unbroken: check failed: {error!r}", file=sys.stderr)
        return 1
    print(f"unbroken: ok: {spec.app} imported, " + ", ".join(steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
