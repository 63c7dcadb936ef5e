"""The waiting list across nodes: the buyer's socket is on one node, the seats come back through another, and
the offer reaches the socket (through the outbox and Kafka) -- and to one buyer only."""

from __future__ import annotations

import asyncio
import json
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
