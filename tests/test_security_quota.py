"""The per-user seat quota (MAX_SEATS_PER_USER) holds under any concurrency, on one node and across nodes.

PostgreSQL counts a user's live holds; concurrent holds of one user are serialised on that user's row, so
no two of them count the same "before". The Redis gate in front keeps no seat of a refused hold.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core.settings import Settings
from server.app import create_app
from server.cluster import LocalCluster
from storage.redis_keys import seat_key
from tests.cluster_support import make_session, make_user, seat_ids
from tests.conftest import bearer, with_settings

QUOTA = 20


async def live_overlap(pg: asyncpg.Connection, user_id: str) -> int:
    """The most seats the user held at any one moment, from PostgreSQL's own record of every granted hold
    (a hold lives from its creation until it expired, was cancelled or was bought)."""
    rows = await pg.fetch(
        "SELECT r.created_at, r.expires_at, count(*) AS seats FROM reservations r"
        " JOIN reservation_seats rs ON rs.reservation_id = r.id WHERE r.user_id = $1"
        " GROUP BY r.id", uuid.UUID(user_id))
    moments = [r["created_at"] for r in rows]
    return max((sum(r["seats"] for r in rows if r["created_at"] <= t < r["expires_at"]) for t in moments), default=0)


async def gate_owners(redis: Redis, session_id: str, seats: Sequence[str]) -> set[str]:
    """The reservations the Redis gate holds any of these seats for."""
    values = await redis.mget([seat_key(session_id, s) for s in seats])
    return {v.decode().split(":", 1)[1] for v in values if v is not None}


async def pending_reservations(pg: asyncpg.Connection, session_id: str) -> set[str]:
    rows = await pg.fetch("SELECT id FROM reservations WHERE session_id = $1 AND status = 'PENDING'",
                          uuid.UUID(session_id))
    return {str(r["id"]) for r in rows}


@pytest.mark.parametrize("batch", [1, 32], ids=["hold-by-hold", "group-commit"])
async def test_ten_parallel_holds_of_ten_seats_by_one_user_stay_within_the_quota(
        aiohttp_client: Any, settings: Settings, pg: asyncpg.Connection, redis_client: Redis, batch: int) -> None:
    client: TestClient = await aiohttp_client(create_app(with_settings(
        settings, max_seats_per_user=QUOTA, max_seats_per_hold=10, hold_ttl_seconds=60, hold_batch_max=batch,
        hold_writers=8)))
    session = await make_session(client, rows=10, per_row=10)  # type: ignore[arg-type]
    seats = await seat_ids(client, session["id"])  # type: ignore[arg-type]
    user = await make_user(client)  # type: ignore[arg-type]

    async def hold(i: int) -> tuple[int, dict[str, Any]]:
        resp = await client.post("/reservations", json={"sessionId": session["id"],
                                                        "sessionSeatIds": seats[10 * i:10 * i + 10]},
                                 headers=bearer(user["token"]))
        return resp.status, await resp.json()

    results = await asyncio.gather(*(hold(i) for i in range(10)))
    granted = [body for status, body in results if status == 201]
    assert len(granted) == QUOTA // 10, [status for status, _ in results]
    assert all(body["code"] == "hold_quota_exceeded" for status, body in results if status == 429)
    assert {status for status, _ in results} == {201, 429}
    held = await pg.fetchval(
        "SELECT count(*) FROM reservations r JOIN reservation_seats rs ON rs.reservation_id = r.id"
        " WHERE r.user_id = $1 AND r.status = 'PENDING'", uuid.UUID(user["id"]))
    assert held == QUOTA
    # the gate keeps the seats of the granted holds only: nobody else is turned away from the refused ones
    assert await gate_owners(redis_client, session["id"], seats) == {body["id"] for body in granted}


@pytest.mark.cluster
async def test_fifty_parallel_holds_by_one_user_on_three_nodes_never_exceed_the_quota(
        live_cluster: LocalCluster, pg: asyncpg.Connection, redis_client: Redis) -> None:
    nodes = [aiohttp.ClientSession(base_url=url) for url in live_cluster.node_urls]
    try:
        session = await make_session(nodes[0], rows=16, per_row=16)
        seats = await seat_ids(nodes[0], session["id"])
        user = await make_user(nodes[0])

        async def hold(i: int) -> tuple[int, dict[str, Any]]:
            node = nodes[i % len(nodes)]
            async with node.post("/reservations", json={"sessionId": session["id"],
                                                        "sessionSeatIds": seats[4 * i:4 * i + 4]},
                                 headers=bearer(user["token"])) as resp:
                return resp.status, await resp.json()

        results = await asyncio.gather(*(hold(i) for i in range(50)))
    finally:
        for node in nodes:
            await node.close()
    statuses = {status for status, _ in results}
    assert statuses <= {201, 429}, results
    assert all(body["code"] == "hold_quota_exceeded" for status, body in results if status == 429)
    granted = [body for status, body in results if status == 201]
    assert 1 <= len(granted)
    # at no moment did the user hold more than the quota (holds live 2 s here: count overlaps, not totals)
    assert await live_overlap(pg, user["id"]) <= QUOTA
    # and the gate holds no seat for a hold PostgreSQL refused
    assert await gate_owners(redis_client, session["id"], seats) <= {body["id"] for body in granted}
