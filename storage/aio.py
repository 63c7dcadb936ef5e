"""asyncio helpers.

`within` replaces `asyncio.wait_for`: on Python 3.11, wait_for can swallow a cancellation that arrives
while its timeout fires, so a long-lived task asked to stop keeps running and its owner's `await task`
hangs (seen here: the outbox relay blocking app shutdown). `asyncio.timeout` tells the two apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """Await `awaitable`, raising TimeoutError after `seconds`; an outside cancellation stays a cancellation."""
    async with asyncio.timeout(seconds):
        return await awaitable
