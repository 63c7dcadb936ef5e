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


@contextlib.asynccontextmanager
async def owned_task(coro: Coroutine[Any, Any, object], name: str) -> AsyncIterator[asyncio.Task[object]]:
    """Run `coro` as a task for the life of the block; cancel it and wait for it to end on the way out."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - a task failing as it stops must not cut the rest of the shutdown short
            log.exception("task %s failed while stopping", name)
