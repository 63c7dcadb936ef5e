"""Object-level authorization over the socket on a real 3-node cluster (issue 7).

A socket acts only for its token's user: another user's `release` is `not_owner`, a `hold` naming someone
else's `userId` is `not_owner`, a socket without a token is `unauthorized` -- and nothing reaches PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import asyncpg
import pytest

from server.cluster import LocalCluster
from tests.cluster_support import (
    SeatSocket,
    assert_invariants,
    make_session,
    make_user,
    seat_ids,
)

pytestmark = pytest.mark.cluster


async def test_socket_commands_act_only_for_the_tokens_user(
        live_cluster: LocalCluster, api: aiohttp.ClientSession, base_settings: Any) -> None:
    cluster = live_cluster
    session = await make_session(api)
    sid = session["id"]
    seats = await seat_ids(api, sid)
    ana, bob = await make_user(api, "Ana"), await make_user(api, "Bob")
    con = await asyncpg.connect(base_settings.database_url)
    try:
        async with aiohttp.ClientSession() as http:
            # three sockets on three nodes: the refusals do not depend on where a socket landed
            ana_ws = SeatSocket(http, cluster.node_urls[0], sid, token=ana["token"])
            bob_ws = SeatSocket(http, cluster.node_urls[1], sid, token=bob["token"])
            anonymous = SeatSocket(http, cluster.node_urls[2], sid)
            await asyncio.gather(ana_ws.connect(), bob_ws.connect(), anonymous.connect())
            try:
                held = await ana_ws.request({"type": "hold", "sessionSeatIds": seats[:2]})
                assert held["type"] == "hold.ok", held
                rid = held["reservation"]["id"]
                state_query = ("SELECT r.status, r.user_id, array_agg(ss.status || ':' || ss.version ORDER BY ss.id) "
                               "AS seats FROM reservations r JOIN reservation_seats rs ON rs.reservation_id = r.id "
                               "JOIN session_seats ss ON ss.id = rs.session_seat_id WHERE r.id = $1::uuid "
                               "GROUP BY r.status, r.user_id")
                before = await con.fetchrow(state_query, rid)
                others_before = await con.fetch("SELECT id, status, version FROM session_seats "
                                                "WHERE session_id = $1::uuid AND id <> ALL($2::uuid[]) ORDER BY id",
                                                sid, seats[:2])

                # Bob releasing Ana's hold, Bob holding in Ana's name, and a socket without a token
                refusals = [
                    await bob_ws.request({"type": "release", "reservationId": rid}),
                    await bob_ws.request({"type": "hold", "sessionSeatIds": seats[2:4], "userId": ana["id"]}),
                    await anonymous.request({"type": "release", "reservationId": rid}),
                    await anonymous.request({"type": "hold", "sessionSeatIds": seats[4:6]}),
                    await anonymous.request({"type": "hold", "sessionSeatIds": seats[4:6], "userId": ana["id"]}),
                ]
                assert [(r["type"], r["code"]) for r in refusals] == [
                    ("error", "not_owner"), ("error", "not_owner"),
                    ("error", "unauthorized"), ("error", "unauthorized"), ("error", "unauthorized")], refusals

                # Ana's reservation is untouched (well within its 2 s hold) and nothing else was written
                after = await con.fetchrow(state_query, rid)
                assert after == before and after["status"] == "PENDING" and str(after["user_id"]) == ana["id"]
                assert await con.fetch("SELECT id, status, version FROM session_seats WHERE session_id = $1::uuid "
                                       "AND id <> ALL($2::uuid[]) ORDER BY id", sid, seats[:2]) == others_before
                assert await con.fetchval("SELECT count(*) FROM reservations WHERE session_id = $1::uuid", sid) == 1
                assert [r["event_type"] for r in await con.fetch(
                    "SELECT event_type FROM outbox WHERE session_id = $1::uuid", sid)] == ["reservation.created"]

                # and it is still Ana's to release
                released = await ana_ws.request({"type": "release", "reservationId": rid})
                assert (released["type"], released["reservationId"]) == ("release.ok", rid), released
            finally:
                await asyncio.gather(ana_ws.close(), bob_ws.close(), anonymous.close())
    finally:
        await con.close()
    await assert_invariants(base_settings.database_url, [sid])
