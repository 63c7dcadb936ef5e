"""Best available when the gate's taken set and its seat keys drift apart: seat keys lost (evicted, deleted) while
the taken set keeps their entries, or the taken set lost while the seat keys live on. PostgreSQL stays the
arbiter: no two buyers share a seat, and nobody is refused while enough seats are free."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core.appkeys import BOOKING
from storage import best_hold
from storage.redis_keys import seat_key, taken_key
from tests.conftest import assert_invariants, bearer, make_session, make_user


async def best(client: TestClient, token: str, session_id: str, quantity: int) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/reservations", json={"sessionId": session_id, "quantity": quantity},
                             headers=bearer(token))
    return resp.status, await resp.json()


async def test_a_release_whose_seat_keys_were_lost_frees_the_seats_for_best_available(
        client: TestClient, pg: Any, redis_client: Any) -> None:
    session = await make_session(client, rows=2, per_row=8)
    first, second = await make_user(client, "First"), await make_user(client, "Second")
    status, held = await best(client, first["token"], session["id"], 4)
    assert status == 201, held
    for i in range(3):  # the other 12 seats are held by others
        status, body = await best(client, (await make_user(client, f"O{i}"))["token"], session["id"], 4)
        assert status == 201, body
    sid = uuid.UUID(session["id"])
    # Redis lost the hold's seat keys (evicted under maxmemory, deleted by hand); the taken set kept them
    await redis_client.delete(*(seat_key(sid, uuid.UUID(s["id"])) for s in held["seats"]))
    resp = await client.delete(f"/reservations/{held['id']}", headers=bearer(first["token"]))
    assert resp.status == 204
    status, body = await best(client, second["token"], session["id"], 4)  # the only four free
    assert status == 201, body
    assert sorted(s["id"] for s in body["seats"]) == sorted(s["id"] for s in held["seats"])
    await assert_invariants(pg, [session["id"]])


async def test_a_lost_taken_set_never_gives_a_held_seat_twice(client: TestClient, pg: Any,
                                                              redis_client: Any) -> None:
    session = await make_session(client, rows=2, per_row=10)
    buyers = [await make_user(client, f"B{i}") for i in range(8)]
    taken: set[str] = set()
    for buyer in buyers[:4]:  # 16 of 20 seats held
        status, body = await best(client, buyer["token"], session["id"], 4)
        assert status == 201, body
        taken |= {s["id"] for s in body["seats"]}
    await redis_client.delete(taken_key(uuid.UUID(session["id"])))  # the seat keys live on
    status, body = await best(client, buyers[4]["token"], session["id"], 4)
    assert status == 201, body  # the 4 seats left, though the gate first thinks every seat free
    got = {s["id"] for s in body["seats"]}
    assert not got & taken
    status, body = await best(client, buyers[5]["token"], session["id"], 1)
    assert status == 409 and body["code"] == "seats_unavailable", body
    await assert_invariants(pg, [session["id"]])


async def test_a_node_keeps_session_layouts_within_a_bound_of_seats(client: TestClient,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # every hold (named ones too, for the no-orphan rule) reads its session's layout once per node: a node that
    # sees holds on many big rooms must not keep them all (a 5,000-seat layout is about 1 MB)
    monkeypatch.setattr(best_hold, "LAYOUT_CACHE_SEATS", 40)
    best_seats = best_hold.best_seats_of(client.app[BOOKING])
    sessions = [await make_session(client, rows=2, per_row=8) for _ in range(5)]  # 16 seats each
    user = await make_user(client)
    for session in sessions * 2:  # the first one again, read anew after it was dropped
        status, body = await best(client, user["token"], session["id"], 1)
        assert status == 201, body
        kept = sum(len(row.seat_ids) for layout in best_seats._layouts.values() for row in layout.rows)
        assert 16 <= kept <= 40, kept  # the layout just used is kept, within the bound
