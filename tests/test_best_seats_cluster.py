"""Best available seats on a real 3-node cluster: 200 buyers at once, no overlaps, nobody refused while seats
are free, every booking invariant held."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
import asyncpg
import pytest

from server.cluster import LocalCluster
from tests.cluster_support import assert_invariants, make_session, make_user
from tests.conftest import bearer

pytestmark = [pytest.mark.cluster]

BUYERS = 200


async def test_200_buyers_race_for_best_available_on_3_nodes(live_cluster: LocalCluster, api: aiohttp.ClientSession,
                                                               base_settings: Any) -> None:
    session = await make_session(api, rows=20, per_row=20)  # 400 seats: exactly two for each buyer
    buyers = await asyncio.gather(*(make_user(api, f"B{i}") for i in range(BUYERS)))
    nodes: Counter[str] = Counter()

    async def buy(user: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with api.post("/reservations", json={"sessionId": session["id"], "quantity": 2},
                            headers=bearer(user["token"])) as resp:
            nodes[resp.headers.get("X-Node-Id", "")] += 1
            return resp.status, await resp.json()

    outcomes = await asyncio.gather(*(buy(u) for u in buyers))
    assert len(nodes) == 3  # every node chose seats
    assert [status for status, _ in outcomes] == [201] * BUYERS, [b for s, b in outcomes if s != 201][:3]
    assert all(len(body["seats"]) == 2 for _, body in outcomes)

    con = await asyncpg.connect(base_settings.database_url)
    try:
        # a seat held by two reservations at once: only if the earlier one ended (the cluster's holds last 2 s)
        live = await con.fetch(
            "SELECT rs.session_seat_id, count(*) AS n FROM reservation_seats rs JOIN reservations r"
            " ON r.id = rs.reservation_id WHERE r.session_id = $1 AND r.status IN ('PENDING', 'CONFIRMED')"
            " GROUP BY 1 HAVING count(*) > 1", session["id"])
        assert live == []
        overlapping = await con.fetchval(
            "SELECT count(*) FROM reservation_seats a JOIN reservation_seats b"
            " ON a.session_seat_id = b.session_seat_id AND a.reservation_id < b.reservation_id"
            " JOIN reservations ra ON ra.id = a.reservation_id JOIN reservations rb ON rb.id = b.reservation_id"
            " WHERE ra.session_id = $1 AND ra.status = 'PENDING' AND rb.status = 'PENDING'", session["id"])
        assert overlapping == 0
    finally:
        await con.close()
    await assert_invariants(base_settings.database_url, [session["id"]])
