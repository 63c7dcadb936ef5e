"""Hold expiry: every node sweeps PENDING reservations past expiresAt (SKIP LOCKED, so nodes never collide)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from core.appkeys import BOOKING, SETTINGS
from jobs.runner import running


async def expiry_ctx(app: web.Application) -> AsyncIterator[None]:
    booking = app[BOOKING]

    async def sweep() -> None:
        # drain: a burst of expiries (a sold-out rush timing out) is cleared in one tick
        while await booking.expire_due(500) == 500:
            pass

    async with running(app[SETTINGS].expiry_sweep_interval, sweep, "expiry-sweeper"):
        yield
