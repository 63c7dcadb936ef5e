"""Races: many real clients at once against one node; invariants checked from PostgreSQL afterwards."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from storage.redis_keys import GATE_EPOCH, seat_key
from tests.conftest import assert_invariants, bearer, make_session, make_user, seat_ids, with_settings


async def users(client: TestClient, n: int) -> list[dict[str, Any]]:
    made: list[dict[str, Any]] = []
    for start in range(0, n, 50):
        made += await asyncio.gather(*(make_user(client, f"fan{i}") for i in range(start, min(n, start + 50))))
    return made


async def hold(client: TestClient, user: dict[str, Any], session_id: str, seats: list[str]) -> tuple[int, Any]:
    resp = await client.post("/reservations", json={"sessionId": session_id, "sessionSeatIds": seats},
                             headers=bearer(user["token"]))
    return resp.status, await resp.json()


async def pending_seats(pg: Any, session_id: str) -> Counter[uuid.UUID]:
    rows = await pg.fetch(
        "SELECT rs.session_seat_id FROM reservations r JOIN reservation_seats rs ON rs.reservation_id = r.id"
        " WHERE r.session_id = $1 AND r.status = 'PENDING'", uuid.UUID(session_id))
    return Counter(r["session_seat_id"] for r in rows)


@pytest.mark.parametrize("gate", [True, False], ids=["redis-gate", "database-only"])
async def test_200_clients_race_for_the_same_two_seats(aiohttp_client: Any, settings: Any, pg: Any,
                                                       gate: bool) -> None:
    client = await aiohttp_client(create_app(with_settings(settings, redis_gate=gate)))
    session = await make_session(client)
    seats = (await seat_ids(client, session["id"]))[:2]
    fans = await users(client, 200)

    results = await asyncio.gather(*(hold(client, fan, session["id"], seats) for fan in fans))
    statuses = Counter(status for status, _ in results)
    assert statuses == Counter({201: 1, 409: 199}), statuses
    assert all(body["code"] == "seats_unavailable" for status, body in results if status == 409)
    assert await pending_seats(pg, session["id"]) == Counter({uuid.UUID(s): 1 for s in seats})
    await assert_invariants(pg, [session["id"]])


async def test_opposite_orders_and_overlapping_holds(client: TestClient, pg: Any) -> None:
    session = await make_session(client, rows=2, per_row=10)  # 20 seats
    seats = await seat_ids(client, session["id"])
    fans = await users(client, 102)

    # [1,3] against [3,1]: one wins, no deadlock
    pair = await asyncio.gather(hold(client, fans[0], session["id"], [seats[1], seats[3]]),
                                hold(client, fans[1], session["id"], [seats[3], seats[1]]))
    assert sorted(status for status, _ in pair) == [201, 409]

    # 100 clients, random overlapping sets of 1-4 of the 20 seats
    rng = random.Random(7)
    wanted = [rng.sample(seats, rng.randint(1, 4)) for _ in range(100)]
    racers = zip(fans[2:], wanted, strict=True)
    results = await asyncio.gather(*(hold(client, fan, session["id"], w) for fan, w in racers))
    assert {status for status, _ in results} <= {201, 409}
    won = [set(s["id"] for s in body["seats"]) for status, body in results if status == 201]
    assert won, "someone must win"
    taken: set[str] = set()
    for seat_set in won:
        assert not seat_set & taken, "winners' seat sets must be disjoint"
        taken |= seat_set
    counts = await pending_seats(pg, session["id"])
    assert max(counts.values()) == 1, "a seat is in two PENDING reservations"
    await assert_invariants(pg, [session["id"]])


async def test_confirm_racing_expiry(aiohttp_client: Any, settings: Any, pg: Any) -> None:
    """TTL 1 s; 100 holds each confirmed around its expiry: CONFIRMED with a sale or EXPIRED without."""
    client = await aiohttp_client(create_app(with_settings(settings, hold_ttl_seconds=1,
                                                           expiry_sweep_interval=0.05)))
    session = await make_session(client, rows=8, per_row=16)
    seats = await seat_ids(client, session["id"])
    fans = await users(client, 100)
    holds = await asyncio.gather(*(hold(client, fan, session["id"], [seats[i]]) for i, fan in enumerate(fans)))
    assert {status for status, _ in holds} == {201}
    rng = random.Random(11)

    async def confirm_late(fan: dict[str, Any], reservation: dict[str, Any]) -> int:
        await asyncio.sleep(rng.uniform(0.85, 1.15))
        resp = await client.post(f"/reservations/{reservation['id']}/confirm", headers=bearer(fan["token"]))
        assert resp.status in (201, 410), await resp.text()
        return resp.status

    outcomes = await asyncio.gather(*(confirm_late(fan, body) for fan, (_, body) in zip(fans, holds, strict=True)))
    await asyncio.sleep(0.5)  # let the sweeper finish
    rows = await pg.fetch(
        "SELECT r.id, r.status, sa.id AS sale FROM reservations r LEFT JOIN sales sa ON sa.reservation_id = r.id"
        " WHERE r.session_id = $1", uuid.UUID(session["id"]))
    assert len(rows) == 100
    by_id = {str(r["id"]): r for r in rows}
    for (_, reservation), status in zip(holds, outcomes, strict=True):
        row = by_id[reservation["id"]]
        if status == 201:
            assert row["status"] == "CONFIRMED" and row["sale"] is not None
        else:
            assert row["status"] == "EXPIRED" and row["sale"] is None
    assert Counter(outcomes)[201] + Counter(outcomes)[410] == 100
    await assert_invariants(pg, [session["id"]])


async def test_redis_flush_mid_race_never_double_holds(client: TestClient, pg: Any, redis_client: Any) -> None:
    session = await make_session(client, rows=2, per_row=10)
    seats = await seat_ids(client, session["id"])
    fans = await users(client, 120)
    rng = random.Random(3)

    async def flush_soon() -> None:
        await asyncio.sleep(0.02)
        await redis_client.flushall()

    wanted = [rng.sample(seats, rng.randint(1, 3)) for _ in fans]
    results, _ = await asyncio.gather(
        asyncio.gather(*(hold(client, fan, session["id"], w) for fan, w in zip(fans, wanted, strict=True))),
        flush_soon())
    assert {status for status, _ in results} <= {201, 409}
    assert max((await pending_seats(pg, session["id"])).values()) == 1
    # after the flush a second wave still cannot take what the first wave holds: PostgreSQL refuses
    await redis_client.flushall()
    taken = {seat["id"] for status, body in results if status == 201 for seat in body["seats"]}
    again = await asyncio.gather(*(hold(client, fan, session["id"], w) for fan, w in zip(fans, wanted, strict=True)))
    for (status, _), w in zip(again, wanted, strict=True):
        if taken & set(w):
            assert status == 409
    assert max((await pending_seats(pg, session["id"])).values()) == 1
    await assert_invariants(pg, [session["id"]])
    # the gate is rebuilt from PostgreSQL within seconds
    held = await pg.fetch("SELECT id, reservation_id FROM session_seats WHERE session_id = $1 AND status = 'RESERVED'",
                          uuid.UUID(session["id"]))
    for _ in range(40):
        if await redis_client.exists(GATE_EPOCH):
            break
        await asyncio.sleep(0.1)
    assert await redis_client.exists(GATE_EPOCH)
    for row in held:
        value = await redis_client.get(seat_key(session["id"], row["id"]))
        assert value == f"H:{row['reservation_id']}".encode()


async def test_redis_restart_mid_rush(client: TestClient, pg: Any, stack: Any, redis_client: Any) -> None:
    session = await make_session(client, rows=2, per_row=10)
    seats = await seat_ids(client, session["id"])
    fans = await users(client, 40)
    first = await asyncio.gather(*(hold(client, fan, session["id"], [seats[i % 20]]) for i, fan in enumerate(fans)))
    assert Counter(s for s, _ in first) == Counter({201: 20, 409: 20})
    try:
        stack["redis"].stop()
        status, body = await hold(client, fans[0], session["id"], [seats[0]])
        assert (status, body["code"]) == (503, "redis_unavailable")
    finally:
        stack["redis"].start()
    # back: the gate is rebuilt and the database still refuses every taken seat
    for _ in range(50):
        try:
            if await redis_client.exists(GATE_EPOCH):
                break
        except Exception:  # noqa: BLE001 - the test client reconnects too
            pass
        await asyncio.sleep(0.1)
    assert await redis_client.exists(GATE_EPOCH)
    again = await asyncio.gather(*(hold(client, fan, session["id"], [seats[i % 20]]) for i, fan in enumerate(fans)))
    assert {s for s, _ in again} == {409}
    assert max((await pending_seats(pg, session["id"])).values()) == 1
    await assert_invariants(pg, [session["id"]])
