"""Booking over REST, refused: another user's reservation, auth off, bad input, the per-user quota and a Redis
stall; each refusal changes nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import (
    ADMIN,
    assert_invariants,
    bearer,
    make_session,
    make_user,
    seat_ids,
    table_counts,
    with_settings,
)
from tests.test_booking import hold


async def test_other_users_cannot_touch_a_reservation(client: TestClient, pg: Any) -> None:
    """BOLA: user B can read, confirm, cancel or list nothing of user A's."""
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    ana, bob = await make_user(client), await make_user(client, "Bob")
    pending = await (await hold(client, ana, session["id"], seats[:1])).json()
    bought = await (await hold(client, ana, session["id"], seats[1:2])).json()
    sale = await (await client.post(f"/reservations/{bought['id']}/confirm", headers=bearer(ana["token"]))).json()
    before = await table_counts(pg)
    as_bob = bearer(bob["token"])

    attempts = [
        ("GET", f"/reservations/{pending['id']}"),
        ("POST", f"/reservations/{pending['id']}/confirm"),
        ("DELETE", f"/reservations/{pending['id']}"),
        ("GET", f"/sales/{sale['id']}"),
        ("GET", f"/sales/user/{ana['id']}"),
        ("GET", f"/users/{ana['id']}/purchases"),
        ("GET", f"/users/{ana['id']}"),
    ]
    for method, path in attempts:
        resp = await client.request(method, path, headers=as_bob)
        assert resp.status == 403, (method, path, resp.status)
        assert (await resp.json())["code"] in ("not_owner", "forbidden"), (method, path)
        resp = await client.request(method, path)
        assert resp.status == 401, (method, path, resp.status)
    # holding in A's name with B's token
    resp = await client.post("/reservations", json={"userId": ana["id"], "sessionId": session["id"],
                                                     "sessionSeatIds": [seats[3]]}, headers=as_bob)
    assert resp.status == 403 and (await resp.json())["code"] == "not_owner"

    assert await table_counts(pg) == before
    resp = await client.get(f"/reservations/{pending['id']}", headers=bearer(ana["token"]))
    assert (await resp.json())["status"] == "PENDING"
    # the admin may read it
    assert (await client.get(f"/reservations/{pending['id']}", headers=ADMIN)).status == 200


async def test_auth_off_trusts_user_id(aiohttp_client: Any, settings: Any) -> None:
    from server.app import create_app

    client = await aiohttp_client(create_app(with_settings(settings, auth_required=False)))
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    ana = await make_user(client)
    resp = await client.post("/reservations", json={"userId": ana["id"], "sessionId": session["id"],
                                                     "sessionSeatIds": seats[:1]})
    assert resp.status == 201 and (await resp.json())["userId"] == ana["id"]
    resp = await client.post("/reservations", json={"sessionId": session["id"], "sessionSeatIds": seats[1:2]})
    assert resp.status == 401 and (await resp.json())["code"] == "user_required"
    resp = await client.post("/reservations", json={"userId": str(uuid.uuid4()), "sessionId": session["id"],
                                                     "sessionSeatIds": seats[2:3]})
    assert resp.status == 404 and (await resp.json())["code"] == "user_not_found"


# ------------------------------------------------------------------ bad input table

def _case(name: str, status: int, code: str) -> Any:
    return pytest.param(name, status, code, id=name)


@pytest.mark.parametrize(("case", "status", "code"), [
    _case("no_seats", 400, "invalid_seat_count"),
    _case("eleven_seats", 400, "invalid_seat_count"),
    _case("duplicate_seats", 400, "duplicate_seats"),
    _case("seat_of_another_session", 422, "seats_not_in_session"),
    _case("unknown_seat", 422, "seats_not_in_session"),
    _case("unknown_session", 404, "session_not_found"),
    _case("session_started", 422, "session_started"),
    _case("non_uuid_seat", 400, "validation_error"),
    _case("seat_ids_not_a_list", 400, "validation_error"),
    _case("unknown_field", 400, "validation_error"),
    _case("missing_session", 400, "validation_error"),
    _case("malformed_json", 400, "malformed_json"),
    _case("no_token", 401, "unauthorized"),
    _case("bad_token", 401, "invalid_token"),
    _case("admin_token_holds", 403, "forbidden"),
    _case("idempotency_key_too_long", 400, "validation_error"),
    _case("taken_seat", 409, "seats_unavailable"),
])
async def test_bad_hold_changes_nothing(client: TestClient, pg: Any, case: str, status: int, code: str) -> None:
    session = await make_session(client)
    other = await make_session(client)
    past = await make_session(client, starts_in=-timedelta(minutes=5))
    seats = await seat_ids(client, session["id"])
    other_seats = await seat_ids(client, other["id"])
    ana, bob = await make_user(client), await make_user(client, "Bob")
    assert (await hold(client, bob, session["id"], seats[10:12])).status == 201
    headers = bearer(ana["token"])
    body: Any = {"sessionId": session["id"], "sessionSeatIds": seats[:2]}
    raw: str | None = None
    match case:
        case "no_seats": body["sessionSeatIds"] = []
        case "eleven_seats": body["sessionSeatIds"] = seats[:11]
        case "duplicate_seats": body["sessionSeatIds"] = [seats[0], seats[0]]
        case "seat_of_another_session": body["sessionSeatIds"] = [seats[0], other_seats[0]]
        case "unknown_seat": body["sessionSeatIds"] = [str(uuid.uuid4())]
        case "unknown_session": body["sessionId"] = str(uuid.uuid4())
        case "session_started":
            body = {"sessionId": past["id"], "sessionSeatIds": (await seat_ids(client, past["id"]))[:1]}
        case "non_uuid_seat": body["sessionSeatIds"] = ["seat-1"]
        case "seat_ids_not_a_list": body["sessionSeatIds"] = seats[0]
        case "unknown_field": body["price"] = 0
        case "missing_session": del body["sessionId"]
        case "malformed_json": raw = '{"sessionId": '
        case "no_token": headers = {}
        case "bad_token": headers = bearer("not-a-token")
        case "admin_token_holds": headers = ADMIN
        case "idempotency_key_too_long": headers = headers | {"x-idempotency-key": "k" * 300}
        case "taken_seat": body["sessionSeatIds"] = [seats[0], seats[11]]
    before = await table_counts(pg)
    if raw is not None:
        resp = await client.post("/reservations", data=raw, headers=headers | {"Content-Type": "application/json"})
    else:
        resp = await client.post("/reservations", json=body, headers=headers)
    payload = await resp.json()
    assert (resp.status, payload["code"]) == (status, code), payload
    assert payload["statusCode"] == status and payload["message"]
    if code == "seats_unavailable":
        assert payload["details"]["conflicts"] == [seats[11]]
    assert await table_counts(pg) == before
    # the gate let nothing stick: the requested seats are still free to hold
    if case not in ("taken_seat", "unknown_session", "session_started"):
        assert (await hold(client, ana, session["id"], seats[:2])).status == 201


