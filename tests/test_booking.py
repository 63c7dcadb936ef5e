"""Booking over REST: holds, confirms, cancels, history, expiry and idempotency (refusals: test_booking_refusals.py)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import (
    assert_invariants,
    bearer,
    make_session,
    make_user,
    seat_ids,
    with_settings,
)


async def hold(client: TestClient, user: dict[str, Any], session_id: str, seats: list[str],
               key: str | None = None) -> Any:
    headers = bearer(user["token"]) | ({"x-idempotency-key": key} if key else {})
    return await client.post("/reservations", json={"sessionId": session_id, "sessionSeatIds": seats},
                             headers=headers)


async def seat_statuses(client: TestClient, session_id: str) -> dict[str, str]:
    resp = await client.get(f"/sessions/{session_id}/seats")
    return {s["id"]: s["status"] for s in (await resp.json())["seats"]}


async def test_hold_confirm_and_history(client: TestClient, pg: Any) -> None:
    session = await make_session(client, price=12.5)
    seats = await seat_ids(client, session["id"])
    ana = await make_user(client)

    resp = await hold(client, ana, session["id"], seats[:2])
    assert resp.status == 201
    reservation = await resp.json()
    assert reservation["status"] == "PENDING"
    assert reservation["userId"] == ana["id"] and reservation["sessionId"] == session["id"]
    assert [s["id"] for s in reservation["seats"]] == seats[:2]
    assert reservation["seats"][0] == {"id": seats[0], "rowLabel": "A", "seatNumber": 1}
    statuses = await seat_statuses(client, session["id"])
    assert [statuses[s] for s in seats[:3]] == ["RESERVED", "RESERVED", "AVAILABLE"]

    resp = await client.post(f"/reservations/{reservation['id']}/confirm", headers=bearer(ana["token"]))
    assert resp.status == 201
    sale = await resp.json()
    assert sale["reservationId"] == reservation["id"] and sale["userId"] == ana["id"]
    assert sale["totalAmount"] == 25.0
    assert {s["id"] for s in sale["seats"]} == set(seats[:2])
    statuses = await seat_statuses(client, session["id"])
    assert [statuses[s] for s in seats[:2]] == ["SOLD", "SOLD"]

    resp = await client.get(f"/reservations/{reservation['id']}", headers=bearer(ana["token"]))
    assert (await resp.json())["status"] == "CONFIRMED"
    resp = await client.get(f"/users/{ana['id']}/purchases", headers=bearer(ana["token"]))
    purchases = await resp.json()
    assert resp.status == 200 and [p["id"] for p in purchases] == [sale["id"]]
    assert purchases[0]["movieTitle"] == "Dune" and purchases[0]["sessionId"] == session["id"]
    assert purchases[0]["startShowTime"] == session["startShowTime"]
    resp = await client.get(f"/sales/{sale['id']}", headers=bearer(ana["token"]))
    assert resp.status == 200 and (await resp.json())["id"] == sale["id"]
    resp = await client.get(f"/sales/user/{ana['id']}", headers=bearer(ana["token"]))
    assert [s["id"] for s in await resp.json()] == [sale["id"]]

    # sold seats cannot be held again
    bob = await make_user(client, "Bob")
    resp = await hold(client, bob, session["id"], seats[1:3])
    assert resp.status == 409
    body = await resp.json()
    assert body["code"] == "seats_unavailable" and body["details"]["conflicts"] == [seats[1]]
    await assert_invariants(pg, [session["id"]])


async def test_a_holds_answer_is_what_reading_it_back_gives(client: TestClient) -> None:
    """The hold answers from its own write (no second read): every field it shares with the reservation read
    back agrees, seat by seat, timestamps included."""
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    ana = await make_user(client)
    resp = await hold(client, ana, session["id"], [seats[4], seats[1], seats[2]])
    assert resp.status == 201
    held = await resp.json()
    resp = await client.get(f"/reservations/{held['id']}", headers=bearer(ana["token"]))
    assert resp.status == 200
    read = await resp.json()
    shared = set(held) & set(read)
    assert {"reservationSeats", "seats", "createdAt", "updatedAt", "expiresAt", "seatLabels"} <= shared
    assert {k: held[k] for k in shared} == {k: read[k] for k in shared}
    assert [s["id"] for s in held["seats"]] == [seats[1], seats[2], seats[4]]  # in seat order


async def test_purchases_newest_first(client: TestClient) -> None:
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    ana = await make_user(client)
    sale_ids = []
    for seat in seats[:3]:
        reservation = await (await hold(client, ana, session["id"], [seat])).json()
        resp = await client.post(f"/reservations/{reservation['id']}/confirm", headers=bearer(ana["token"]))
        sale_ids.append((await resp.json())["id"])
    resp = await client.get(f"/users/{ana['id']}/purchases", headers=bearer(ana["token"]))
    assert [p["id"] for p in await resp.json()] == sale_ids[::-1]


async def test_cancel_frees_seats(client: TestClient, pg: Any) -> None:
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    ana, bob = await make_user(client), await make_user(client, "Bob")
    reservation = await (await hold(client, ana, session["id"], seats[:2])).json()

    resp = await client.delete(f"/reservations/{reservation['id']}", headers=bearer(ana["token"]))
    assert resp.status == 204
    resp = await client.get(f"/reservations/{reservation['id']}", headers=bearer(ana["token"]))
    assert (await resp.json())["status"] == "CANCELLED"
    assert (await hold(client, bob, session["id"], seats[:2])).status == 201  # the gate was released too
    resp = await client.delete(f"/reservations/{reservation['id']}", headers=bearer(ana["token"]))
    assert resp.status == 409 and (await resp.json())["code"] == "not_pending"
    await assert_invariants(pg, [session["id"]])


@pytest.fixture
def short_ttl(settings: Any) -> Any:
    return with_settings(settings, hold_ttl_seconds=1, expiry_sweep_interval=0.1)


async def test_hold_expires_and_confirm_is_refused(aiohttp_client: Any, short_ttl: Any, pg: Any) -> None:
    from server.app import create_app

    client = await aiohttp_client(create_app(short_ttl))
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    ana, bob = await make_user(client), await make_user(client, "Bob")
    reservation = await (await hold(client, ana, session["id"], seats[:2])).json()
    await asyncio.sleep(1.5)

    resp = await client.get(f"/reservations/{reservation['id']}", headers=bearer(ana["token"]))
    assert (await resp.json())["status"] == "EXPIRED"
    resp = await client.post(f"/reservations/{reservation['id']}/confirm", headers=bearer(ana["token"]))
    assert resp.status == 410 and (await resp.json())["code"] == "hold_expired"
    statuses = await seat_statuses(client, session["id"])
    assert [statuses[s] for s in seats[:2]] == ["AVAILABLE", "AVAILABLE"]
    assert (await hold(client, bob, session["id"], seats[:2])).status == 201
    assert await pg.fetchval("SELECT count(*) FROM sales WHERE reservation_id = $1",
                             uuid.UUID(reservation["id"])) == 0
    await assert_invariants(pg, [session["id"]])


async def test_idempotent_hold(client: TestClient, pg: Any) -> None:
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    ana = await make_user(client)
    first = await hold(client, ana, session["id"], seats[:2], key="hold-1")
    again = await hold(client, ana, session["id"], seats[:2], key="hold-1")
    assert first.status == again.status == 201
    assert (await first.json())["id"] == (await again.json())["id"]
    assert await pg.fetchval("SELECT count(*) FROM reservations WHERE session_id = $1",
                             uuid.UUID(session["id"])) == 1

    # concurrent retries of one key: one reservation
    results = await asyncio.gather(*(hold(client, ana, session["id"], seats[4:6], key="hold-2") for _ in range(10)))
    bodies = [await r.json() for r in results]
    assert {r.status for r in results} == {201}, bodies
    assert len({b["id"] for b in bodies}) == 1
    assert await pg.fetchval("SELECT count(*) FROM reservations WHERE session_id = $1",
                             uuid.UUID(session["id"])) == 2


async def test_idempotent_confirm_under_concurrent_retries(client: TestClient, pg: Any) -> None:
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    ana = await make_user(client)
    reservation = await (await hold(client, ana, session["id"], seats[:3])).json()
    headers = bearer(ana["token"]) | {"Idempotency-Key": "buy-once"}

    results = await asyncio.gather(*(client.post(f"/reservations/{reservation['id']}/confirm", headers=headers)
                                     for _ in range(20)))
    bodies = [await r.json() for r in results]
    assert [r.status for r in results] == [201] * 20, bodies
    assert len({b["id"] for b in bodies}) == 1
    assert await pg.fetchval("SELECT count(*) FROM sales WHERE reservation_id = $1",
                             uuid.UUID(reservation["id"])) == 1
    assert await pg.fetchval(
        "SELECT count(*) FROM outbox WHERE event_type = 'payment.confirmed' AND payload->>'reservationId' = $1",
        reservation["id"]) == 1

    # the same key for another reservation is refused, and buys nothing
    other = await (await hold(client, ana, session["id"], seats[5:6])).json()
    resp = await client.post(f"/reservations/{other['id']}/confirm", headers=headers)
    assert resp.status == 422 and (await resp.json())["code"] == "idempotency_key_reused"
    resp = await client.get(f"/reservations/{other['id']}", headers=bearer(ana["token"]))
    assert (await resp.json())["status"] == "PENDING"
    await assert_invariants(pg, [session["id"]])
