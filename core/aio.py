"""asyncio helpers.

`within` replaces `asyncio.wait_for`: on Python 3.11, wait_for can swallow a cancellation that arrives
while its timeout fires, so a long-lived task asked to stop keeps running and its owner's `await task`
hangs (seen here: the outbox relay blocking app shutdown). `asyncio.timeout` tells the two apart.

`owned_task` gives a long-lived task an owner: it runs for the life of a block and is cancelled and
awaited on the way out (STYLE: every task has an owner).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("boxoffice.tasks")
STOP_GRACE = 10.0  # how long an owner waits for a cancelled task to end


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """Await `awaitable`, raising TimeoutError after `seconds`; an outside cancellation stays a cancellation."""
    async with asyncio.timeout(seconds):
        return await awaitable


def cancelled_from_outside() -> bool:
    """Inside `except CancelledError`: whether the current task itself is being cancelled (its owner is
    stopping it, or a `within` timeout fired). False means a future inside a library was cancelled under
    us -- aiokafka lets its internal tasks' cancellations out when a client is stopped or replaced -- and a
    long-lived loop must treat that like any other failure instead of dying from it."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@contextlib.contextmanager
def internal_cancel_as(error: type[Exception]) -> Iterator[None]:
    """Turn a cancellation that did not come from outside (see `cancelled_from_outside`) into `error`, so the
    caller's ordinary failure handling takes it."""
    try:
        yield
    except asyncio.CancelledError as exc:
        if cancelled_from_outside():
            raise
        raise error(f"cancelled inside the client: {exc!r}") from exc


def stop_if_cancelled() -> None:
    """At each turn of a long-lived loop: a cancellation that a library swallowed still stops the loop."""
    if cancelled_from_outside():
        raise asyncio.CancelledError


async def stop_task(task: asyncio.Task[Any], name: str, grace: float = STOP_GRACE) -> None:
    """Cancel `task` and wait for it to end, at most `grace` seconds: a library that swallows the
    cancellation must not make its owner's shutdown wait forever (seen once: a test app's teardown
    stuck until the suite's timeout with its Kafka connect loop still retrying)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=grace)
    if not done:
        log.error("task %s ignored its cancellation for %.0f s; left behind", name, grace)
        return
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s failed while stopping", name, exc_info=task.exception())


@contextlib.asynccontextmanager
async def owned_task(coro: Coroutine[Any, Any, object], name: str) -> AsyncIterator[asyncio.Task[object]]:
    """Run `coro` as a task for the life of the block; cancel it and wait (bounded) for it to end on the way out."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        await stop_task(task, name)