@pytest.mark.parametrize(("case", "status", "code"), [
    _case("unknown_reservation", 404, "reservation_not_found"),
    _case("non_uuid_reservation", 400, "validation_error"),
    _case("confirm_cancelled", 409, "not_pending"),
    _case("confirm_confirmed_without_key", 409, "not_pending"),
    _case("cancel_confirmed", 409, "not_pending"),
])
async def test_bad_confirm_or_cancel_changes_nothing(client: TestClient, pg: Any, case: str, status: int,
                                                     code: str) -> None:
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    ana = await make_user(client)
    headers = bearer(ana["token"])
    cancelled = await (await hold(client, ana, session["id"], seats[:1])).json()
    assert (await client.delete(f"/reservations/{cancelled['id']}", headers=headers)).status == 204
    confirmed = await (await hold(client, ana, session["id"], seats[1:2])).json()
    assert (await client.post(f"/reservations/{confirmed['id']}/confirm", headers=headers)).status == 201
    target, method = {
        "unknown_reservation": (f"/reservations/{uuid.uuid4()}/confirm", "POST"),
        "non_uuid_reservation": ("/reservations/123/confirm", "POST"),
        "confirm_cancelled": (f"/reservations/{cancelled['id']}/confirm", "POST"),
        "confirm_confirmed_without_key": (f"/reservations/{confirmed['id']}/confirm", "POST"),
        "cancel_confirmed": (f"/reservations/{confirmed['id']}", "DELETE"),
    }[case]
    before = await table_counts(pg)
    resp = await client.request(method, target, headers=headers)
    payload = await resp.json()
    assert (resp.status, payload["code"]) == (status, code), payload
    assert await table_counts(pg) == before
    await assert_invariants(pg, [session["id"]])


async def test_hold_quota_per_user(aiohttp_client: Any, settings: Any, pg: Any) -> None:
    from server.app import create_app

    client = await aiohttp_client(create_app(with_settings(settings, max_seats_per_user=4)))
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    ana = await make_user(client)
    assert (await hold(client, ana, session["id"], seats[:3])).status == 201
    before = await table_counts(pg)
    resp = await hold(client, ana, session["id"], seats[3:5])
    assert resp.status == 429 and (await resp.json())["code"] == "hold_quota_exceeded"
    assert resp.headers["Retry-After"]
    assert await table_counts(pg) == before
    assert (await hold(client, ana, session["id"], seats[3:4])).status == 201


async def test_a_hold_redis_did_not_answer_in_time_leaves_its_seats_free(aiohttp_client: Any, settings: Any,
                                                                          stack: Any, pg: Any) -> None:
    """Redis stalls mid-hold: the buyer gets a fast 503, and once Redis answers again the seats are free for
    everyone at once, not blocked by the stalled hold's keys until they expire (HOLD_TTL_SECONDS=30)."""
    from server.app import create_app
    from tests.cluster_support import wait_until

    client = await aiohttp_client(create_app(with_settings(settings, redis_timeout=0.3)))
    session = await make_session(client)
    seats = (await seat_ids(client, session["id"]))[:2]
    ana, bob = await make_user(client, "Ana"), await make_user(client, "Bob")
    loop = asyncio.get_running_loop()
    stack["redis"].pause()
    try:
        started = loop.time()
        resp = await hold(client, ana, session["id"], seats)
        waited = loop.time() - started
    finally:
        stack["redis"].resume()
    assert resp.status == 503, await resp.text()
    assert (await resp.json())["code"] == "redis_unavailable" and resp.headers["Retry-After"] == "1"
    assert waited < 1.5, waited
    assert await pg.fetchval("SELECT count(*) FROM reservations WHERE session_id = $1",
                             uuid.UUID(session["id"])) == 0

    granted: list[Any] = []

    async def bob_holds() -> bool:
        resp = await hold(client, bob, session["id"], seats)
        assert resp.status in (201, 409), await resp.text()
        if resp.status == 201:
            granted.append(await resp.json())
        return resp.status == 201

    assert await wait_until(bob_holds, within=5, interval=0.2)
    assert {s["id"] for s in granted[0]["seats"]} == set(seats)
    await assert_invariants(pg, [session["id"]])
