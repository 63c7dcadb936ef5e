"""The no-orphan rule for seats picked by hand: a hold that leaves a single free seat alone (between two taken
seats, or between a taken seat and the row's end) is made all the same, and its answer warns, over REST and the
socket alike (docs/beyond.md)."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from storage.redis_gate import RedisGate, Watch
from storage.redis_keys import seat_key
from tests.conftest import bearer, make_session, make_user, seat_ids


async def hold(client: TestClient, token: str, session_id: str, seats: list[str]) -> dict[str, Any]:
    resp = await client.post("/reservations", json={"sessionId": session_id, "sessionSeatIds": seats},
                             headers=bearer(token))
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


def stranded(body: dict[str, Any]) -> list[str]:
    warnings = body.get("warnings", [])
    assert all(w["code"] == "seats_stranded" and w["message"] for w in warnings)
    return [s for w in warnings for s in w["sessionSeatIds"]]


async def test_a_hold_that_strands_a_seat_is_made_and_warns_over_rest(client: TestClient) -> None:
    session = await make_session(client, rows=2, per_row=8)  # a session's room has 16 seats at least
    seats = await seat_ids(client, session["id"])  # A1..A8, then B1..B8, in seat order
    user = await make_user(client)
    body = await hold(client, user["token"], session["id"], [seats[1]])  # A2: A1 is left alone at the row's end
    assert [s["seatNumber"] for s in body["seats"]] == [2]
    assert stranded(body) == [seats[0]]
    body = await hold(client, user["token"], session["id"], [seats[3]])  # A4: A3 alone between A2 and A4
    assert stranded(body) == [seats[2]]
    body = await hold(client, user["token"], session["id"], [seats[6], seats[7]])  # A7-A8: A5-A6 stay together
    assert "warnings" not in body
    # the seats are held all the same
    listed = (await (await client.get(f"/sessions/{session['id']}/seats")).json())["seats"]
    assert [s["status"] for s in listed[:8]] == ["AVAILABLE", "RESERVED", "AVAILABLE", "RESERVED", "AVAILABLE",
                                             "AVAILABLE", "RESERVED", "RESERVED"]


async def test_the_socket_hold_warns_the_same(client: TestClient) -> None:
    session = await make_session(client, rows=3, per_row=6)
    seats = await seat_ids(client, session["id"])  # row A first
    user = await make_user(client)
    await hold(client, user["token"], session["id"], [seats[0]])
    async with client.ws_connect(f"/ws/sessions/{session['id']}?token={user['token']}") as ws:
        assert (await ws.receive_json())["type"] == "snapshot"
        await ws.send_json({"type": "hold", "sessionSeatIds": [seats[2], seats[4]], "requestId": "o1"})
        while (msg := await ws.receive_json()).get("requestId") != "o1":
            pass
    assert msg["type"] == "hold.ok", msg
    # A2 between A1 and A3, A4 between A3 and A5, A6 between A5 and the row's end
    assert stranded(msg["reservation"]) == [seats[1], seats[3], seats[5]]


async def test_best_available_never_warns_when_it_can_help_it(client: TestClient) -> None:
    session = await make_session(client, rows=3, per_row=8)
    seats = await seat_ids(client, session["id"])
    user = await make_user(client)
    await hold(client, user["token"], session["id"], [seats[8 + 3]])  # B4 taken: B1-B3 and B5-B8 free
    resp = await client.post("/reservations", json={"sessionId": session["id"], "quantity": 3, "rows": ["B"]},
                             headers=bearer(user["token"]))
    assert resp.status == 201
    body = await resp.json()
    assert "warnings" not in body
    assert [(s["rowLabel"], s["seatNumber"]) for s in body["seats"]] == [("B", 1), ("B", 2), ("B", 3)]
    # not B5-B7, nearer the centre, which would leave B8 alone


async def test_the_gate_looks_at_the_neighbours_in_the_hold_s_own_script(redis_client: Any) -> None:
    gate = RedisGate(redis_client)
    session, seats = uuid.uuid4(), [uuid.uuid4() for _ in range(4)]
    assert await gate.hold(session, [seats[0]], uuid.uuid4(), 30_000) == []
    watch = Watch([seats[0], seats[2], seats[3]])
    assert await gate.hold(session, [seats[1]], uuid.uuid4(), 30_000, watch) == []
    assert watch.taken == {seats[0]}  # of the seats looked at, only the one held before
    refused = Watch([seats[3]])
    assert await gate.hold(session, [seats[1], seats[2]], uuid.uuid4(), 30_000, refused) == [seats[1]]
    assert refused.taken is None  # nothing held, nothing looked at
    assert not await redis_client.exists(seat_key(session, seats[2]))
