"""The `-k` names people bring from gunicorn and uvicorn, and the engine that serves each.

An alias is accepted wherever a worker class is (`-k`, `UNBROKEN_WORKER_CLASS`, any
config file); `load_config` turns it into the engine's name and says so once, in a note
the CLI prints at start. A name for a worker model unbroken does not have is refused
with one line saying what to use.
"""

from __future__ import annotations

GUNICORN_EGG = "egg:gunicorn#"

# alias -> (engine, how it differs); engines are the keys of engines.ENGINES.
ALIASES: dict[str, tuple[str, str]] = {
    "sync": ("wsgi", "like gunicorn's sync worker with --threads 1, but keep-alive works; "
             "--threads N runs N requests at once"),
    "gthread": ("wsgi", "--threads sets the pool size, as in gunicorn"),
    "gunicorn.workers.sync.SyncWorker": ("wsgi", "--threads N runs N requests at once"),
    "gunicorn.workers.gthread.ThreadWorker": ("wsgi", "--threads sets the pool size"),
    "gunicorn.workers.ggevent.GeventWorker": ("gevent", "--worker-connections caps the "
                                              "greenlets, as in gunicorn"),
    "gevent_wsgi": ("gevent", "unbroken's own HTTP server on gevent, not gevent.pywsgi"),
    "gevent_pywsgi": ("gevent", "unbroken's own HTTP server on gevent, not gevent.pywsgi"),
    "gunicorn.workers.ggevent.GeventPyWSGIWorker": (
        "gevent", "unbroken's own HTTP server on gevent, not gevent.pywsgi"),
    "gunicorn.workers.gasgi.ASGIWorker": ("asgi", "unbroken's ASGI engine"),
    "uvicorn.workers.UvicornWorker": ("asgi", "unbroken's own ASGI engine; uvicorn is not "
                                      "used, so its settings (loop, http, ws) do not apply"),
    "uvicorn.workers.UvicornH11Worker": ("asgi", "unbroken's own ASGI engine; uvicorn is "
                                         "not used"),
    "uvicorn_worker.UvicornWorker": ("asgi", "unbroken's own ASGI engine; uvicorn is not "
                                     "used, so its settings (loop, http, ws) do not apply"),
    "uvicorn_worker.UvicornH11Worker": ("asgi", "unbroken's own ASGI engine; uvicorn is "
                                        "not used"),
}

_NO_EVENTLET = ("eventlet is not supported (it is deprecated upstream): use -k gevent, "
                "or -k asgi for an async app")
_NO_TORNADO = "tornado workers are not supported: serve a WSGI app with -k wsgi, or an " \
    "ASGI app with -k asgi"
REFUSED: dict[str, str] = {
    "eventlet": _NO_EVENTLET,
    "gunicorn.workers.geventlet.EventletWorker": _NO_EVENTLET,
    "tornado": _NO_TORNADO,
    "gunicorn.workers.gtornado.TornadoWorker": _NO_TORNADO,
}


def normalise(text: str) -> str:
    """`egg:gunicorn#sync` is gunicorn's old spelling of `sync`."""
    return text.removeprefix(GUNICORN_EGG) if text.startswith(GUNICORN_EGG) else text


def refusal(text: str) -> str | None:
    """Why this worker class cannot be served, or None."""
    return REFUSED.get(normalise(text))


def resolve(text: str) -> tuple[str, str | None]:
    """The engine for a checked worker class, and the note to print when it is an alias."""
    name = normalise(text)
    if name not in ALIASES:
        return name, None
    engine, differs = ALIASES[name]
    return engine, f"-k {text} is served by unbroken's {engine} engine ({differs})"
