"""`run_without_task`, the task-free stepping of each connection's `_adopt`: it must
end a coroutine exactly as a task would, through futures and bare yields, and log what
one raises."""

from __future__ import annotations

import asyncio
import logging

import pytest

from unbroken.engines.core.server import run_without_task

pytestmark = pytest.mark.timeout(10)


def test_a_coroutine_runs_to_its_end_through_futures_and_bare_yields() -> None:
    loop = asyncio.new_event_loop()
    steps: list[str] = []
    try:
        first = loop.create_future()
        second = loop.create_future()

        async def adopt() -> None:
            steps.append("started")
            steps.append(await first)
            await asyncio.sleep(0)
            steps.append("after a bare yield")
            steps.append(await second)

        run_without_task(adopt())
        assert steps == ["started"]  # stepped at once, up to its first wait
        loop.call_soon(first.set_result, "first")
        loop.call_later(0.01, second.set_result, "second")
        loop.run_until_complete(asyncio.sleep(0.05))
        assert steps == ["started", "first", "after a bare yield", "second"]
        assert asyncio.all_tasks(loop) == set()  # and no task was made for it
    finally:
        loop.close()


def test_what_a_coroutine_raises_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        gate = loop.create_future()

        async def adopt() -> None:
            await gate
            raise RuntimeError("protocol factory broke")

        run_without_task(adopt())
        with caplog.at_level(logging.ERROR, logger="unbroken.error"):
            loop.call_soon(gate.set_result, None)
            loop.run_until_complete(asyncio.sleep(0.01))
        assert "accepting a connection failed" in caplog.text
        assert "protocol factory broke" in caplog.text
    finally:
        loop.close()
