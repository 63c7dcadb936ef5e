"""The waiting list across nodes: the buyer's socket is on one node, the seats come back through another, and
the offer reaches the socket (through the outbox and Kafka) -- and to one buyer only."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import aiohttp
import asyncpg
import pytest

from server.cluster import LocalCluster
from server.embedded import EmbeddedStack
from tests.cluster_support import assert_invariants, make_session, make_user, seat_ids
from tests.conftest import bearer

pytestmark = [pytest.mark.cluster]


async def post(http: aiohttp.ClientSession, url: str, user: dict[str, Any], body: dict[str, Any]) -> tuple[int, Any]:
    async with http.post(url, json=body, headers=bearer(user["token"])) as resp:
        return resp.status, await resp.json()


async def next_of(ws: aiohttp.ClientWebSocketResponse, kind: str, within: float = 15.0) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            data: dict[str, Any] = json.loads(msg.data)
            if data["type"] == kind:
                return data


async def test_the_offer_reaches_the_buyer_on_another_node_than_the_release(
        live_cluster: LocalCluster, api: aiohttp.ClientSession, stack: EmbeddedStack) -> None:
    session = await make_session(api)
    sid, seats = session["id"], await seat_ids(api, session["id"])
    holders = [await make_user(api) for _ in range(2)]
    first, second = await make_user(api), await make_user(api)
    node = live_cluster.node_urls
    held = {}
    for holder, part in ((holders[0], seats[:4]), (holders[1], seats[4:14]), (holders[1], seats[14:])):
        status, body = await post(api, f"{node[0]}/reservations", holder, {"sessionId": sid, "sessionSeatIds": part})
        assert status == 201, body
        held = held or body  # the first: the one released below

    async with aiohttp.ClientSession() as http:
        # the first in line listens on node 3, the second on node 2; the seats come back through node 1
        ws_first = await http.ws_connect(f"{node[2]}/ws/sessions/{sid}?token={first['token']}")
        ws_second = await http.ws_connect(f"{node[1]}/ws/sessions/{sid}?token={second['token']}")
        await next_of(ws_first, "snapshot")
        await next_of(ws_second, "snapshot")
        await ws_first.send_json({"type": "waitlist.join", "quantity": 4, "requestId": "j1"})
        assert (await next_of(ws_first, "waitlist.joined"))["entry"]["position"] == 1
        status, entry = await post(api, f"{node[1]}/sessions/{sid}/waitlist", second, {"quantity": 4})
        assert (status, entry["position"]) == (201, 2)

        async with api.delete(f"{node[0]}/reservations/{held['id']}", headers=bearer(holders[0]["token"])) as resp:
            assert resp.status == 204
        offer = await next_of(ws_first, "waitlist.offer")
        assert offer["reservation"]["userId"] == first["id"]
        assert {s["id"] for s in offer["reservation"]["seats"]} == set(seats[:4])
        with pytest.raises(TimeoutError):  # one buyer only: the second is not offered anything
            await next_of(ws_second, "waitlist.offer", within=1.0)
        await ws_first.close()
        await ws_second.close()

    dsn = stack.urls["DATABASE_URL"]  # type: ignore[attr-defined]
    con = await asyncpg.connect(dsn)
    try:
        owners = await con.fetch("SELECT DISTINCT reservation_id FROM session_seats WHERE id = ANY($1::uuid[])",
                                 seats[:4])
        assert [str(r["reservation_id"]) for r in owners] == [offer["reservation"]["id"]]
        assert await con.fetchval("SELECT status FROM waitlist_entries WHERE session_id = $1 AND user_id = $2",
                                  sid, second["id"]) == "WAITING"
    finally:
        await con.close()
    await assert_invariants(dsn, [sid])


async def test_a_release_whose_node_dies_before_publishing_still_reaches_the_buyer(
        live_cluster: LocalCluster, api: aiohttp.ClientSession, stack: EmbeddedStack) -> None:
    """The broker is down, so the releasing node commits the release and its offer but cannot publish them; then
    it is killed. The offer was made in the release's own transaction, so nothing is lost: the buyer holds the
    seats in PostgreSQL at once, and once the broker is back the other nodes publish the offer and the buyer's
    socket (on another node) learns of it -- pushed, or marked `mine` in the snapshot of the resync."""
    victim = 0
    session = await make_session(api)
    sid, seats = session["id"], await seat_ids(api, session["id"])
    holder, filler, buyer = await make_user(api), await make_user(api), await make_user(api)
    node = live_cluster.node_urls
    held: dict[str, Any] = {}
    for user, part in ((holder, seats[:3]), (filler, seats[3:13]), (filler, seats[13:])):
        status, body = await post(api, f"{node[1]}/reservations", user, {"sessionId": sid, "sessionSeatIds": part})
        assert status == 201, body
        held = held or body
    dsn = stack.urls["DATABASE_URL"]  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{node[2]}/ws/sessions/{sid}?token={buyer['token']}")
        await next_of(ws, "snapshot")
        status, _ = await post(api, f"{node[1]}/sessions/{sid}/waitlist", buyer, {"quantity": 3})
        assert status == 201
        await asyncio.to_thread(stack["kafka"].kill)  # type: ignore[index]
        try:
            async with api.delete(f"{node[victim]}/reservations/{held['id']}",
                                  headers=bearer(holder["token"])) as resp:
                assert resp.status == 204
            con = await asyncpg.connect(dsn)
            try:  # committed with the release: the seats are the buyer's before any event left
                offered = await con.fetchrow("SELECT w.reservation_id, r.status, r.user_id FROM waitlist_entries w"
                                             " JOIN reservations r ON r.id = w.reservation_id"
                                             " WHERE w.session_id = $1 AND w.user_id = $2", sid, buyer["id"])
                assert (offered["status"], str(offered["user_id"])) == ("PENDING", buyer["id"])
                owners = await con.fetch("SELECT reservation_id FROM session_seats WHERE id = ANY($1::uuid[])",
                                         seats[:3])
                assert {r["reservation_id"] for r in owners} == {offered["reservation_id"]}
                assert await con.fetchval("SELECT count(*) FROM outbox WHERE session_id = $1 AND published_at IS NULL"
                                          " AND payload ? 'waitlist'", sid) == 1
            finally:
                await con.close()
            assert live_cluster.kill_node(victim, signal.SIGKILL) == -signal.SIGKILL
        finally:
            await asyncio.to_thread(stack["kafka"].start)  # type: ignore[index]

        reservation_id = str(offered["reservation_id"])
        async with asyncio.timeout(30):
            while True:
                msg = await ws.receive()
                assert msg.type is aiohttp.WSMsgType.TEXT, msg
                data = json.loads(msg.data)
                if data["type"] == "waitlist.offer":
                    assert data["reservation"]["id"] == reservation_id
                    break
                if data["type"] == "snapshot" and {s["id"] for s in data["seats"] if s["mine"]} == set(seats[:3]):
                    break
        await ws.close()
    await assert_invariants(dsn, [sid])
