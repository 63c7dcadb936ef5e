"""Every bad best-available request, over REST and over the socket alike, is refused with a 4xx and a stable code,
never a 500, and holds nothing."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import bearer, make_session, make_user, seat_ids, table_counts

Case = tuple[dict[str, Any], int, str]
BAD: list[Case] = [  # (body beyond sessionId, REST status, code)
    ({"quantity": 0}, 400, "validation_error"),
    ({"quantity": -3}, 400, "validation_error"),
    ({"quantity": 10**30}, 400, "validation_error"),
    ({"quantity": 2.5}, 400, "validation_error"),
    ({"quantity": 2.0}, 400, "validation_error"),
    ({"quantity": "2"}, 400, "validation_error"),
    ({"quantity": True}, 400, "validation_error"),
    ({"quantity": None}, 400, "validation_error"),
    ({"quantity": 11}, 400, "invalid_seat_count"),  # over MAX_SEATS_PER_HOLD
    ({"quantity": 2, "rows": []}, 400, "validation_error"),
    ({"quantity": 2, "rows": "A"}, 400, "validation_error"),
    ({"quantity": 2, "rows": [1]}, 400, "validation_error"),
    ({"quantity": 2, "rows": ["A"] * 101}, 400, "validation_error"),
    ({"quantity": 2, "rows": ["A\u0000"]}, 400, "validation_error"),
    ({"quantity": 2, "rows": ["Z"]}, 422, "rows_not_in_session"),
    ({"quantity": 2, "rows": ["A", "Z", "Z"]}, 422, "rows_not_in_session"),
    ({"rows": ["A"]}, 400, "invalid_hold_request"),
    ({"quantity": 9, "rows": ["A", "A"]}, 409, "seats_unavailable"),  # row A has 8 seats, named twice
]


async def test_bad_best_available_requests_over_rest_and_the_socket(client: TestClient, pg: Any) -> None:
    session = await make_session(client, rows=2, per_row=8)
    user = await make_user(client)
    named = (await seat_ids(client, session["id"]))[:2]
    cases = [*BAD, ({"quantity": 2, "sessionSeatIds": named}, 400, "invalid_hold_request"),
             ({"quantity": 2, "sessionSeatIds": []}, 400, "invalid_hold_request")]
    before = await table_counts(pg)
    for extra, status, code in cases:
        resp = await client.post("/reservations", json={"sessionId": session["id"], **extra},
                                 headers=bearer(user["token"]))
        body = await resp.json()
        assert (resp.status, body.get("code")) == (status, code), (extra, body)
    async with client.ws_connect(f"/ws/sessions/{session['id']}?token={user['token']}") as ws:
        while (await ws.receive_json(timeout=10))["type"] != "snapshot":
            pass
        for i, (extra, _, code) in enumerate(cases):
            await ws.send_json({"type": "hold", **extra, "requestId": f"r{i}"})
            while True:
                reply = await ws.receive_json(timeout=10)
                if reply.get("requestId") == f"r{i}":
                    break
            assert reply["type"] in ("error", "hold.rejected"), (extra, reply)  # a conflict is a rejection
            assert reply["code"] == code, (extra, reply)
    assert await table_counts(pg) == before


@pytest.mark.parametrize("quantity", [1, 10])
async def test_best_available_at_the_bounds_holds(client: TestClient, quantity: int) -> None:
    session = await make_session(client, rows=2, per_row=8)
    user = await make_user(client)
    resp = await client.post("/reservations", json={"sessionId": session["id"], "quantity": quantity},
                             headers=bearer(user["token"]))
    assert resp.status == 201, await resp.text()
    assert len((await resp.json())["seats"]) == quantity


async def test_best_available_on_a_show_long_over_is_session_started_not_a_gate_fault(
        client: TestClient, pg: Any) -> None:
    session = await make_session(client)
    user = await make_user(client)
    # the show ended hours ago (past the sold keys' grace): the gate cannot keep its layout
    await pg.execute("UPDATE sessions SET start_show_time = now() - interval '5 hours',"
                     " end_show_time = now() - interval '3 hours' WHERE id = $1", session["id"])
    before = await table_counts(pg)
    resp = await client.post("/reservations", json={"sessionId": session["id"], "quantity": 2},
                             headers=bearer(user["token"]))
    body = await resp.json()
    assert (resp.status, body["code"]) == (422, "session_started"), body
    assert await table_counts(pg) == before
