"""What the Redis gate should hold, read from PostgreSQL: every live hold and sold seat, as gate entries.

One query of the seats' true owners, for both of its readers: the rebuild of the whole gate after Redis lost its
data (`rebuild_gate`, run by jobs/reconcile.py) and the repair of the few seats a hold found the gate wrong about
(`Booking`, after PostgreSQL refused seats the gate let through).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from core import metrics
from storage.redis_gate import GateEntry, RedisGate
from storage.redis_keys import epoch_ms, seat_value

log = logging.getLogger("boxoffice.reconcile")

# a seat is taken while it is held or sold, and live in the gate while it is held (until its hold expires) or sold
# (until its show ends)
TAKEN_SEATS_SQL = """
SELECT ss.session_id, ss.id, ss.status, ss.reservation_id, r.expires_at, s.end_show_time
FROM session_seats ss
JOIN reservations r ON r.id = ss.reservation_id
JOIN sessions s ON s.id = ss.session_id
WHERE ss.status IN ('RESERVED', 'SOLD') AND s.end_show_time > now()
"""
LIVE_SEATS_SQL = TAKEN_SEATS_SQL + "  AND (ss.status = 'SOLD' OR r.expires_at > now())\n"
OF_SESSION = "  AND ss.session_id = $1 AND ($2::uuid[] IS NULL OR ss.id = ANY($2::uuid[]))\n"


async def live_gate_entries(pool: asyncpg.Pool) -> list[GateEntry]:
    """The gate entries of every live seat (the rebuild after Redis lost its data)."""
    rows = await pool.fetch(LIVE_SEATS_SQL)
    return [(r["session_id"], r["id"], *seat_value(r["status"], r["reservation_id"], r["expires_at"],
                                                  r["end_show_time"])) for r in rows]


async def session_gate_entries(pool: asyncpg.Pool, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID] | None,
                               unswept_ms: int) -> list[GateEntry]:
    """The gate entries of a session's taken seats (only `seat_ids` of them, unless None), for a repair: a hold
    past its time but not yet swept is still PostgreSQL's, so it is gated `unswept_ms` more, until the sweeper
    frees it."""
    rows = await pool.fetch(TAKEN_SEATS_SQL + OF_SESSION, session_id, None if seat_ids is None else list(seat_ids))
    soon = epoch_ms(datetime.now(UTC)) + unswept_ms
    entries: list[GateEntry] = []
    for r in rows:
        value, expire_at = seat_value(r["status"], r["reservation_id"], r["expires_at"], r["end_show_time"])
        entries.append((session_id, r["id"], value, max(expire_at, soon)))
    return entries


async def rebuild_gate(pool: asyncpg.Pool, gate: RedisGate) -> int:
    """Restore every live hold and sold seat into Redis; return how many keys were written."""
    entries = await live_gate_entries(pool)
    restored = await gate.restore(entries)
    await gate.new_epoch()
    metrics.REDIS_REBUILDS.inc()
    log.info("rebuilt the Redis gate: %d of %d live seats restored", restored, len(entries))
    return restored
