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
from collections.abc import AsyncIterator, Awaitable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("boxoffice.tasks")


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """Await `awaitable`, raising TimeoutError after `seconds`; an outside cancellation stays a cancellation."""
    async with asyncio.timeout(seconds):
        return await awaitable


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
