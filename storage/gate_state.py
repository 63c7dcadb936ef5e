"""What the Redis gate should hold, read from PostgreSQL: every live hold and sold seat, as gate entries.

One query of the seats' true owners, for both of its readers: the rebuild of the whole gate after Redis lost its
data (`rebuild_gate`, run by jobs/reconcile.py) and the repair of the few seats a hold found the gate wrong about
(`Booking`, after PostgreSQL refused seats the gate let through).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

import asyncpg

from core import metrics
from storage.redis_gate import GateEntry, RedisGate
from storage.redis_keys import seat_value

log = logging.getLogger("boxoffice.reconcile")

# a seat is live in the gate while it is held (until its hold expires) or sold (until its show ends)
LIVE_SEATS_SQL = """
SELECT ss.session_id, ss.id, ss.status, ss.reservation_id, r.expires_at, s.end_show_time
FROM session_seats ss
JOIN reservations r ON r.id = ss.reservation_id
JOIN sessions s ON s.id = ss.session_id
WHERE ss.status IN ('RESERVED', 'SOLD') AND s.end_show_time > now()
  AND (ss.status = 'SOLD' OR r.expires_at > now())
"""
OF_SEATS = " AND ss.id = ANY($1::uuid[]) AND ss.session_id = $2"


async def live_gate_entries(pool: asyncpg.Pool, session_id: uuid.UUID | None = None,
                            seat_ids: Sequence[uuid.UUID] | None = None) -> list[GateEntry]:
    """The gate entries of every live seat, or only of `seat_ids` of `session_id`."""
    if seat_ids is None:
        rows = await pool.fetch(LIVE_SEATS_SQL)
    else:
        rows = await pool.fetch(LIVE_SEATS_SQL + OF_SEATS, list(seat_ids), session_id)
    return [(r["session_id"], r["id"], *seat_value(r["status"], r["reservation_id"], r["expires_at"],
                                                  r["end_show_time"])) for r in rows]


async def rebuild_gate(pool: asyncpg.Pool, gate: RedisGate) -> int:
    """Restore every live hold and sold seat into Redis; return how many keys were written."""
    entries = await live_gate_entries(pool)
    restored = await gate.restore(entries)
    await gate.new_epoch()
    metrics.REDIS_REBUILDS.inc()
    log.info("rebuilt the Redis gate: %d of %d live seats restored", restored, len(entries))
    return restored
