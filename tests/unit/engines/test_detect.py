"""Which engine an app gets (engines/detect.py): picked from the object, or refused."""

from __future__ import annotations

from typing import Any

import pytest

from unbroken.engines.detect import EngineMismatch, choose_engine, interface_of


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    return []


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    pass


class Starlette:  # the shape of Starlette/FastAPI: an async __call__ on a base class
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        pass


class FastAPI(Starlette):
    pass


class Flask:
    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        return []


@pytest.mark.parametrize(("app", "interface"), [
    (wsgi_app, "wsgi"), (asgi_app, "asgi"), (FastAPI(), "asgi"), (Flask(), "wsgi"),
])
def test_the_interface_is_read_from_the_object(app: Any, interface: str) -> None:
    assert interface_of(app) == interface
    assert choose_engine("auto", app, "app:app") == interface


def test_a_k_that_fits_is_kept_and_one_that_does_not_is_refused_in_one_line() -> None:
    assert choose_engine("gevent", Flask(), "app:app") == "gevent"
    assert choose_engine("asgi", FastAPI(), "main:app") == "asgi"
    with pytest.raises(EngineMismatch) as refused:
        choose_engine("wsgi", FastAPI(), "main:app")
    assert str(refused.value) == ("main:app is an ASGI application but -k wsgi serves WSGI: "
                                  "drop -k (the engine is picked from the app) or use -k asgi")
    with pytest.raises(EngineMismatch, match="is a WSGI application but -k asgi"):
        choose_engine("asgi", Flask(), "app:app")
