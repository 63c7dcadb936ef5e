"""Redis <-> PostgreSQL reconciliation: when Redis comes back empty (flush, restart), rebuild the gate.

The gate's epoch key is written after each rebuild; its absence means Redis lost its data. Until the
rebuild lands (within a second) the gate lets requests through and PostgreSQL refuses the losers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from core import metrics
from jobs.runner import running
from server.typedefs import GATE, PG_POOL
from storage.redis_gate import RedisGate
from storage.redis_keys import seat_value

log = logging.getLogger("boxoffice.reconcile")

CHECK_INTERVAL = 1.0

LIVE_SEATS_SQL = """
SELECT ss.session_id, ss.id, ss.status, ss.reservation_id, r.expires_at, s.end_show_time
FROM session_seats ss
JOIN reservations r ON r.id = ss.reservation_id
JOIN sessions s ON s.id = ss.session_id
WHERE ss.status IN ('RESERVED', 'SOLD') AND s.end_show_time > now()
  AND (ss.status = 'SOLD' OR r.expires_at > now())
"""


async def rebuild_gate(pool: asyncpg.Pool, gate: RedisGate) -> int:
    """Restore every live hold and sold seat into Redis; return how many keys were written."""
    rows = await pool.fetch(LIVE_SEATS_SQL)
    entries = [(r["session_id"], r["id"], *seat_value(r["status"], r["reservation_id"], r["expires_at"],
                                                      r["end_show_time"])) for r in rows]
    restored = await gate.restore(entries)
    await gate.new_epoch()
    metrics.REDIS_REBUILDS.inc()
    log.info("rebuilt the Redis gate: %d of %d live seats restored", restored, len(entries))
    return restored


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
