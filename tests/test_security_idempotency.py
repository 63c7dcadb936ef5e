"""Hold idempotency keys as Stripe's: the same key with the same body returns the same reservation; the same
key with a different body is 422 `idempotency_key_reused`, whatever became of the first reservation."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from core.settings import Settings
from server.app import create_app
from tests.conftest import bearer, make_session, make_user, seat_ids, table_counts, with_settings
from tests.sockets.support import watch


async def hold(client: TestClient, token: str, session_id: str, seats: list[str], key: str) -> tuple[int, Any]:
    resp = await client.post("/reservations", json={"sessionId": session_id, "sessionSeatIds": seats},
                             headers={**bearer(token), "x-idempotency-key": key})
    return resp.status, await resp.json()


@pytest.mark.parametrize("then", ["pending", "cancelled", "expired"])
async def test_the_same_key_with_other_seats_is_refused_whatever_became_of_the_first_hold(
        client: TestClient, pg: asyncpg.Connection, then: str) -> None:
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    user = await make_user(client)
    status, first = await hold(client, user["token"], session["id"], seats[:2], "order-1")
    assert status == 201, first
    if then == "cancelled":
        resp = await client.delete(f"/reservations/{first['id']}", headers=bearer(user["token"]))
        assert resp.status == 204
    elif then == "expired":
        await pg.execute("UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = $1::uuid",
                         first["id"])
        await pg.fetch("SELECT * FROM bx_expire_due(100)")
    before = await table_counts(pg)

    status, body = await hold(client, user["token"], session["id"], seats[2:4], "order-1")
    assert (status, body["code"]) == (422, "idempotency_key_reused"), body
    status, body = await hold(client, user["token"], session["id"], seats[:3], "order-1")  # a superset
    assert (status, body["code"]) == (422, "idempotency_key_reused"), body
    assert await table_counts(pg) == before

    # the same body (in any seat order) returns the same reservation
    status, again = await hold(client, user["token"], session["id"], [seats[1], seats[0]], "order-1")
    assert (status, again["id"]) == (201, first["id"]), again
    assert await table_counts(pg) == before


async def test_the_same_key_with_other_seats_is_refused_on_the_socket_too(client: TestClient,
                                                                          pg: asyncpg.Connection) -> None:
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    user = await make_user(client)
    watcher = await watch(client, session["id"], token=user["token"])
    replies = ("hold.ok", "hold.rejected", "error")
    first = await watcher.request({"type": "hold", "sessionSeatIds": seats[:2], "idempotencyKey": "k"}, replies)
    assert first["type"] == "hold.ok", first
    before = await table_counts(pg)
    other = await watcher.request({"type": "hold", "sessionSeatIds": seats[4:6], "idempotencyKey": "k"}, replies)
    assert (other["type"], other["code"]) == ("error", "idempotency_key_reused"), other
    same = await watcher.request({"type": "hold", "sessionSeatIds": seats[:2], "idempotencyKey": "k"}, replies)
    assert (same["type"], same["reservation"]["id"]) == ("hold.ok", first["reservation"]["id"])
    # REST and socket share one record of the key
    status, body = await hold(client, user["token"], session["id"], seats[6:8], "k")
    assert (status, body["code"]) == (422, "idempotency_key_reused")
    assert await table_counts(pg) == before


async def test_a_retry_near_the_address_seat_cap_replays_its_hold_instead_of_counting_it_again(
        aiohttp_client: Any, base_settings: Settings, pg: asyncpg.Connection) -> None:
    """A hold retried with its key (REST or socket) answers its own reservation, even with its address at the seat
    cap: the retry holds nothing new, so it is not counted against the address a second time."""
    client = await aiohttp_client(create_app(with_settings(base_settings, max_seats_per_address=3)))
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    user = await make_user(client)
    address = {"X-Forwarded-For": f"203.0.113.{uuid.uuid4().int % 250 + 1}"}
    headers = {**bearer(user["token"]), **address, "x-idempotency-key": "near-the-cap"}
    body = {"sessionId": session["id"], "sessionSeatIds": seats[:2]}
    first = await client.post("/reservations", json=body, headers=headers)
    assert first.status == 201, await first.text()
    rid = (await first.json())["id"]
    before = await table_counts(pg)

    again = await client.post("/reservations", json=body, headers=headers)
    assert (again.status, (await again.json()).get("id")) == (201, rid), await again.text()
    watcher = await watch(client, session["id"], user["token"], headers=address)
    replayed = await watcher.request({"type": "hold", "sessionSeatIds": seats[:2], "idempotencyKey": "near-the-cap"},
                                     ("hold.ok", "error"))
    assert replayed["type"] == "hold.ok" and replayed["reservation"]["id"] == rid, replayed
    assert await table_counts(pg) == before

    # the address still counts the first hold once: one more seat fits the cap of 3, a fourth does not
    more = {**bearer(user["token"]), **address}
    fits = await client.post("/reservations", json={**body, "sessionSeatIds": seats[2:3]}, headers=more)
    assert fits.status == 201, await fits.text()
    over = await client.post("/reservations", json={**body, "sessionSeatIds": seats[3:4]}, headers=more)
    assert (over.status, (await over.json())["code"]) == (429, "address_quota_exceeded")


async def test_one_key_raced_over_two_confirms_buys_one_and_refuses_the_other(client: TestClient,
                                                                               pg: asyncpg.Connection) -> None:
    """Two confirms of two holds sent at once with one Idempotency-Key: neither finds the key when it looks, both
    write it, and the second write collides. That one answers 422 `idempotency_key_reused` (the key went to another
    request), never a 500, and its hold is left as it was."""
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    user = await make_user(client)
    for round_ in range(4):  # each round is one race; the collision needs both to look before either commits
        holds = []
        for pair in (seats[4 * round_:4 * round_ + 2], seats[4 * round_ + 2:4 * round_ + 4]):
            status, body = await hold(client, user["token"], session["id"], pair, f"hold-{uuid.uuid4()}")
            assert status == 201, body
            holds.append(body["id"])
        key = {**bearer(user["token"]), "Idempotency-Key": f"pay-{round_}"}
        answers = await asyncio.gather(*(client.post(f"/reservations/{rid}/confirm", headers=key) for rid in holds))
        outcome = sorted([(r.status, (await r.json()).get("code")) for r in answers], key=lambda a: a[0])
        assert outcome == [(201, None), (422, "idempotency_key_reused")], outcome
        paid = next(rid for rid, r in zip(holds, answers, strict=True) if r.status == 201)
        refused = next(rid for rid in holds if rid != paid)
        assert await pg.fetchval("SELECT status FROM reservations WHERE id = $1::uuid", refused) == "PENDING"
        assert await pg.fetchval("SELECT count(*) FROM sales WHERE reservation_id = $1::uuid", refused) == 0
        # a retry of the paid confirm with the key answers its sale
        again = await client.post(f"/reservations/{paid}/confirm", headers=key)
        assert again.status == 201, await again.text()
