"""Demo data: the room "Sala 01 - IMAX Extreme" (rows A-J x 16 seats) with one upcoming session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from storage import catalog

DEMO_ROOM = "Sala 01 - IMAX Extreme"
DEMO_MOVIE = "Interstellar (IMAX re-release)"


async def seed(dsn: str) -> dict[str, str]:
    """Create the demo room and a session in the future if missing; return their ids."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        room_id = await pool.fetchval("SELECT id FROM rooms WHERE name = $1 ORDER BY created_at LIMIT 1", DEMO_ROOM)
        if room_id is None:
            room = await catalog.create_room(pool, DEMO_ROOM, catalog.seat_layout(10, 16, None))
            room_id = room.id
        session_id = await pool.fetchval(
            "SELECT id FROM sessions WHERE room_id = $1 AND start_show_time > now() + interval '1 hour'"
            " ORDER BY start_show_time LIMIT 1", room_id,
        )
        if session_id is None:
            start = (datetime.now(UTC) + timedelta(days=7)).replace(hour=20, minute=0, second=0, microsecond=0)
            session = await catalog.create_session(
                pool, DEMO_MOVIE, start, start + timedelta(hours=3), room_id, Decimal("25.00")
            )
            session_id = session.id
    finally:
        await pool.close()
    return {"roomId": str(room_id), "sessionId": str(session_id)}
