"""Load shedding: beyond its bound a node answers 503 `overloaded` at once, and its probes stay fast.

The work in flight is made to wait on something real: a test connection holds an exclusive lock on a table the
requests read, so they queue inside PostgreSQL exactly as they would behind a slow database in a rush.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from core.appkeys import BOOKING, INFLIGHT
from core.settings import Settings
from server.app import create_app
from tests.conftest import bearer, make_session, make_user, seat_ids, table_counts, with_settings

LIMIT = 4
FAST = 0.05  # seconds: what a refusal or a probe takes while the node is full
SLOWEST = 0.5  # seconds: the one slowest of ten may be a scheduling pause of a machine busy with other work too


@asynccontextmanager
async def locked(database_url: str, table: str) -> AsyncIterator[None]:
    """`table` locked exclusively for the duration: every query reading it waits."""
    con = await asyncpg.connect(database_url)
    try:
        async with con.transaction():
            await con.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await con.close()


async def until(condition: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def timed(client: TestClient, method: str, path: str, **kw: Any) -> tuple[int, dict[str, Any], str, float]:
    """-> (status, JSON body, Retry-After, seconds)."""
    started = time.perf_counter()
    async with client.request(method, path, **kw) as resp:
        body = await resp.json()
        return resp.status, body, resp.headers.get("Retry-After", ""), time.perf_counter() - started


async def test_beyond_the_bound_requests_are_503_overloaded_at_once_while_health_and_ready_stay_fast(
        aiohttp_client: Any, base_settings: Settings, pg: asyncpg.Connection) -> None:
    client = await aiohttp_client(create_app(with_settings(base_settings, max_inflight_requests=LIMIT)))
    session = await make_session(client)
    user = await make_user(client)
    seats = await seat_ids(client, session["id"])
    gate = client.app[INFLIGHT]
    await timed(client, "GET", "/ready")  # the first round of readiness checks is done
    before = await table_counts(pg)
    async with locked(base_settings.database_url, "sessions"):
        # an Upgrade header on a route that is not the socket's is counted like any request
        upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
        stuck = [asyncio.create_task(timed(client, "GET", f"/sessions/{session['id']}", headers=upgrade))
                 for _ in range(LIMIT)]
        await until(lambda: gate.inflight == LIMIT)

        refused = [await timed(client, "GET", f"/sessions/{session['id']}") for _ in range(10)]
        hold = await timed(client, "POST", "/reservations", headers=bearer(user["token"]),
                           json={"sessionId": session["id"], "userId": user["id"], "sessionSeatIds": seats[:1]})
        health = [await timed(client, "GET", "/health") for _ in range(10)]
        ready = [await timed(client, "GET", "/ready") for _ in range(10)]
        assert not any(task.done() for task in stuck)
    answered = await asyncio.gather(*stuck)
    assert await table_counts(pg) == before  # the refused hold wrote nothing

    for status, body, retry_after, _ in [*refused, hold]:
        assert (status, body["code"], retry_after) == (503, "overloaded", "1"), body
        assert body["details"] == {"retryAfter": 1}
    assert [(status, body) for status, body, _, _ in health] == [(200, {"status": "ok"})] * 10
    assert all(status == 200 for status, *_ in ready)
    for name, answers in (("refused", [*refused, hold]), ("health", health), ("ready", ready)):
        took = sorted(t for *_, t in answers)
        print(f"{name}: median {took[len(took) // 2] * 1000:.1f} ms, slowest {took[-1] * 1000:.1f} ms")
        assert took[-2] < FAST and took[-1] < SLOWEST, (name, took)  # nine of ten under 50 ms
    assert [status for status, *_ in answered] == [200] * LIMIT
    assert gate.inflight == 0
    # the node takes work again once it is below its bound
    assert (await timed(client, "GET", f"/sessions/{session['id']}"))[0] == 200


async def test_holds_beyond_the_pending_bound_are_503_overloaded_over_rest_and_the_socket(
        aiohttp_client: Any, base_settings: Settings, pg: asyncpg.Connection) -> None:
    client = await aiohttp_client(create_app(with_settings(base_settings, max_pending_holds=2)))
    session = await make_session(client)
    users = [await make_user(client) for _ in range(4)]
    seats = await seat_ids(client, session["id"])
    booking = client.app[BOOKING]

    def hold(n: int) -> Any:
        return timed(client, "POST", "/reservations", headers=bearer(users[n]["token"]),
                     json={"sessionId": session["id"], "userId": users[n]["id"], "sessionSeatIds": [seats[n]]})

    async with locked(base_settings.database_url, "reservation_seats"):
        stuck = [asyncio.create_task(hold(n)) for n in range(2)]
        await until(lambda: booking.pending_holds == 2)
        status, body, retry_after, took = await hold(2)
        assert (status, body["code"], retry_after) == (503, "overloaded", "1"), body
        assert took < SLOWEST
        async with client.ws_connect(f"/ws/sessions/{session['id']}",
                                     protocols=("boxoffice", f"bearer.{users[3]['token']}")) as ws:
            while (await ws.receive_json(timeout=5))["type"] != "snapshot":
                pass
            await ws.send_json({"type": "hold", "requestId": "r1", "sessionSeatIds": [seats[3]]})
            reply = await ws.receive_json(timeout=5)
            while reply.get("requestId") != "r1":
                reply = await ws.receive_json(timeout=5)
        assert (reply["type"], reply["code"], reply["details"]) == ("error", "overloaded", {"retryAfter": 1}), reply
    answered = await asyncio.gather(*stuck)
    assert [status for status, *_ in answered] == [201, 201]
    assert booking.pending_holds == 0
    held = await pg.fetchval("SELECT count(*) FROM reservations WHERE session_id = $1", session["id"])
    assert held == 2
