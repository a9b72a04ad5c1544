"""`unbroken check`'s throwaway process: import the app, run its startup, probe it, exit.

What a deploy script runs before a reload: the same steps a new worker takes before
it says Ready, in a process of its own (started in the release directory), with the
record a real worker gets (worker/spec.py), so a broken release, or a certificate it
cannot load, is found without touching the service. Exit 0 when all passed.
"""

from __future__ import annotations

import os
import sys
import time

from unbroken.engines import load_engine
from unbroken.engines.core.tls import TLSError
from unbroken.engines.detect import EngineMismatch, choose_engine
from unbroken.worker.loader import AppNotFound, load_app
from unbroken.worker.main import new_loop, user_traceback
from unbroken.worker.spec import ENV_KEY, WorkerSpec


async def _boot(engine: object, health_path: str | None) -> list[str]:
    steps = []
    await engine.startup()  # type: ignore[attr-defined]
    steps.append("startup ran")
    if health_path:
        await engine.probe(health_path)  # type: ignore[attr-defined]
        steps.append(f"GET {health_path} answered 2xx")
    await engine.drain(time.monotonic() + 5)  # type: ignore[attr-defined]  # lifespan shutdown
    return steps


def main() -> int:
    spec = WorkerSpec.from_env(os.environ.pop(ENV_KEY))
    try:
        app = load_app(spec.app)
        worker_class = choose_engine(spec.worker_class, app, spec.app)
        loop = new_loop(worker_class)
        engine = load_engine(worker_class)(app, spec.engine, loop)
        steps = loop.run_until_complete(_boot(engine, spec.health_path))
    except (AppNotFound, EngineMismatch) as error:
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
