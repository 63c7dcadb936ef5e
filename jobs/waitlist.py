"""The waiting lists' backstop: every node serves lines that wait while seats are free.

Each release serves the line in its own transaction; this catches what a release could not (seats a hold in
flight had locked, a join that raced a release's commit). `bx_waitlist_sweep` takes its locks in session
order, so nodes sweeping at once never deadlock; they only wait for one another.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from core.appkeys import SETTINGS, WAITLIST
from jobs.runner import running


async def waitlist_ctx(app: web.Application) -> AsyncIterator[None]:
    async with running(app[SETTINGS].waitlist_sweep_interval, app[WAITLIST].sweep, "waitlist-sweeper"):
        yield
