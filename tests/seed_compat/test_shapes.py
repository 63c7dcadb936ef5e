"""A client written for the StarSoft cinema API works against boxoffice unchanged (../shared/SEED_API.md).

Every route of that API is called with its request shapes (its example bodies and the stress script's
calls), and every field it lists is checked. The suite runs in the trusting mode (`AUTH_REQUIRED=false`,
the StarSoft API's own) and again with tokens, to show the same shapes.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from tests.seed_compat.support import (
    PURCHASE,
    RESERVATION_FULL,
    RESERVATION_LITE,
    ROOM,
    ROOM_LISTED,
    ROOM_WITH_SEATS,
    SALE_FULL,
    SEAT,
    SEAT_MAP,
    SESSION,
    SESSION_LISTED,
    SESSION_WITH_SEATS,
    USER,
    USER_WITH_RESERVATIONS,
    Caller,
    check,
    make_show,
)


def test_check_refuses_what_a_client_would_trip_on() -> None:
    """The checker itself: a missing field, a wrong type, a timestamp without milliseconds or Z all fail."""
    good = {"id": str(uuid.uuid4()), "email": "a@b.c", "name": "Ana", "createdAt": "2026-02-01T19:00:00.000Z",
            "updatedAt": "2026-02-01T19:00:00.000Z"}
    check(good, USER)
    for bad in ({**good, "updatedAt": "2026-02-01T19:00:00+00:00"}, {**good, "createdAt": "2026-02-01T19:00:00Z"},
                {k: v for k, v in good.items() if k != "updatedAt"}, {**good, "id": 7}):
        with pytest.raises(AssertionError):
            check(bad, USER)
    with pytest.raises(AssertionError):
        check({"seats": []}, {"seats": [SEAT]})


# ------------------------------------------------------------------ section 3, route by route

async def test_users_rooms_and_sessions_have_every_listed_field(caller: Caller) -> None:
    user = await caller.create_user("Maria Silva")
    check(user, USER)
    assert user["name"] == "Maria Silva" and "token" in user  # our own field stays

    users = await caller.call("GET", "/users", 200, admin=True)
    check(users, [USER])
    assert all("token" not in u for u in users)
    check(await caller.call("GET", f"/users/{user['id']}", 200, as_user=user["id"]), USER)

    room = await caller.call("POST", "/rooms", 201, body={"name": f"Sala {uuid.uuid4().hex[:8]}", "capacity": 20},
                             admin=True)
    check(room, ROOM)
    assert room["status"] == "ACTIVE" and room["capacity"] == 20
    rooms = await caller.call("GET", "/rooms?limit=500", 200)
    check(rooms, [ROOM_LISTED])
    assert next(r for r in rooms if r["id"] == room["id"])["_count"] == {"seats": 20}
    one_room = await caller.call("GET", f"/rooms/{room['id']}", 200)
    check(one_room, ROOM_WITH_SEATS)
    assert {s["roomId"] for s in one_room["seats"]} == {room["id"]}

    # the API's own example session: its times lie in the past now, which boxoffice refuses (a deliberate
    # difference: show times from a day ago to ten years ahead); the same body a year on is taken as it is
    refused = await caller.call("POST", "/sessions", 400, admin=True, body={
        "movieTitle": "Interstellar 2: The Return", "startShowTime": "2026-02-01T19:00:00.000Z",
        "endShowTime": "2026-02-01T22:00:00.000Z", "roomId": room["id"], "ticketPrice": 35.5})
    assert refused["code"] == "validation_error" and set(refused["details"]["fields"]) == {
        "startShowTime", "endShowTime"}
    next_year = datetime.now(UTC).year + 1
    example = await caller.call("POST", "/sessions", 201, admin=True, body={
        "movieTitle": "Interstellar 2: The Return", "startShowTime": f"{next_year}-02-01T19:00:00.000Z",
        "endShowTime": f"{next_year}-02-01T22:00:00.000Z", "roomId": room["id"], "ticketPrice": 35.5})
    check(example, SESSION)
    assert example["startShowTime"] == f"{next_year}-02-01T19:00:00.000Z" and example["ticketPrice"] == 35.5
    # an offset is normalised to UTC
    shifted = await caller.call("POST", "/sessions", 201, admin=True, body={
        "movieTitle": "Offset", "startShowTime": "2030-01-01T21:00:00.5-03:00",
        "endShowTime": "2030-01-02T01:00:00-03:00", "roomId": room["id"], "ticketPrice": "35.5"})
    assert (shifted["startShowTime"], shifted["endShowTime"]) == (
        "2030-01-02T00:00:00.500Z", "2030-01-02T04:00:00.000Z")

    sessions = await caller.call("GET", "/sessions?limit=500", 200)
    check(sessions, [SESSION_LISTED])
    listed = next(s for s in sessions if s["id"] == shifted["id"])
    assert listed["_count"] == {"sessionSeats": 20} and listed["room"]["id"] == room["id"]
    detail = await caller.call("GET", f"/sessions/{shifted['id']}", 200)
    check(detail, SESSION_WITH_SEATS)
    assert len(detail["sessionSeats"]) == 20 and detail["room"]["id"] == room["id"]
    seat_map = await caller.call("GET", f"/sessions/{shifted['id']}/seats", 200)
    check(seat_map, SEAT_MAP)
    assert "sessionSeats" not in seat_map["session"]
    assert {s["sessionId"] for s in seat_map["seats"]} == {shifted["id"]}
    available = await caller.call("GET", f"/sessions/{shifted['id']}/seats?status=AVAILABLE", 200)
    assert len(available["seats"]) == 20


async def test_reservations_and_sales_have_every_listed_field(caller: Caller) -> None:
    _, session = await make_show(caller, price=35)
    seat_map = await caller.call("GET", f"/sessions/{session['id']}/seats", 200)
    a1, a2, a3 = (s["id"] for s in seat_map["seats"][:3])
    user = await caller.create_user("Gladiator 1")
    key = str(uuid.uuid4())

    body = {"userId": user["id"], "sessionId": session["id"], "sessionSeatIds": [a1, a2]}
    reservation = await caller.call("POST", "/reservations", 201, as_user=user["id"],
                                    headers={"x-idempotency-key": key}, body=body)
    check(reservation, RESERVATION_LITE)
    assert reservation["status"] == "PENDING" and reservation["idempotencyKey"] == key
    assert reservation["seatLabels"] == ["A1", "A2"]
    assert [rs["sessionSeatId"] for rs in reservation["reservationSeats"]] == [a1, a2]
    assert {rs["sessionSeat"]["status"] for rs in reservation["reservationSeats"]} == {"RESERVED"}
    assert [s["id"] for s in reservation["seats"]] == [a1, a2]  # our own field stays
    replay = await caller.call("POST", "/reservations", 201, as_user=user["id"],
                               headers={"x-idempotency-key": key}, body=body)
    check(replay, RESERVATION_FULL)
    assert replay["id"] == reservation["id"]
    assert [rs["id"] for rs in replay["reservationSeats"]] == [rs["id"] for rs in reservation["reservationSeats"]]

    one = await caller.call("GET", f"/reservations/{reservation['id']}", 200, as_user=user["id"])
    check(one, RESERVATION_FULL)
    assert one["user"]["id"] == user["id"] and one["session"]["id"] == session["id"]
    mine = await caller.call("GET", "/reservations", 200, as_user=user["id"], admin=not caller.tokens)
    check(mine, [RESERVATION_FULL])
    assert reservation["id"] in {r["id"] for r in mine}

    sale = await caller.call("POST", f"/reservations/{reservation['id']}/confirm", 201, as_user=user["id"])
    check(sale, SALE_FULL)
    assert sale["totalAmount"] == 70 and sale["reservation"]["status"] == "CONFIRMED"
    assert {rs["sessionSeat"]["status"] for rs in sale["reservation"]["reservationSeats"]} == {"SOLD"}
    assert "seatLabels" not in sale["reservation"] or sale["reservation"]["seatLabels"] == ["A1", "A2"]
    check(await caller.call("GET", f"/sales/{sale['id']}", 200, as_user=user["id"]), SALE_FULL)
    by_user = await caller.call("GET", f"/sales/user/{user['id']}", 200, as_user=user["id"])
    check(by_user, [SALE_FULL])
    assert [s["id"] for s in by_user] == [sale["id"]]
    sales = await caller.call("GET", "/sales", 200, as_user=user["id"], admin=not caller.tokens)
    check(sales, [SALE_FULL])
    assert sale["id"] in {s["id"] for s in sales}
    purchases = await caller.call("GET", f"/users/{user['id']}/purchases", 200, as_user=user["id"])
    check(purchases, [PURCHASE])

    cancelled = await caller.call("POST", "/reservations", 201, as_user=user["id"],
                                  body={"userId": user["id"], "sessionId": session["id"], "sessionSeatIds": [a3]})
    assert cancelled["idempotencyKey"] is None
    assert await caller.call("DELETE", f"/reservations/{cancelled['id']}", 204, as_user=user["id"]) is None
    detail = await caller.call("GET", f"/users/{user['id']}", 200, as_user=user["id"])
    check(detail, USER_WITH_RESERVATIONS)
    assert {r["id"]: r["status"] for r in detail["reservations"]} == {
        reservation["id"]: "CONFIRMED", cancelled["id"]: "CANCELLED"}
    # unknown user: [] for its sales (no 404), as that API answers
    if not caller.tokens:
        assert await caller.call("GET", f"/sales/user/{uuid.uuid4()}", 200) == []


async def test_api_docs_json_is_the_swagger_document(caller: Caller) -> None:
    spec = await caller.call("GET", "/api-docs-json", 200)
    assert spec == await caller.call("GET", "/api-docs/swagger.json", 200)
    for path in ("/users", "/reservations", "/sales"):
        assert "get" in spec["paths"][path], path
    resp = await caller.client.get("/api-docs")
    assert resp.status == 200 and resp.headers["X-Worker-ID"] == "test-node"
