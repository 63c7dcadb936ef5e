"""A periodic job owned by a cleanup context: started with the app, cancelled and awaited at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from core.aio import internal_cancel_as, owned_task, stop_if_cancelled

log = logging.getLogger("boxoffice.jobs")


async def every(interval: float, step: Callable[[], Awaitable[object]], name: str) -> None:
    """Run `step` every `interval` seconds forever; a failing step is logged and retried, never fatal."""
    failures = 0
    while True:
        stop_if_cancelled()
        try:
            with internal_cancel_as(RuntimeError):  # a library future cancelled under the step: a failure
                await step()
            failures = 0
        except Exception as exc:  # noqa: BLE001 - a job must outlive an outage of what it talks to
            failures += 1
            if failures in (1, 10) or failures % 100 == 0:
                log.warning("job %s failed (%d in a row): %r", name, failures, exc)
        await asyncio.sleep(interval if not failures else min(interval * (1 + failures), 5.0))


@contextlib.asynccontextmanager
async def running(interval: float, step: Callable[[], Awaitable[object]], name: str) -> AsyncIterator[None]:
    """`step` every `interval` seconds for the life of the block."""
    async with owned_task(every(interval, step, name), name):
        yield
