"""A backing service that misbehaves answers 503 with a stable code and Retry-After, never a 500, and logs no
traceback; every wait on it is bounded.

Real faults on the test's own services: Redis out of memory (`maxmemory` with `noeviction`) or read-only (a
replica of nobody), PostgreSQL connections terminated or cancelled mid-request (`pg_terminate_backend`,
`pg_cancel_backend`), and a connection pool the test holds empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core.appkeys import PG_POOL
from core.settings import Settings
from server.app import create_app
from server.embedded import free_port
from tests.cluster_support import wait_until
from tests.conftest import bearer, make_session, make_user, seat_ids, table_counts, with_settings


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    logged = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not logged, [r.getMessage() for r in logged]


def assert_unavailable(status: int, headers: Any, body: dict[str, Any], code: str) -> None:
    assert (status, body["code"]) == (503, code), body
    assert int(headers["Retry-After"]) >= 1


@contextlib.asynccontextmanager
async def redis_fault(redis: Redis, fault: str) -> AsyncIterator[None]:
    """Redis refusing writes: out of memory (noeviction) or a read-only replica; restored on the way out."""
    if fault == "oom":
        saved = {**await redis.config_get("maxmemory"), **await redis.config_get("maxmemory-policy")}
        await redis.config_set("maxmemory-policy", "noeviction")
        await redis.config_set("maxmemory", "1")
        try:
            yield
        finally:
            for key, value in saved.items():
                await redis.config_set(key, value)
    else:  # a replica of a master that is not there: every write answers READONLY, the data stays
        await redis.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        try:
            yield
        finally:
            await redis.execute_command("REPLICAOF", "NO", "ONE")


@pytest.mark.parametrize("fault", ["oom", "readonly"])
async def test_redis_refusing_writes_answers_503_to_rest_and_socket_holds(
        client: TestClient, pg: asyncpg.Connection, redis_client: Redis, caplog: pytest.LogCaptureFixture,
        fault: str) -> None:
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    user = await make_user(client)
    ws = await client.ws_connect(f"/ws/sessions/{session['id']}?token={user['token']}")
    assert (await ws.receive_json(timeout=10))["type"] == "snapshot"
    before = await table_counts(pg)
    caplog.set_level(logging.INFO)
    async with redis_fault(redis_client, fault):
        resp = await client.post("/reservations", json={"sessionId": session["id"], "sessionSeatIds": seats[:2]},
                                 headers=bearer(user["token"]))
        assert_unavailable(resp.status, resp.headers, await resp.json(), "redis_unavailable")
        await ws.send_json({"type": "hold", "sessionSeatIds": seats[2:4], "requestId": "h1"})
        reply = await ws.receive_json(timeout=10)
        assert (reply["type"], reply["code"], reply["requestId"]) == ("error", "redis_unavailable", "h1"), reply
    assert await table_counts(pg) == before
    assert_no_traceback(caplog)
    await ws.close()
    # Redis writes again: so does the hold
    resp = await client.post("/reservations", json={"sessionId": session["id"], "sessionSeatIds": seats[:2]},
                             headers=bearer(user["token"]))
    assert resp.status == 201, await resp.text()


async def backend_waiting_on_a_lock(pg: asyncpg.Connection, sql_fragment: str) -> int:
    """The pid of the app's connection that waits on a row lock while running `sql_fragment`."""
    found: list[int] = []

    async def waiting() -> bool:
        found[:] = [r["pid"] for r in await pg.fetch(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            " AND query LIKE '%' || $1 || '%'", sql_fragment)]
        return bool(found)

    assert await wait_until(waiting, 10.0), f"no backend waits on a lock in {sql_fragment}"
    return found[0]


@pytest.mark.parametrize("signal", ["pg_terminate_backend", "pg_cancel_backend"])
async def test_a_hold_whose_connection_is_terminated_or_cancelled_answers_503(
        client: TestClient, settings: Settings, pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture,
        signal: str) -> None:
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    user = await make_user(client)
    caplog.set_level(logging.INFO)
    locker = await asyncpg.connect(settings.database_url)
    try:
        async with locker.transaction():  # the hold waits on this seat's row lock, mid-request
            await locker.execute("SELECT 1 FROM session_seats WHERE id = $1 FOR UPDATE", uuid.UUID(seats[0]))
            pending = asyncio.ensure_future(client.post(
                "/reservations", json={"sessionId": session["id"], "sessionSeatIds": seats[:2]},
                headers=bearer(user["token"])))
            pid = await backend_waiting_on_a_lock(pg, "bx_hold")
            assert await pg.fetchval(f"SELECT {signal}($1)", pid)
            resp = await asyncio.wait_for(pending, 10)
            assert_unavailable(resp.status, resp.headers, await resp.json(), "database_unavailable")
    finally:
        await locker.close()
    assert_no_traceback(caplog)
    # nothing was held, in PostgreSQL or in the gate: the same seats are granted now
    resp = await client.post("/reservations", json={"sessionId": session["id"], "sessionSeatIds": seats[:2]},
                             headers=bearer(user["token"]))
    assert resp.status == 201, await resp.text()


