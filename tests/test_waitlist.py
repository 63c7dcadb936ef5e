"""The waiting list of a sold-out session: join, leave, and seats that come back held for the first buyer whose
request fits, over REST and the socket, checked from PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core.appkeys import PG_POOL
from core.settings import Settings
from jobs.retention import purge_once
from server.app import create_app
from storage.redis_keys import seat_key
from tests.conftest import assert_invariants, bearer, make_session, make_user, seat_ids, with_settings
from tests.sockets.support import watch

WAIT = 10.0


async def hold(client: TestClient, user: dict[str, Any], sid: str, seats: list[str]) -> dict[str, Any]:
    resp = await client.post("/reservations", json={"sessionId": sid, "sessionSeatIds": seats},
                             headers=bearer(user["token"]))
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def sold_out(client: TestClient, per_hold: list[int]) -> tuple[str, list[str], list[Held]]:
    """A 16-seat session whose every seat is held, by holds of the given sizes (one user each)."""
    assert sum(per_hold) == 16
    session = await make_session(client)
    sid, seats = session["id"], await seat_ids(client, session["id"])
    holds, start = [], 0
    for size in per_hold:
        user = await make_user(client)
        holds.append(Held(user, await hold(client, user, sid, seats[start:start + size])))
        start += size
    return sid, seats, holds


class Held:
    def __init__(self, user: dict[str, Any], reservation: dict[str, Any]) -> None:
        self.user, self.reservation = user, reservation

    async def cancel(self, client: TestClient) -> None:
        resp = await client.delete(f"/reservations/{self.reservation['id']}", headers=bearer(self.user["token"]))
        assert resp.status == 204, await resp.text()


async def join(client: TestClient, user: dict[str, Any], sid: str, quantity: int) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/sessions/{sid}/waitlist", json={"quantity": quantity}, headers=bearer(user["token"]))
    return resp.status, await resp.json()


async def entry(client: TestClient, user: dict[str, Any], sid: str) -> tuple[int, dict[str, Any]]:
    resp = await client.get(f"/sessions/{sid}/waitlist", headers=bearer(user["token"]))
    return resp.status, await resp.json()


async def wait_offered(client: TestClient, user: dict[str, Any], sid: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        status, body = await entry(client, user, sid)
        if status == 200 and body["status"] == "OFFERED":
            return body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.05)


async def held_by(pg: asyncpg.Connection, reservation_id: str) -> tuple[str, set[str]]:
    status = await pg.fetchval("SELECT status FROM reservations WHERE id = $1", reservation_id)
    seats = await pg.fetch("SELECT id FROM session_seats WHERE reservation_id = $1 AND status = 'RESERVED'",
                           reservation_id)
    return status, {str(r["id"]) for r in seats}


async def test_join_is_refused_while_enough_seats_are_free_and_accepted_once_sold_out(client: TestClient) -> None:
    session = await make_session(client)
    sid = session["id"]
    buyer = await make_user(client)
    status, body = await join(client, buyer, sid, 2)
    assert (status, body["code"], body["details"]["available"]) == (409, "seats_available", 16)

    sid, _, _ = await sold_out(client, [10, 6])
    status, first = await join(client, buyer, sid, 2)
    assert status == 201, first
    assert (first["status"], first["position"], first["ahead"], first["quantity"]) == ("WAITING", 1, 0, 2)
    again, second = await join(client, buyer, sid, 5)  # joining twice: the same place, as first asked
    assert (again, second["id"], second["quantity"], second["position"]) == (200, first["id"], 2, 1)
    other = await make_user(client)
    status, behind = await join(client, other, sid, 1)
    assert (status, behind["position"], behind["ahead"], behind["waiting"]) == (201, 2, 1, 2)


async def test_join_rules(client: TestClient) -> None:
    sid, _, _ = await sold_out(client, [10, 6])
    buyer = await make_user(client)
    for quantity in (0, 11, "2", None):
        status, body = await join(client, buyer, sid, quantity)  # type: ignore[arg-type]
        assert status == 400, body
    resp = await client.post(f"/sessions/{sid}/waitlist", json={"quantity": 1})
    assert resp.status == 401
    resp = await client.post("/sessions/7b0c9a4e-5d1c-4e41-9a43-0d5f3c1f0a11/waitlist", json={"quantity": 1},
                             headers=bearer(buyer["token"]))
    assert (resp.status, (await resp.json())["code"]) == (404, "session_not_found")
    status, body = await entry(client, buyer, sid)
    assert (status, body["code"]) == (404, "not_on_waitlist")
    resp = await client.delete(f"/sessions/{sid}/waitlist", headers=bearer(buyer["token"]))
    assert (resp.status, (await resp.json())["code"]) == (404, "not_on_waitlist")


async def test_released_seats_go_to_the_first_whose_request_fits_and_never_to_two(
        client: TestClient, pg: asyncpg.Connection, redis_client: Redis) -> None:
    sid, seats, holds = await sold_out(client, [4, 6, 6])
    first, second, small = await make_user(client), await make_user(client), await make_user(client)
    for user, quantity in ((first, 4), (second, 4), (small, 2)):
        assert (await join(client, user, sid, quantity))[0] == 201
    await holds[0].cancel(client)  # 4 seats back: the first (4) gets them all; the second and the small wait

    offered = await wait_offered(client, first, sid)
    status, got = await held_by(pg, offered["reservationId"])
    assert (status, got) == ("PENDING", set(seats[:4]))
    # the gate turns others away from the offered seats, as for any hold
    keys = [seat_key(sid, s) for s in seats[:4]]
    assert await redis_client.mget(keys) == [f"H:{offered['reservationId']}".encode()] * 4
    assert all(ttl > 0 for ttl in [await redis_client.pttl(k) for k in keys])
    reservation = await (await client.get(f"/reservations/{offered['reservationId']}",
                                          headers=bearer(first["token"]))).json()
    assert (reservation["userId"], reservation["status"], len(reservation["seats"])) == (first["id"], "PENDING", 4)
    for user, position in ((second, 1), (small, 2)):
        status, body = await entry(client, user, sid)
        assert (status, body["status"], body["position"]) == (200, "WAITING", position)
    assert await pg.fetchval("SELECT count(*) FROM session_seats WHERE session_id = $1 AND status = 'AVAILABLE'",
                             sid) == 0

    await holds[1].cancel(client)  # 6 back: the second (4) then the small (2), in line order
    second_offer, small_offer = await wait_offered(client, second, sid), await wait_offered(client, small, sid)
    got_second = (await held_by(pg, second_offer["reservationId"]))[1]
    got_small = (await held_by(pg, small_offer["reservationId"]))[1]
    assert (len(got_second), len(got_small)) == (4, 2)
    assert got_second | got_small == set(seats[4:10]) and not got_second & got_small
    await assert_invariants(pg, [sid])


async def test_a_buyer_who_left_is_skipped(client: TestClient, pg: asyncpg.Connection) -> None:
    sid, seats, holds = await sold_out(client, [2, 7, 7])
    leaver, stayer = await make_user(client), await make_user(client)
    assert (await join(client, leaver, sid, 2))[0] == 201
    assert (await join(client, stayer, sid, 2))[0] == 201
    resp = await client.delete(f"/sessions/{sid}/waitlist", headers=bearer(leaver["token"]))
    assert resp.status == 204
    assert (await entry(client, stayer, sid))[1]["position"] == 1
    await holds[0].cancel(client)
    offered = await wait_offered(client, stayer, sid)
    assert (await held_by(pg, offered["reservationId"]))[1] == set(seats[:2])
    status, body = await entry(client, leaver, sid)
    assert (status, body["code"]) == (404, "not_on_waitlist")
    assert await pg.fetchval("SELECT count(*) FROM reservations WHERE user_id = $1", leaver["id"]) == 0
    await assert_invariants(pg, [sid])


async def test_an_expired_offer_moves_on_to_the_next_buyer(client: TestClient, pg: asyncpg.Connection) -> None:
    sid, seats, holds = await sold_out(client, [2, 7, 7])
    first, next_ = await make_user(client), await make_user(client)
    assert (await join(client, first, sid, 2))[0] == 201
    assert (await join(client, next_, sid, 2))[0] == 201
    await holds[0].cancel(client)
    offered = await wait_offered(client, first, sid)
    # the first buyer does not buy: their hold expires (made due here rather than waited for) and moves on
    await pg.execute("UPDATE reservations SET expires_at = now() WHERE id = $1", offered["reservationId"])
    moved = await wait_offered(client, next_, sid)
    assert (await held_by(pg, moved["reservationId"]))[1] == set(seats[:2])
    assert (await held_by(pg, offered["reservationId"]))[0] == "EXPIRED"
    await assert_invariants(pg, [sid])


async def test_many_releases_at_once_serve_the_line_in_order_one_seat_each(
        client: TestClient, pg: asyncpg.Connection) -> None:
    sid, seats, holds = await sold_out(client, [1] * 16)
    line = [await make_user(client) for _ in range(12)]
    for user in line:
        assert (await join(client, user, sid, 1))[0] == 201
    await asyncio.gather(*(held.cancel(client) for held in holds[:10]))
    offers = [await wait_offered(client, user, sid) for user in line[:10]]
    got = [(await held_by(pg, o["reservationId"]))[1] for o in offers]
    assert all(len(g) == 1 for g in got)
    assert set().union(*got) == set(seats[:10])  # every seat to one buyer, never to two
    for user, position in ((line[10], 1), (line[11], 2)):
        assert (await entry(client, user, sid))[1]["position"] == position
    await assert_invariants(pg, [sid])


async def test_the_socket_joins_leaves_and_is_told_of_its_offer(client: TestClient, pg: asyncpg.Connection) -> None:
    sid, seats, holds = await sold_out(client, [3, 7, 6])
    buyer = await make_user(client)
    socket = await watch(client, sid, buyer["token"])
    joined = await socket.request({"type": "waitlist.join", "quantity": 3}, ("waitlist.joined", "error"))
    assert (joined["type"], joined["created"], joined["entry"]["position"]) == ("waitlist.joined", True, 1)
    left = await socket.request({"type": "waitlist.leave"}, ("waitlist.left", "error"))
    assert left["type"] == "waitlist.left"
    again = await socket.request({"type": "waitlist.leave"}, ("waitlist.left", "error"))
    assert (again["type"], again["code"]) == ("error", "not_on_waitlist")
    joined = await socket.request({"type": "waitlist.join", "quantity": 3}, ("waitlist.joined", "error"))
    assert joined["entry"]["position"] == 1
    refused = await socket.request({"type": "waitlist.join", "quantity": 0}, ("waitlist.joined", "error"))
    assert (refused["type"], refused["code"]) == ("error", "validation_error")

    await holds[0].cancel(client)
    offer = await socket.wait_for("waitlist.offer")
    reservation = offer["reservation"]
    assert (reservation["userId"], reservation["status"], offer["sessionId"]) == (buyer["id"], "PENDING", sid)
    assert {s["id"] for s in reservation["seats"]} == set(seats[:3])
    assert (await held_by(pg, reservation["id"])) == ("PENDING", set(seats[:3]))
    # the offered hold is an ordinary one: its owner buys it
    resp = await client.post(f"/reservations/{reservation['id']}/confirm", headers=bearer(buyer["token"]))
    assert resp.status == 201, await resp.text()
    await assert_invariants(pg, [sid])


async def test_joins_racing_releases_never_leave_a_buyer_waiting_beside_free_seats(
        client: TestClient, pg: asyncpg.Connection) -> None:
    """16 buyers join while the 16 one-seat holds of a sold-out session are cancelled at the same moment: each join
    either got in line (and then seats) or was told seats are free; once it settles, nobody waits while a seat is
    free (the locks, and the sweep behind them, lose no release), and no seat went to two buyers."""
    sid, seats, holds = await sold_out(client, [1] * 16)
    line = [await make_user(client) for _ in range(16)]
    results = await asyncio.gather(*(join(client, user, sid, 1) for user in line),
                                   *(held.cancel(client) for held in holds))
    joins = [status for status, _ in results[:16]]  # type: ignore[misc]
    assert set(joins) <= {201, 409}, joins

    async def settled() -> bool:
        waiting = await pg.fetchval(
            "SELECT count(*) FROM waitlist_entries WHERE session_id = $1 AND status = 'WAITING'", sid)
        free = await pg.fetchval("SELECT count(*) FROM session_seats WHERE session_id = $1 AND status = 'AVAILABLE'",
                                 sid)
        return not (waiting and free)

    deadline = asyncio.get_running_loop().time() + WAIT
    while not await settled():
        assert asyncio.get_running_loop().time() < deadline, "buyers wait while seats are free"
        await asyncio.sleep(0.1)
    offered = await pg.fetch("SELECT reservation_id FROM waitlist_entries WHERE session_id = $1 AND status = 'OFFERED'",
                             sid)
    assert len(offered) == joins.count(201)  # every buyer who got in line got a seat (16 came back)
    await assert_invariants(pg, [sid])


async def test_demo_mode_takes_the_user_id_from_the_request(aiohttp_client: Any, base_settings: Settings,
                                                            pg: asyncpg.Connection) -> None:
    """AUTH_REQUIRED=false: userId in the body (join) or the query (read, leave), as for holds; the socket that
    joined as a user is told of that user's offer."""
    client = await aiohttp_client(create_app(with_settings(base_settings, auth_required=False)))
    session = await make_session(client)
    sid, seats = session["id"], await seat_ids(client, session["id"])
    holder, buyer, other = await make_user(client), await make_user(client), await make_user(client)
    first = await client.post("/reservations", json={"userId": holder["id"], "sessionId": sid,
                                                     "sessionSeatIds": seats[:2]})
    assert first.status == 201
    released = await first.json()
    for part in (seats[2:10], seats[10:]):
        assert (await client.post("/reservations", json={"userId": other["id"], "sessionId": sid,
                                                         "sessionSeatIds": part})).status == 201
    resp = await client.post(f"/sessions/{sid}/waitlist", json={"quantity": 1})
    assert (resp.status, (await resp.json())["code"]) == (401, "user_required")
    resp = await client.post(f"/sessions/{sid}/waitlist", json={"quantity": 1, "userId": other["id"]})
    assert resp.status == 201
    assert (await client.get(f"/sessions/{sid}/waitlist?userId={other['id']}")).status == 200
    assert (await client.delete(f"/sessions/{sid}/waitlist?userId={other['id']}")).status == 204

    socket = await watch(client, sid)
    joined = await socket.request({"type": "waitlist.join", "quantity": 2, "userId": buyer["id"]},
                                  ("waitlist.joined", "error"))
    assert joined["type"] == "waitlist.joined", joined
    resp = await client.delete(f"/reservations/{released['id']}?userId={holder['id']}")
    assert resp.status == 204
    offer = await socket.wait_for("waitlist.offer")
    assert offer["reservation"]["userId"] == buyer["id"]
    assert (await held_by(pg, offer["reservation"]["id"])) == ("PENDING", set(seats[:2]))


