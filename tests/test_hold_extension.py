"""Hold extension: once, by HOLD_EXTENSION_SECONDS, refused with stable codes; PostgreSQL, the Redis gate and the
expiry sweep follow it; and an extension racing the expiry ends one way or the other, never half of each."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core.appkeys import BOOKING
from core.settings import Settings
from server.app import create_app
from storage.redis_keys import seat_key
from tests.conftest import ADMIN, assert_invariants, bearer, make_session, make_user, seat_ids, with_settings
from tests.sockets.support import watch

EXTENSION = 2  # seconds, in these tests


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return with_settings(base_settings, hold_extension_seconds=EXTENSION)


async def hold(client: TestClient, user: dict[str, Any], sid: str, seats: list[str]) -> dict[str, Any]:
    resp = await client.post("/reservations", json={"sessionId": sid, "sessionSeatIds": seats},
                             headers=bearer(user["token"]))
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def extend(client: TestClient, user: dict[str, Any], reservation_id: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/reservations/{reservation_id}/extend", headers=bearer(user["token"]))
    return resp.status, await resp.json()


def ms(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


async def test_a_hold_is_extended_once_and_the_gate_and_database_follow(
        client: TestClient, pg: asyncpg.Connection, redis_client: Redis) -> None:
    session = await make_session(client)
    sid, seats = session["id"], await seat_ids(client, session["id"])
    ana = await make_user(client)
    held = await hold(client, ana, sid, seats[:2])
    status, extended = await extend(client, ana, held["id"])
    assert status == 200, extended
    assert ms(extended["expiresAt"]) - ms(held["expiresAt"]) == EXTENSION * 1000
    assert (extended["id"], extended["status"]) == (held["id"], "PENDING")
    row = await pg.fetchrow("SELECT expires_at, extended_at FROM reservations WHERE id = $1", held["id"])
    assert int(row["expires_at"].timestamp() * 1000) == ms(extended["expiresAt"]) and row["extended_at"] is not None
    for seat in seats[:2]:  # the gate's keys live until the new expiry
        key = seat_key(sid, seat)
        assert await redis_client.get(key) == f"H:{held['id']}".encode()
        left = await redis_client.pttl(key)
        assert abs(time.time() * 1000 + left - ms(extended["expiresAt"])) < 1000, left

    status, again = await extend(client, ana, held["id"])
    assert (status, again["code"]) == (409, "already_extended")
    assert await pg.fetchval("SELECT expires_at FROM reservations WHERE id = $1", held["id"]) == row["expires_at"]


async def test_refusals_have_stable_codes(client: TestClient, pg: asyncpg.Connection) -> None:
    session = await make_session(client)
    sid, seats = session["id"], await seat_ids(client, session["id"])
    ana, bob = await make_user(client), await make_user(client)
    held = await hold(client, ana, sid, seats[:1])
    assert (await extend(client, bob, held["id"]))[1]["code"] == "not_owner"
    resp = await client.post(f"/reservations/{held['id']}/extend")
    assert resp.status == 401
    status, body = await extend(client, ana, "3f1c2a9e-8b7d-4c6e-9a5f-1e2d3c4b5a69")
    assert (status, body["code"]) == (404, "reservation_not_found")

    resp = await client.post(f"/reservations/{held['id']}/confirm", headers=bearer(ana["token"]))
    assert resp.status == 201
    status, body = await extend(client, ana, held["id"])
    assert (status, body["code"]) == (409, "not_pending")

    expired = await hold(client, ana, sid, seats[1:2])
    await pg.execute("UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = $1", expired["id"])
    status, body = await extend(client, ana, expired["id"])
    assert (status, body["code"]) == (410, "hold_expired")
    assert await pg.fetchval("SELECT extended_at FROM reservations WHERE id = $1", expired["id"]) is None


async def test_refused_while_buyers_wait_on_the_waiting_list(client: TestClient, pg: asyncpg.Connection) -> None:
    session = await make_session(client)
    sid, seats = session["id"], await seat_ids(client, session["id"])
    ana, bob, carla = await make_user(client), await make_user(client), await make_user(client)
    mine = await hold(client, ana, sid, seats[:10])
    await hold(client, bob, sid, seats[10:])
    resp = await client.post(f"/sessions/{sid}/waitlist", json={"quantity": 2}, headers=bearer(carla["token"]))
    assert resp.status == 201
    status, body = await extend(client, ana, mine["id"])
    assert (status, body["code"], body["details"]["reason"]) == (409, "extension_not_allowed", "waiting_list")
    assert await pg.fetchval("SELECT extended_at FROM reservations WHERE id = $1", mine["id"]) is None
    # nobody waiting any more: allowed again
    assert (await client.delete(f"/sessions/{sid}/waitlist", headers=bearer(carla["token"]))).status == 204
    assert (await extend(client, ana, mine["id"]))[0] == 200


async def test_refused_while_the_sessions_waiting_room_is_on(client: TestClient, pg: asyncpg.Connection) -> None:
    session = await make_session(client)
    sid, seats = session["id"], await seat_ids(client, session["id"])
    ana = await make_user(client)
    mine = await hold(client, ana, sid, seats[:2])
    resp = await client.put(f"/sessions/{sid}/queue", json={"enabled": True, "rate": 5}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    status, body = await extend(client, ana, mine["id"])
    assert (status, body["code"], body["details"]["reason"]) == (409, "extension_not_allowed", "waiting_room")
    assert await pg.fetchval("SELECT extended_at FROM reservations WHERE id = $1", mine["id"]) is None
    # the room off again: allowed
    resp = await client.put(f"/sessions/{sid}/queue", json={"enabled": False}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    assert (await extend(client, ana, mine["id"]))[0] == 200


async def test_an_extension_racing_a_join_in_flight_is_refused_once_the_join_commits(
        client: TestClient, settings: Settings, pg: asyncpg.Connection) -> None:
    """A join that has taken the line's lock and is about to commit its place: an extension arriving meanwhile
    waits for it and is refused, rather than slipping past a buyer who joined first."""
    session = await make_session(client)
    sid, seats = session["id"], await seat_ids(client, session["id"])
    ana, bob, carla = await make_user(client), await make_user(client), await make_user(client)
    mine = await hold(client, ana, sid, seats[:10])
    await hold(client, bob, sid, seats[10:])
    joiner = await asyncpg.connect(settings.database_url)
    try:
        async with joiner.transaction():  # a join itself (bx_waitlist_join), held open before its commit
            await joiner.fetch("SELECT * FROM bx_waitlist_join($1, $2, 2, 30000, 0, '', 0)",
                               uuid.UUID(sid), uuid.UUID(carla["id"]))
            pending = asyncio.ensure_future(extend(client, ana, mine["id"]))
            await asyncio.sleep(0.5)
    finally:
        await joiner.close()
    status, body = await asyncio.wait_for(pending, 10)
    assert (status, body.get("code")) == (409, "extension_not_allowed"), body
    assert await pg.fetchval("SELECT extended_at FROM reservations WHERE id = $1", uuid.UUID(mine["id"])) is None


async def test_the_socket_extends_through_the_same_rules(client: TestClient) -> None:
    session = await make_session(client)
    sid, seats = session["id"], await seat_ids(client, session["id"])
    ana = await make_user(client)
    socket = await watch(client, sid, ana["token"])
    held = await socket.request({"type": "hold", "sessionSeatIds": seats[:1]}, ("hold.ok", "hold.rejected", "error"))
    reservation = held["reservation"]
    ok = await socket.request({"type": "extend", "reservationId": reservation["id"]}, ("extend.ok", "error"))
    assert ok["type"] == "extend.ok", ok
    assert ms(ok["reservation"]["expiresAt"]) - ms(reservation["expiresAt"]) == EXTENSION * 1000
    again = await socket.request({"type": "extend", "reservationId": reservation["id"]}, ("extend.ok", "error"))
    assert (again["type"], again["code"]) == ("error", "already_extended")


async def test_extension_off_is_refused(aiohttp_client: Any, base_settings: Settings) -> None:
    client = await aiohttp_client(create_app(with_settings(base_settings, hold_extension_seconds=0)))
    session = await make_session(client)
    ana = await make_user(client)
    held = await hold(client, ana, session["id"], (await seat_ids(client, session["id"]))[:1])
    status, body = await extend(client, ana, held["id"])
    assert (status, body["code"]) == (422, "extension_disabled")


RACES = 100


async def test_an_extension_racing_the_expiry_ends_one_way_or_the_other_100_times(
        aiohttp_client: Any, base_settings: Settings, pg: asyncpg.Connection, redis_client: Redis) -> None:
    """100 short holds; each is extended at a random moment around its expiry while sweeps run on every side.
    Each outcome is whole: extended (PENDING to its new expiry, its seat held in PostgreSQL and Redis until then,
    then expired) or expired (its seat free in both at once)."""
    # holds of 4 s, made ten at a time: on a loaded machine 100 one-second holds made one by one had all expired
    # before their races began (the race went one way only)
    settings = with_settings(base_settings, hold_ttl_seconds=4, hold_extension_seconds=EXTENSION,
                             expiry_sweep_interval=0.02, max_seats_per_user=0)
    client = await aiohttp_client(create_app(settings))
    booking = client.app[BOOKING]
    session = await make_session(client, rows=10, per_row=10)
    sid, seats = session["id"], await seat_ids(client, session["id"])
    users = [await make_user(client) for _ in range(10)]
    holds: list[dict[str, Any]] = []
    for start in range(0, RACES, 10):  # expiries spread out a little
        holds += await asyncio.gather(*(hold(client, users[i % 10], sid, [seats[i]]) for i in range(start, start + 10)))
    loop = asyncio.get_running_loop()
    offset_ms = time.time() * 1000 - loop.time() * 1000

    async def race(i: int) -> tuple[int, str | None]:
        due = ms(holds[i]["expiresAt"]) - offset_ms + random.uniform(-500, 100)  # loop time, in ms
        await asyncio.sleep(max(0.0, due / 1000 - loop.time()))
        (status, body), _ = await asyncio.gather(extend(client, users[i % 10], holds[i]["id"]), booking.expire_due())
        return status, body.get("code")

    outcomes = await asyncio.gather(*(race(i) for i in range(RACES)))
    assert set(outcomes) <= {(200, None), (410, "hold_expired")}, Counter(outcomes)
    counts = Counter(status for status, _ in outcomes)
    assert counts[200] and counts[410], counts  # the race went both ways
    print("extension race outcomes:", dict(counts))

    async def states() -> list[tuple[str, str, bytes | None]]:
        out = []
        for held in holds:
            status = await pg.fetchval("SELECT status FROM reservations WHERE id = $1", held["id"])
            seat = held["seats"][0]["id"]
            owner = await pg.fetchval("SELECT reservation_id FROM session_seats WHERE id = $1", seat)
            out.append((status, str(owner) if owner else "", await redis_client.get(seat_key(sid, seat))))
        return out

    await asyncio.sleep(0.3)  # the sweeps of this node catch the holds whose extension came too late
    extended = {holds[i]["id"] for i, (status, _) in enumerate(outcomes) if status == 200}
    for held, (status, owner, key) in zip(holds, await states(), strict=True):
        if held["id"] in extended:  # alive until its new expiry, in both
            assert (status, owner, key) == ("PENDING", held["id"], f"H:{held['id']}".encode())
        else:  # expired, free in both
            assert (status, owner, key) == ("EXPIRED", "", None)

    last = max(ms(h["expiresAt"]) for h in holds) + EXTENSION * 1000
    await asyncio.sleep(max(0.0, (last - time.time() * 1000) / 1000) + 0.5)
    assert all(state == ("EXPIRED", "", None) for state in await states())
    await assert_invariants(pg, [sid])


async def test_extend_lua_moves_the_owners_keys_sets_lapsed_ones_and_leaves_others(redis_client: Redis) -> None:
    from storage.extension import EXTEND_LUA

    script = redis_client.register_script(EXTEND_LUA.read_text())
    session, owner, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    mine, lapsed, theirs = (seat_key(session, uuid.uuid4()) for _ in range(3))
    await redis_client.set(mine, f"H:{owner}", px=1000)
    await redis_client.set(theirs, f"H:{other}", px=1000)
    until = int(time.time() * 1000) + 60_000
    assert await script(keys=[mine, lapsed, theirs], args=[str(owner), until]) == 2
    assert await redis_client.mget([mine, lapsed, theirs]) == [f"H:{owner}".encode(), f"H:{owner}".encode(),
                                                                f"H:{other}".encode()]
    for key in (mine, lapsed):
        assert 55_000 < await redis_client.pttl(key) <= 60_000
    assert await redis_client.pttl(theirs) <= 1000

    # a gate that keeps a taken set beside the seat keys (its first key): the set's entries follow as well
    taken = f"bx:taken:{{s:{session}}}"
    await redis_client.zadd(taken, {mine.rsplit(":", 1)[1]: 1})
    await redis_client.pexpire(taken, 1000)
    later = until + 30_000
    assert await script(keys=[taken, mine], args=[str(owner), later]) == 1
    assert await redis_client.zscore(taken, mine.rsplit(":", 1)[1]) == later
    assert await redis_client.pttl(taken) > 80_000
