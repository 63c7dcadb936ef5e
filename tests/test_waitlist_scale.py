"""A long waiting list on a sold-out show: every buyer's page reads its place in line (every 10 s, and soon after
seats change), so reading one's place must not cost a count of the whole line each time."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from core.settings import Settings
from server.app import create_app
from storage import db
from tests.conftest import bearer, make_user, with_settings
from tests.test_waitlist import sold_out

AHEAD = 20_000  # buyers already in line
READERS = 200  # buyers behind them, reading their place at once
FLUSH_SECONDS = 11  # PostgreSQL 15 backends report their table statistics within 10 s of going idle


async def tuples_read(pg: asyncpg.Connection) -> int:
    await pg.execute("SELECT pg_stat_force_next_flush(), pg_stat_clear_snapshot()")
    return await pg.fetchval(  # type: ignore[no-any-return]
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables "
        "WHERE relname = 'waitlist_entries'")


async def test_reading_ones_place_in_a_long_line_does_not_count_the_line_each_time(
        aiohttp_client: Any, settings: Settings, empty_database: str) -> None:
    # a database of its own: the rows read are this node's alone (the table's statistics count every reader)
    await db.migrate(empty_database)
    pg = await asyncpg.connect(empty_database)
    try:
        await measure_place_reads(aiohttp_client, with_settings(settings, database_url=empty_database), pg)
    finally:
        await pg.close()


async def measure_place_reads(aiohttp_client: Any, settings: Settings, pg: asyncpg.Connection) -> None:
    client: TestClient = await aiohttp_client(create_app(with_settings(
        # the show stays sold out throughout: its holds outlive the test (on a slow machine 30 s did not, and their
        # expiry served the line while the places were read)
        settings, waitlist_sweep_interval=3600.0, hold_ttl_seconds=600)))
    sid, _, _ = await sold_out(client, [10, 6])
    readers = [await make_user(client) for _ in range(READERS)]
    await pg.execute(
        "WITH us AS (INSERT INTO users (id, name, email, token_hash) SELECT gen_random_uuid(), 'Ahead', "
        "gen_random_uuid()::text || '@example.com', sha256(gen_random_uuid()::text::bytea) "
        "FROM generate_series(1, $2) RETURNING id) "
        "INSERT INTO waitlist_entries (session_id, user_id, quantity, hold_ttl_ms) SELECT $1, us.id, 2, 30000 FROM us",
        uuid.UUID(sid), AHEAD)
    await pg.executemany("INSERT INTO waitlist_entries (session_id, user_id, quantity, hold_ttl_ms) "
                         "VALUES ($1, $2, 1, 30000)", [(uuid.UUID(sid), uuid.UUID(r["id"])) for r in readers])
    await asyncio.sleep(FLUSH_SECONDS)
    before = await tuples_read(pg)

    async def place(reader: dict[str, Any]) -> tuple[int, int, int]:
        resp = await client.get(f"/sessions/{sid}/waitlist", headers=bearer(reader["token"]))
        body = await resp.json()
        assert resp.status == 200, body
        return body["position"], body["ahead"], body["waiting"]

    places = await asyncio.gather(*(place(r) for r in readers))
    assert places == [(AHEAD + i + 1, AHEAD + i, AHEAD + READERS) for i in range(READERS)]
    await asyncio.sleep(FLUSH_SECONDS)
    read = await tuples_read(pg) - before
    # each reader's own row, and the line read a few times in all (not twice per reader: 8 million rows)
    print(f"{READERS} place reads in a line of {AHEAD + READERS}: {read} rows read")
    assert READERS <= read < 5 * (AHEAD + READERS), read
