"""Retention: published outbox events, idempotency keys and finished reservations are deleted once older than
their settings; nothing live (an unpublished event, a pending hold, a purchase) is ever touched."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from core.appkeys import PG_POOL
from core.settings import Settings
from jobs.retention import purge_once
from server.app import create_app
from tests.cluster_support import wait_until
from tests.conftest import bearer, make_session, make_user, seat_ids, with_settings


async def age(pg: asyncpg.Connection, table: str, where: str, arg: Any, days: int) -> None:
    column = {"outbox": "created_at", "idempotency_keys": "created_at", "reservations": "updated_at"}[table]
    await pg.execute(f"UPDATE {table} SET {column} = {column} - make_interval(days => $2) WHERE {where}", arg, days)


async def scene(client: TestClient, pg: asyncpg.Connection) -> dict[str, Any]:
    """A user with a confirmed purchase, a cancelled hold, an expired hold and a pending hold, each with a key."""
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    user = await make_user(client)
    made: dict[str, Any] = {"user": user, "session": session, "seats": seats}
    for i, name in enumerate(["confirmed", "cancelled", "expired", "pending"]):
        resp = await client.post("/reservations", json={"sessionId": session["id"],
                                                        "sessionSeatIds": seats[2 * i:2 * i + 2]},
                                 headers={**bearer(user["token"]), "x-idempotency-key": f"{name}-key"})
        assert resp.status == 201, await resp.text()
        made[name] = uuid.UUID((await resp.json())["id"])
    resp = await client.post(f"/reservations/{made['confirmed']}/confirm", headers=bearer(user["token"]))
    assert resp.status == 201
    resp = await client.delete(f"/reservations/{made['cancelled']}", headers=bearer(user["token"]))
    assert resp.status == 204
    await pg.execute("UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = $1",
                     made["expired"])
    await pg.fetch("SELECT * FROM bx_expire_due(1000)")
    return made


async def test_old_records_are_deleted_and_live_ones_kept(client: TestClient, settings: Settings,
                                                          pg: asyncpg.Connection) -> None:
    made = await scene(client, pg)
    user_id, session_id = uuid.UUID(made["user"]["id"]), uuid.UUID(made["session"]["id"])
    reservations = [made[n] for n in ("confirmed", "cancelled", "expired", "pending")]
    assert await wait_until(lambda: _all_published(pg, session_id), 15)  # the relay publishes every event
    for table, where, arg in [("outbox", "session_id = $1", session_id),
                              ("idempotency_keys", "user_id = $1", user_id),
                              ("reservations", "id = ANY($1)", reservations)]:
        await age(pg, table, where, arg, days=400)

    deleted = await purge_once(client.app[PG_POOL], settings)
    assert deleted["outbox"] >= 4 and deleted["idempotency_keys"] >= 4 and deleted["reservations"] >= 2

    # published events and keys past their time are gone
    assert await pg.fetchval("SELECT count(*) FROM outbox WHERE session_id = $1", session_id) == 0
    assert await pg.fetchval("SELECT count(*) FROM idempotency_keys WHERE user_id = $1", user_id) == 0
    # finished holds are gone with their seat links; the purchase and the pending hold stay whole
    left = {r["id"]: r["status"] for r in await pg.fetch(
        "SELECT id, status FROM reservations WHERE id = ANY($1)", reservations)}
    assert left == {made["confirmed"]: "CONFIRMED", made["pending"]: "PENDING"}
    assert await pg.fetchval("SELECT count(*) FROM reservation_seats WHERE reservation_id = ANY($1)",
                             reservations) == 4
    resp = await client.get(f"/users/{user_id}/purchases", headers=bearer(made["user"]["token"]))
    assert [p["reservationId"] for p in await resp.json()] == [str(made["confirmed"])]
    # a key past its retention can be used again, for a new hold
    resp = await client.post("/reservations", json={"sessionId": str(session_id), "sessionSeatIds": made["seats"][2:4]},
                             headers={**bearer(made["user"]["token"]), "x-idempotency-key": "cancelled-key"})
    assert resp.status == 201, await resp.text()
    assert uuid.UUID((await resp.json())["id"]) not in reservations


async def test_a_reservation_outlives_a_key_that_survived_its_purge(client: TestClient, settings: Settings,
                                                                  pg: asyncpg.Connection) -> None:
    """A key the purge skipped (locked by another node's purge, or past its batches) keeps its reservation: a retry
    with that key still answers the reservation it made, never a 404."""
    made = await scene(client, pg)
    user_id = uuid.UUID(made["user"]["id"])
    await age(pg, "idempotency_keys", "user_id = $1", user_id, days=400)
    await age(pg, "reservations", "id = ANY($1)", [made["cancelled"], made["expired"]], days=400)
    locker = await asyncpg.connect(settings.database_url)
    try:
        async with locker.transaction():  # the key is another purge's for now: SKIP LOCKED passes it by
            await locker.execute("SELECT 1 FROM idempotency_keys WHERE user_id = $1 AND key = 'cancelled-key'"
                                 " FOR UPDATE", user_id)
            await purge_once(client.app[PG_POOL], settings)
    finally:
        await locker.close()
    left = {r["id"] for r in await pg.fetch("SELECT id FROM reservations WHERE user_id = $1", user_id)}
    assert made["cancelled"] in left and made["expired"] not in left
    resp = await client.post("/reservations", json={"sessionId": made["session"]["id"],
                                                    "sessionSeatIds": made["seats"][2:4]},
                             headers={**bearer(made["user"]["token"]), "x-idempotency-key": "cancelled-key"})
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert (body["id"], body["status"]) == (str(made["cancelled"]), "CANCELLED")


async def test_an_unpublished_event_is_never_deleted(settings: Settings, pg: asyncpg.Connection) -> None:
    """An old event the relay has not published yet stays (written in a transaction of the test's own, so no
    relay of any node publishes it meanwhile; rolled back afterwards)."""
    session_id = uuid.uuid4()
    only_outbox = with_settings(settings, idempotency_retention_hours=0, reservation_retention_days=0)
    transaction = pg.transaction()
    await transaction.start()
    try:
        ids = await pg.fetch(
            "INSERT INTO outbox (event_type, session_id, payload, created_at, published_at)"
            " VALUES ('reservation.created', $1, '{}', now() - interval '400 days', NULL),"
            "        ('reservation.created', $1, '{}', now() - interval '400 days', now() - interval '399 days')"
            " RETURNING id, published_at", session_id)
        await purge_once(pg, only_outbox)
        left = [r["id"] for r in await pg.fetch("SELECT id FROM outbox WHERE session_id = $1", session_id)]
        assert left == [r["id"] for r in ids if r["published_at"] is None]
    finally:
        await transaction.rollback()


async def test_recent_records_are_kept(client: TestClient, settings: Settings, pg: asyncpg.Connection) -> None:
    made = await scene(client, pg)
    user_id = uuid.UUID(made["user"]["id"])
    await purge_once(client.app[PG_POOL], settings)
    assert await pg.fetchval("SELECT count(*) FROM idempotency_keys WHERE user_id = $1", user_id) == 4
    assert await pg.fetchval("SELECT count(*) FROM reservations WHERE user_id = $1", user_id) == 4


async def test_a_retention_of_zero_keeps_everything(client: TestClient, settings: Settings,
                                                    pg: asyncpg.Connection) -> None:
    made = await scene(client, pg)
    user_id = uuid.UUID(made["user"]["id"])
    await age(pg, "idempotency_keys", "user_id = $1", user_id, days=4000)
    await age(pg, "reservations", "user_id = $1", user_id, days=4000)
    keep = with_settings(settings, outbox_retention_hours=0, idempotency_retention_hours=0,
                         reservation_retention_days=0)
    assert await purge_once(client.app[PG_POOL], keep) == {"outbox": 0, "idempotency_keys": 0, "reservations": 0,
                                                           "waitlist_entries": 0}
    assert await pg.fetchval("SELECT count(*) FROM reservations WHERE user_id = $1", user_id) == 4


async def test_every_node_runs_the_retention_job(aiohttp_client: Any, settings: Settings,
                                                 pg: asyncpg.Connection) -> None:
    client: TestClient = await aiohttp_client(create_app(with_settings(settings, retention_interval=0.2)))
    made = await scene(client, pg)
    user_id = uuid.UUID(made["user"]["id"])
    await age(pg, "idempotency_keys", "user_id = $1", user_id, days=400)

    async def purged() -> bool:
        return await pg.fetchval("SELECT count(*) FROM idempotency_keys WHERE user_id = $1", user_id) == 0

    assert await wait_until(purged, 10)


async def _all_published(pg: asyncpg.Connection, session_id: uuid.UUID) -> bool:
    return await pg.fetchval("SELECT count(*) FROM outbox WHERE session_id = $1 AND published_at IS NULL",
                             session_id) == 0
