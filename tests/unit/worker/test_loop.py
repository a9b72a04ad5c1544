"""--loop: which event loop a worker runs on (uvloop where installed, unless told)."""

from __future__ import annotations

import asyncio

import pytest

from unbroken.worker.main import new_loop


def _kind(loop: asyncio.AbstractEventLoop) -> str:
    try:
        return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
    finally:
        loop.close()


def test_asyncio_when_asked_and_always_for_gevent() -> None:
    assert _kind(new_loop("wsgi", "asyncio")) == "asyncio"
    assert _kind(new_loop("gevent", "uvloop")) == "asyncio"  # uvloop would starve greenlets


def test_auto_and_uvloop_run_uvloop_where_it_is_installed() -> None:
    pytest.importorskip("uvloop")
    assert _kind(new_loop("wsgi", "auto")) == "uvloop"
    assert _kind(new_loop("asgi", "uvloop")) == "uvloop"
