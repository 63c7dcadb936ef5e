"""Hold extension and the waiting list when a backing service fails: 503 with Retry-After, never a 500."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from core.appkeys import PG_POOL
from core.settings import Settings
from server.app import create_app
from tests.conftest import bearer, make_user, with_settings
from tests.test_security_faults import assert_unavailable
from tests.test_waitlist import join, sold_out


async def test_with_the_database_out_of_reach_every_waiting_list_call_is_503(
        aiohttp_client: Any, settings: Settings, pg: asyncpg.Connection) -> None:
    client: TestClient = await aiohttp_client(create_app(with_settings(
        settings, db_pool_min=1, db_pool_max=2, db_pool_timeout=0.5, waitlist_sweep_interval=3600.0)))
    sid, _, holds = await sold_out(client, [10, 6])
    buyer, waiting = await make_user(client), await make_user(client)
    assert (await join(client, waiting, sid, 2))[0] == 201
    mine = holds[0]
    pool = client.app[PG_POOL]
    taken = [await pool.acquire() for _ in range(2)]  # every connection of the node's pool
    try:
        async with asyncio.timeout(10):
            for method, path, user, body in (
                    ("POST", f"/sessions/{sid}/waitlist", buyer, {"quantity": 1}),
                    ("GET", f"/sessions/{sid}/waitlist", waiting, None),
                    ("DELETE", f"/sessions/{sid}/waitlist", waiting, None),
                    ("POST", f"/reservations/{mine.reservation['id']}/extend", mine.user, None)):
                resp = await client.request(method, path, json=body, headers=bearer(user["token"]))
                assert_unavailable(resp.status, resp.headers, await resp.json(), "database_unavailable")
    finally:
        for con in taken:
            await pool.release(con)
    status, body = await join(client, waiting, sid, 2)
    assert (status, body["status"], body["position"]) == (200, "WAITING", 1)


async def test_with_redis_not_answering_an_extension_still_answers_from_postgresql(
        aiohttp_client: Any, settings: Settings, stack: Any, pg: asyncpg.Connection) -> None:
    client: TestClient = await aiohttp_client(create_app(with_settings(settings, redis_timeout=0.3)))
    sid, _, holds = await sold_out(client, [10, 6])
    mine = holds[0]
    stack["redis"].pause()
    try:
        async with asyncio.timeout(10):
            resp = await client.post(f"/reservations/{mine.reservation['id']}/extend",
                                     headers=bearer(mine.user["token"]))
            body = await resp.json()
    finally:
        stack["redis"].resume()
    assert resp.status == 200, body  # PostgreSQL decides; the gate follows when it can
    extended = await pg.fetchval("SELECT extended_at FROM reservations WHERE id = $1::uuid", mine.reservation["id"])
    assert extended is not None
