"""Limits of the waiting list: the seats held for a buyer in line count against MAX_SEATS_PER_USER like any
hold, so one buyer cannot take a sold-out show's returns by joining again after each offer."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from core.settings import Settings
from server.app import create_app
from tests.conftest import assert_invariants, bearer, make_session, make_user, seat_ids, with_settings
from tests.test_waitlist import entry, hold, join, sold_out, wait_offered

QUOTA = 4


@pytest.fixture
async def quota_client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(with_settings(settings, max_seats_per_user=QUOTA)))


async def held_seats(pg: asyncpg.Connection, user_id: str) -> int:
    return await pg.fetchval(  # type: ignore[no-any-return]
        "SELECT count(*) FROM reservations r JOIN reservation_seats rs ON rs.reservation_id = r.id "
        "WHERE r.user_id = $1 AND r.status = 'PENDING'", user_id)


async def test_joining_again_after_an_offer_cannot_take_more_than_the_user_quota(
        quota_client: TestClient, pg: asyncpg.Connection) -> None:
    client = quota_client
    sid, _, holds = await sold_out(client, [4, 4, 4, 4])
    scalper = await make_user(client)
    assert (await join(client, scalper, sid, 4))[0] == 201
    await holds[0].cancel(client)
    await wait_offered(client, scalper, sid)
    assert await held_seats(pg, scalper["id"]) == QUOTA
    # holding the quota already: a second place in line is refused at once, as a hold would be
    status, body = await join(client, scalper, sid, 4)
    assert (status, body.get("code")) == (429, "hold_quota_exceeded"), body
    assert await pg.fetchval("SELECT count(*) FROM waitlist_entries WHERE user_id = $1 AND status = 'WAITING'",
                             scalper["id"]) == 0
    await assert_invariants(pg, [sid])


async def test_a_buyer_in_line_holding_their_quota_elsewhere_keeps_their_place_and_the_next_is_served(
        quota_client: TestClient, pg: asyncpg.Connection) -> None:
    client = quota_client
    sid, seats, holds = await sold_out(client, [4, 4, 4, 4])
    first, next_ = await make_user(client), await make_user(client)
    assert (await join(client, first, sid, 2))[0] == 201
    assert (await join(client, next_, sid, 2))[0] == 201
    other = await make_session(client)  # the first in line then holds their quota on another show
    elsewhere = await hold(client, first, other["id"], (await seat_ids(client, other["id"]))[:QUOTA])
    await holds[0].cancel(client)  # 4 seats back: 2 would exceed the first's quota; the next gets 2
    await wait_offered(client, next_, sid)
    status, body = await entry(client, first, sid)
    assert (status, body["status"], body["position"]) == (200, "WAITING", 1)
    assert await held_seats(pg, first["id"]) == QUOTA
    # once the first holds fewer seats, the seats still free go to them (the backstop serves the line)
    resp = await client.delete(f"/reservations/{elsewhere['id']}", headers=bearer(first["token"]))
    assert resp.status == 204
    await wait_offered(client, first, sid)
    assert await held_seats(pg, first["id"]) == 2
    await asyncio.sleep(0)
    await assert_invariants(pg, [sid, other["id"]])


async def test_one_address_waits_for_at_most_its_seat_quota_on_a_show(
        client: TestClient, aiohttp_client: Any, settings: Settings, pg: asyncpg.Connection) -> None:
    """Many buyers from one address (each a new guest) cannot fill a show's line: the seats they wait for
    together stay within MAX_SEATS_PER_ADDRESS, as the seats they may hold do."""
    sid, _, _ = await sold_out(client, [10, 6])  # made by an app without limits
    capped = await aiohttp_client(create_app(with_settings(settings, max_seats_per_address=4)))
    first, second, third = [await make_user(client) for _ in range(3)]
    assert (await join(capped, first, sid, 3))[0] == 201
    resp = await capped.post(f"/sessions/{sid}/waitlist", json={"quantity": 2}, headers=bearer(second["token"]))
    body = await resp.json()
    assert (resp.status, body["code"], body["details"]["maxSeatsPerAddress"]) == (
        429, "address_quota_exceeded", 4), body
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await join(capped, second, sid, 1))[0] == 201  # 3 + 1: within the quota
    assert (await join(capped, third, sid, 1))[0] == 429
    # a place given up makes room again
    assert (await capped.delete(f"/sessions/{sid}/waitlist", headers=bearer(first["token"]))).status == 204
    assert (await join(capped, third, sid, 3))[0] == 201
    assert await pg.fetchval("SELECT sum(quantity) FROM waitlist_entries WHERE session_id = $1 AND status = 'WAITING'",
                             sid) == 4


async def test_the_invariants_see_a_stalled_line_and_an_offer_that_does_not_match_its_hold(
        client: TestClient, pg: asyncpg.Connection) -> None:
    from loadtests.invariants import check_invariants

    session = await make_session(client)
    sid = session["id"]
    buyer, other = await make_user(client), await make_user(client)
    held = await hold(client, other, sid, (await seat_ids(client, sid))[:2])
    seen_here = pg.transaction()  # rolled back: no other connection (no job) ever sees these rows
    await seen_here.start()
    try:
        await pg.execute("INSERT INTO waitlist_entries (session_id, user_id, quantity, hold_ttl_ms) "
                         "VALUES ($1, $2, 2, 30000)", sid, buyer["id"])
        await pg.execute("INSERT INTO waitlist_entries (session_id, user_id, quantity, hold_ttl_ms, status, "
                         "reservation_id) VALUES ($1, $2, 3, 30000, 'OFFERED', $3)", sid, buyer["id"], held["id"])
        report = await check_invariants(pg, [sid])
    finally:
        await seen_here.rollback()
    assert [r["quantity"] for r in report["waitlist_not_stalled"]] == [2]
    assert [str(r["reservation_id"]) for r in report["waitlist_offers_match_their_holds"]] == [held["id"]]
    await assert_invariants(pg, [sid])


async def test_a_pass_over_a_line_where_no_request_fits_locks_no_place(
        client: TestClient, pg: asyncpg.Connection) -> None:
    """One seat back, everyone waits for two: the release (and each backstop pass) serves nobody, and it must not
    lock (write) every place in a long line to find that out."""
    sid, _, holds = await sold_out(client, [1, 8, 7])
    line = [await make_user(client) for _ in range(20)]
    for user in line:
        assert (await join(client, user, sid, 2))[0] == 201
    await holds[0].cancel(client)  # the release's own pass
    await pg.fetch("SELECT * FROM bx_waitlist_sweep()")  # and a backstop pass
    locked = await pg.fetchval("SELECT count(*) FROM waitlist_entries WHERE session_id = $1 AND xmax::text <> '0'",
                               sid)
    assert locked == 0
    assert (await entry(client, line[0], sid))[1]["status"] == "WAITING"


async def test_offers_on_many_shows_released_at_once_never_pass_the_user_quota(
        aiohttp_client: Any, settings: Settings, pg: asyncpg.Connection) -> None:
    """A buyer waits on five sold-out shows for four seats each (quota 8) and holds seats on a sixth meanwhile;
    every show gets seats back at the same moment: whatever the order, they never hold more than 8."""
    quota = 8
    client: TestClient = await aiohttp_client(create_app(with_settings(settings, max_seats_per_user=quota)))
    buyer = await make_user(client)
    shows = [await sold_out(client, [4, 6, 6]) for _ in range(5)]
    for sid, _, _ in shows:
        assert (await join(client, buyer, sid, 4))[0] == 201
    other = await make_session(client)
    other_seats = await seat_ids(client, other["id"])

    async def hold_elsewhere() -> None:
        resp = await client.post("/reservations", json={"sessionId": other["id"], "sessionSeatIds": other_seats[:2]},
                                 headers=bearer(buyer["token"]))
        assert resp.status in (201, 429), await resp.text()

    await asyncio.gather(hold_elsewhere(), *(holds[0].cancel(client) for _, _, holds in shows))
    await asyncio.sleep(1.5)  # the backstop passes over what the releases could not serve
    assert await held_seats(pg, buyer["id"]) <= quota
    offered = await pg.fetchval("SELECT count(*) FROM waitlist_entries WHERE user_id = $1 AND status = 'OFFERED'",
                                buyer["id"])
    assert offered >= 1
    await assert_invariants(pg, [sid for sid, _, _ in shows] + [other["id"]])