async def test_a_confirm_whose_connection_is_terminated_answers_503_and_can_be_retried(
        client: TestClient, settings: Settings, pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture) -> None:
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    user = await make_user(client)
    resp = await client.post("/reservations", json={"sessionId": session["id"], "sessionSeatIds": seats[:2]},
                             headers=bearer(user["token"]))
    reservation = await resp.json()
    caplog.set_level(logging.INFO)
    locker = await asyncpg.connect(settings.database_url)
    try:
        async with locker.transaction():
            await locker.execute("SELECT 1 FROM reservations WHERE id = $1 FOR UPDATE", uuid.UUID(reservation["id"]))
            pending = asyncio.ensure_future(client.post(f"/reservations/{reservation['id']}/confirm",
                                                        headers=bearer(user["token"])))
            pid = await backend_waiting_on_a_lock(pg, "bx_confirm")
            assert await pg.fetchval("SELECT pg_terminate_backend($1)", pid)
            resp = await asyncio.wait_for(pending, 10)
            assert_unavailable(resp.status, resp.headers, await resp.json(), "database_unavailable")
    finally:
        await locker.close()
    assert_no_traceback(caplog)
    assert await pg.fetchval("SELECT status FROM reservations WHERE id = $1", uuid.UUID(reservation["id"])) == "PENDING"
    resp = await client.post(f"/reservations/{reservation['id']}/confirm", headers=bearer(user["token"]))
    assert resp.status == 201, await resp.text()


async def test_an_exhausted_pool_answers_503_within_its_acquire_timeout(
        aiohttp_client: Any, settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    client: TestClient = await aiohttp_client(create_app(with_settings(
        settings, db_pool_min=1, db_pool_max=2, db_pool_timeout=0.5)))
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    user = await make_user(client)
    caplog.set_level(logging.INFO)
    pool = client.app[PG_POOL]
    taken = [await pool.acquire() for _ in range(2)]  # every connection of the node's pool
    try:
        async with asyncio.timeout(5):  # bounded: the old pool waited forever
            resp = await client.get(f"/sessions/{session['id']}")
            assert_unavailable(resp.status, resp.headers, await resp.json(), "database_unavailable")
            resp = await client.post("/reservations", json={"sessionId": session["id"], "sessionSeatIds": seats[:1]},
                                     headers=bearer(user["token"]))
            assert_unavailable(resp.status, resp.headers, await resp.json(), "database_unavailable")
    finally:
        for con in taken:
            await pool.release(con)
    assert_no_traceback(caplog)
    resp = await client.get(f"/sessions/{session['id']}")
    assert resp.status == 200


def test_one_mapping_tells_a_service_fault_from_a_bug() -> None:
    """An outage is 503 with the service's code; a client-side error of the database driver (a value it cannot
    encode, a bad configuration, a feature it lacks) is a bug of ours: not mapped, so it is a logged 500."""
    import redis.exceptions
    from asyncpg.exceptions import _base as asyncpg_base

    from storage.faults import REDIS_FAULTS, DatabaseUnavailable, RedisUnavailable, redis_fault, service_fault

    for outage in (asyncpg.exceptions.ConnectionDoesNotExistError("closed"), asyncpg.InterfaceError("closed"),
                   asyncpg.exceptions.AdminShutdownError("down"), ConnectionResetError(), TimeoutError()):
        assert isinstance(service_fault(outage), DatabaseUnavailable), outage
    for bug in (asyncpg_base.DataError("invalid input for query argument $1"),
                asyncpg_base.ClientConfigurationError("bad option"),
                asyncpg_base.UnsupportedClientFeatureError("no such feature"),
                asyncpg.exceptions.DataError("invalid input syntax for type uuid")):
        assert service_fault(bug) is None, bug
    # a Redis call's faults, whatever they are, are Redis's: one tuple, one answer
    for outage in (redis.exceptions.ConnectionError(), redis.exceptions.ResponseError("OOM"), OSError(),
                   TimeoutError()):
        assert isinstance(outage, REDIS_FAULTS) and isinstance(redis_fault(outage), RedisUnavailable)
    assert isinstance(service_fault(redis.exceptions.ResponseError("READONLY")), RedisUnavailable)