async def test_seats_offered_sit_together_when_they_can(client: TestClient, pg: asyncpg.Connection) -> None:
    session = await make_session(client)  # rows A and B of 8 seats, in seat order
    sid, seats = session["id"], await seat_ids(client, session["id"])
    scattered = [seats[1], seats[3], seats[12], seats[13]]  # A2, A4, B5, B6
    holder, other = await make_user(client), await make_user(client)
    released = Held(holder, await hold(client, holder, sid, scattered))
    rest = [s for s in seats if s not in scattered]
    await hold(client, other, sid, rest[:10])
    await hold(client, await make_user(client), sid, rest[10:])
    pair, second = await make_user(client), await make_user(client)
    assert (await join(client, pair, sid, 2))[0] == 201
    assert (await join(client, second, sid, 2))[0] == 201
    await released.cancel(client)
    together = await wait_offered(client, pair, sid)
    assert (await held_by(pg, together["reservationId"]))[1] == {seats[12], seats[13]}  # B5 and B6, side by side
    apart = await wait_offered(client, second, sid)
    assert (await held_by(pg, apart["reservationId"]))[1] == {seats[1], seats[3]}  # no pair left: the first free
    await assert_invariants(pg, [sid])


async def test_retention_deletes_places_that_are_over_and_keeps_those_still_waiting(
        client: TestClient, pg: asyncpg.Connection, settings: Settings) -> None:
    sid, _, _ = await sold_out(client, [10, 6])
    left, waiting = await make_user(client), await make_user(client)
    assert (await join(client, left, sid, 1))[0] == 201
    assert (await join(client, waiting, sid, 1))[0] == 201
    assert (await client.delete(f"/sessions/{sid}/waitlist", headers=bearer(left["token"]))).status == 204
    await pg.execute("UPDATE waitlist_entries SET updated_at = now() - interval '400 days' WHERE session_id = $1", sid)
    deleted = await purge_once(client.app[PG_POOL], with_settings(settings, reservation_retention_days=30))
    assert deleted["waitlist_entries"] >= 1
    rows = await pg.fetch("SELECT user_id, status FROM waitlist_entries WHERE session_id = $1", sid)
    assert [(str(r["user_id"]), r["status"]) for r in rows] == [(waiting["id"], "WAITING")]  # its show is ahead
