"""A periodic job owned by a cleanup context: started with the app, cancelled and awaited at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("boxoffice.jobs")


async def every(interval: float, step: Callable[[], Awaitable[object]], name: str) -> None:
    """Run `step` every `interval` seconds forever; a failing step is logged and retried, never fatal."""
    failures = 0
    while True:
        try:
            await step()
            failures = 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a job must outlive an outage of what it talks to
            failures += 1
            if failures in (1, 10) or failures % 100 == 0:
                log.warning("job %s failed (%d in a row): %r", name, failures, exc)
        await asyncio.sleep(interval if not failures else min(interval * (1 + failures), 5.0))


@contextlib.asynccontextmanager
async def owned_task(coro: Coroutine[Any, Any, object], name: str) -> AsyncIterator[asyncio.Task[object]]:
    """Run `coro` as a task for the life of the block; cancel it and wait for it to end on the way out."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def running(interval: float, step: Callable[[], Awaitable[object]], name: str) -> AsyncIterator[None]:
    """`step` every `interval` seconds for the life of the block."""
    async with owned_task(every(interval, step, name), name):
        yield
