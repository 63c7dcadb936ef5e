"""Redis <-> PostgreSQL reconciliation: when Redis comes back empty (flush, restart), rebuild the gate.

The gate's epoch key is written after each rebuild (storage.gate_state.rebuild_gate); its absence means Redis lost
its data. Until the rebuild lands (within a second) the gate lets requests through and PostgreSQL refuses the
losers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from core.appkeys import GATE, PG_POOL
from jobs.runner import running
from storage.gate_state import rebuild_gate
from storage.redis_gate import RedisGate

CHECK_INTERVAL = 1.0


async def reconcile_once(pool: asyncpg.Pool, gate: RedisGate) -> bool:
    """Rebuild if Redis has lost the epoch; return True if a rebuild ran."""
    if await gate.epoch() is not None:
        return False
    await rebuild_gate(pool, gate)
    return True


async def reconcile_ctx(app: web.Application) -> AsyncIterator[None]:
    pool, gate = app[PG_POOL], app[GATE]

    async def step() -> None:
        await reconcile_once(pool, gate)

    async with running(CHECK_INTERVAL, step, "redis-reconcile"):
        yield
