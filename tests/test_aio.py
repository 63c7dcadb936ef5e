"""Long-lived loops outlive a cancellation that was not meant for them.

aiokafka lets the cancellation of its internal futures out of calls when a client is stopped or replaced
meanwhile (seen in the cluster suite: a node's seat-event consumer task ended that way and its seat maps
froze). Such a CancelledError is a failure of one call, not an order to stop; a real cancellation of the
task still stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from core.aio import cancelled_from_outside, internal_cancel_as, stop_task
from jobs.runner import every, running


async def cancelled_under_us() -> None:
    """Await a future that someone else cancels: what a closed aiokafka client does to its callers."""
    future = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.cancel)
    await future


async def test_a_cancellation_from_inside_is_told_apart_from_one_from_outside() -> None:
    seen: list[bool] = []

    async def call() -> None:
        try:
            await cancelled_under_us()
        except asyncio.CancelledError:
            seen.append(cancelled_from_outside())
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append(cancelled_from_outside())
            raise

    task = asyncio.create_task(call())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [False, True]


async def test_internal_cancel_as_turns_only_an_inside_cancellation_into_the_error() -> None:
    with pytest.raises(ConnectionError, match="cancelled inside the client"):
        with internal_cancel_as(ConnectionError):
            await cancelled_under_us()

    async def waits() -> None:
        with internal_cancel_as(ConnectionError):
            await asyncio.sleep(10)

    task = asyncio.create_task(waits())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_job_whose_step_is_cancelled_from_inside_keeps_running() -> None:
    calls = 0
    third = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            third.set()
        if calls == 1:
            await cancelled_under_us()

    async with running(0.01, step, "test-job"):
        await asyncio.wait_for(third.wait(), 5)
    assert calls >= 3


async def test_a_job_stops_even_when_its_step_swallows_the_cancellation() -> None:
    async def step() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # as some client libraries do inside their calls
            await asyncio.sleep(10)

    task = asyncio.create_task(every(0.01, step, "swallowing-job"))
    await asyncio.sleep(0.05)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done == {task} and task.cancelled()


async def test_an_owner_waits_a_bounded_time_for_a_task_that_ignores_its_cancellation(
        caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.ERROR, logger="boxoffice.tasks"):
        await stop_task(task, "stubborn", grace=0.2)
    assert loop.time() - started < 1.0
    assert "stubborn ignored its cancellation" in caplog.text
    release.set()
    await task
