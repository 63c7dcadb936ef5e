"""The catalog REST API: users and tokens, rooms, sessions, seat maps, auth, and a table of bad input."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from core.settings import Settings
from server.app import create_app
from tests.conftest import ADMIN, bearer, make_room, make_session, make_user, seat_ids, table_counts


def future(hours: float = 24) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def session_body(room_id: str, **changes: Any) -> dict[str, Any]:
    body = {"movieTitle": "Dune", "startShowTime": future(24), "endShowTime": future(27), "roomId": room_id,
            "ticketPrice": 12.5}
    body.update(changes)
    return body


async def error_of(resp: Any, status: int) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == status, text
    body: dict[str, Any] = await resp.json()
    assert {"statusCode", "error", "code", "message", "details"} <= set(body)
    assert body["statusCode"] == status
    return body


# ------------------------------------------------------------------ users

async def test_create_user_returns_a_token_stored_only_hashed(client: TestClient, pg: asyncpg.Connection) -> None:
    email = f"ana.{uuid.uuid4().hex[:8]}@example.com"
    resp = await client.post("/users", json={"name": "Ana Souza", "email": email})

    assert resp.status == 201
    user = await resp.json()
    assert set(user) == {"id", "name", "email", "token", "createdAt"}
    assert user["name"] == "Ana Souza" and user["email"] == email
    uuid.UUID(user["id"])
    datetime.fromisoformat(user["createdAt"])
    token = user["token"]
    assert len(token) >= 32

    row = await pg.fetchrow("SELECT * FROM users WHERE id = $1", uuid.UUID(user["id"]))
    assert bytes(row["token_hash"]) == hashlib.sha256(token.encode()).digest()
    # the token itself is nowhere in the row, in any column, in any encoding we would have used
    as_text = await pg.fetchval("SELECT row_to_json(u)::text FROM users u WHERE id = $1", uuid.UUID(user["id"]))
    assert token not in as_text
    assert token.encode() not in bytes(row["token_hash"])
    # ...and it works as a bearer token
    assert (await client.get(f"/users/{user['id']}", headers=bearer(token))).status == 200


async def test_get_user_owner_or_admin_only(client: TestClient) -> None:
    ana, bruno = await make_user(client, "Ana"), await make_user(client, "Bruno")

    own = await client.get(f"/users/{ana['id']}", headers=bearer(ana["token"]))
    assert own.status == 200
    body = await own.json()
    assert body == {"id": ana["id"], "name": "Ana", "email": ana["email"], "createdAt": ana["createdAt"]}
    assert "token" not in body

    assert (await client.get(f"/users/{ana['id']}", headers=ADMIN)).status == 200
    other = await error_of(await client.get(f"/users/{ana['id']}", headers=bearer(bruno["token"])), 403)
    assert other["code"] == "not_owner"
    anonymous = await error_of(await client.get(f"/users/{ana['id']}"), 401)
    assert anonymous["code"] == "unauthorized"
    forged = await error_of(await client.get(f"/users/{ana['id']}", headers=bearer("not-a-token")), 401)
    assert forged["code"] == "invalid_token"
    missing = await error_of(await client.get(f"/users/{uuid.uuid4()}", headers=ADMIN), 404)
    assert missing["code"] == "user_not_found"


# ------------------------------------------------------------------ rooms

async def test_room_by_rows_and_seats_per_row(client: TestClient, pg: asyncpg.Connection) -> None:
    resp = await client.post("/rooms", json={"name": "Sala 2", "rows": 3, "seatsPerRow": 5}, headers=ADMIN)

    assert resp.status == 201
    room = await resp.json()
    assert room["name"] == "Sala 2" and room["capacity"] == 15
    assert [(s["rowLabel"], s["seatNumber"]) for s in room["seats"]] == \
        [(row, n) for row in "ABC" for n in range(1, 6)]
    assert len({s["id"] for s in room["seats"]}) == 15
    assert await pg.fetchval("SELECT count(*) FROM seats WHERE room_id = $1", uuid.UUID(room["id"])) == 15

    fetched = await (await client.get(f"/rooms/{room['id']}")).json()
    assert fetched == room


async def test_room_by_capacity_fills_rows_of_sixteen(client: TestClient) -> None:
    resp = await client.post("/rooms", json={"name": "Sala 3", "capacity": 40}, headers=ADMIN)

    assert resp.status == 201
    room = await resp.json()
    assert room["capacity"] == 40 and len(room["seats"]) == 40
    labels = [s["rowLabel"] for s in room["seats"]]
    assert labels == ["A"] * 16 + ["B"] * 16 + ["C"] * 8
    assert [s["seatNumber"] for s in room["seats"]][14:18] == [15, 16, 1, 2]


async def test_row_labels_past_z(client: TestClient) -> None:
    room = await make_room(client, rows=28, per_row=1)
    assert [s["rowLabel"] for s in room["seats"]][24:] == ["Y", "Z", "AA", "AB"]


async def test_list_rooms_pages(client: TestClient) -> None:
    created = [await make_room(client) for _ in range(3)]
    resp = await client.get("/rooms", params={"limit": "500"})
    assert resp.status == 200
    listed = await resp.json()
    ids = [r["id"] for r in listed]
    assert all(r["id"] in ids for r in created)
    assert all("seats" not in r and {"id", "name", "capacity"} <= set(r) for r in listed)
    first_two = await (await client.get("/rooms", params={"limit": "2"})).json()
    next_one = await (await client.get("/rooms", params={"limit": "1", "offset": "2"})).json()
    assert [r["id"] for r in first_two + next_one] == ids[:3]


# ------------------------------------------------------------------ sessions

async def test_create_session_creates_its_seats_in_the_same_transaction(
        client: TestClient, pg: asyncpg.Connection) -> None:
    room = await make_room(client, rows=4, per_row=5)
    body = session_body(room["id"], ticketPrice="18.90")

    resp = await client.post("/sessions", json=body, headers=ADMIN)

    assert resp.status == 201
    session = await resp.json()
    assert set(session) == {"id", "movieTitle", "startShowTime", "endShowTime", "roomId", "ticketPrice"}
    assert session["roomId"] == room["id"] and session["ticketPrice"] == 18.9 and session["movieTitle"] == "Dune"
    assert datetime.fromisoformat(session["startShowTime"]) == datetime.fromisoformat(body["startShowTime"])
    sid = uuid.UUID(session["id"])
    # one transaction wrote the session and all its seats: they carry the same creating transaction id
    session_xmin = await pg.fetchval("SELECT xmin::text FROM sessions WHERE id = $1", sid)
    seat_xmins = await pg.fetch("SELECT DISTINCT xmin::text AS x FROM session_seats WHERE session_id = $1", sid)
    assert [r["x"] for r in seat_xmins] == [session_xmin]
    assert await pg.fetchval("SELECT count(*) FROM session_seats WHERE session_id = $1", sid) == 20
    assert (await (await client.get(f"/sessions/{session['id']}")).json()) == session
    listed = await (await client.get("/sessions", params={"limit": "500"})).json()
    assert session["id"] in [s["id"] for s in listed]


async def test_session_needs_a_room_of_sixteen_seats(client: TestClient, pg: asyncpg.Connection) -> None:
    small = await make_room(client, rows=3, per_row=5)  # 15 seats
    before = await table_counts(pg)

    body = await error_of(await client.post("/sessions", json=session_body(small["id"]), headers=ADMIN), 422)

    assert body["code"] == "room_too_small"
    assert body["details"] == {"capacity": 15, "minimum": 16}
    assert await table_counts(pg) == before
    sixteen = await client.post("/rooms", json={"name": "Just enough", "capacity": 16}, headers=ADMIN)
    created = await client.post("/sessions", json=session_body((await sixteen.json())["id"]), headers=ADMIN)
    assert created.status == 201


async def test_session_in_an_unknown_room_is_404(client: TestClient, pg: asyncpg.Connection) -> None:
    before = await table_counts(pg)
    body = await error_of(await client.post("/sessions", json=session_body(str(uuid.uuid4())), headers=ADMIN), 404)
    assert body["code"] == "room_not_found"
    assert await table_counts(pg) == before


async def test_unknown_session_and_room_are_404(client: TestClient) -> None:
    assert (await error_of(await client.get(f"/sessions/{uuid.uuid4()}"), 404))["code"] == "session_not_found"
    assert (await error_of(await client.get(f"/sessions/{uuid.uuid4()}/seats"), 404))["code"] == "session_not_found"
    assert (await error_of(await client.get(f"/rooms/{uuid.uuid4()}"), 404))["code"] == "room_not_found"


# ------------------------------------------------------------------ seat maps

async def test_seat_map_and_status_filter(client: TestClient) -> None:
    session = await make_session(client, rows=2, per_row=8)
    resp = await client.get(f"/sessions/{session['id']}/seats")
    assert resp.status == 200
    seat_map = await resp.json()
    assert set(seat_map) == {"session", "room", "seats"}
    assert seat_map["session"] == session
    room = seat_map["room"]
    assert room["id"] == session["roomId"] and room["capacity"] == 16 and room["name"].startswith("Room ")
    seats = seat_map["seats"]
    assert len(seats) == 16
    assert all(s["status"] == "AVAILABLE" and s["version"] >= 1 for s in seats)
    assert [(s["seat"]["rowLabel"], s["seat"]["seatNumber"]) for s in seats] == \
        [(row, n) for row in "AB" for n in range(1, 9)]
    assert all(set(s) == {"id", "status", "version", "seat"} and set(s["seat"]) == {"id", "rowLabel", "seatNumber"}
               for s in seats)

    # sell two seats and hold one, through the real booking path
    buyer = await make_user(client)
    ids = [s["id"] for s in seats]
    held = await client.post("/reservations", json={"sessionId": session["id"], "sessionSeatIds": ids[:2]},
                             headers=bearer(buyer["token"]))
    assert held.status == 201, await held.text()
    sold = await client.post(f"/reservations/{(await held.json())['id']}/confirm", headers=bearer(buyer["token"]))
    assert sold.status == 201, await sold.text()
    pending = await client.post("/reservations", json={"sessionId": session["id"], "sessionSeatIds": ids[2:3]},
                                headers=bearer(buyer["token"]))
    assert pending.status == 201, await pending.text()

    async def with_status(status: str) -> list[str]:
        resp = await client.get(f"/sessions/{session['id']}/seats", params={"status": status})
        assert resp.status == 200
        found = (await resp.json())["seats"]
        assert all(s["status"] == status for s in found)
        return [s["id"] for s in found]

    assert await with_status("SOLD") == ids[:2]
    assert await with_status("RESERVED") == ids[2:3]
    assert await with_status("AVAILABLE") == ids[3:]
    # leave no pending hold behind for the expiry sweeper
    cancel = await client.delete(f"/reservations/{(await pending.json())['id']}", headers=bearer(buyer["token"]))
    assert cancel.status == 204


# ------------------------------------------------------------------ auth

@pytest.mark.parametrize("route", ["/rooms", "/sessions"])
async def test_admin_routes(client: TestClient, pg: asyncpg.Connection, route: str) -> None:
    room = await make_room(client)
    body = {"name": "R", "capacity": 20} if route == "/rooms" else session_body(room["id"])
    user = await make_user(client)
    before = await table_counts(pg)

    assert (await error_of(await client.post(route, json=body), 401))["code"] == "unauthorized"
    assert (await error_of(await client.post(route, json=body, headers=bearer("forged")), 401))["code"] == \
        "invalid_token"
    assert (await error_of(await client.post(route, json=body, headers=bearer(user["token"])), 403))["code"] == \
        "admin_required"
    assert (await error_of(await client.post(route, json=body, headers={"Authorization": "Basic eDp5"}), 401))[
        "code"] == "unauthorized"
    assert await table_counts(pg) == before
    assert (await client.post(route, json=body, headers=ADMIN)).status == 201


async def test_auth_required_false_needs_no_token(aiohttp_client: Any, base_settings: Settings) -> None:
    client: TestClient = await aiohttp_client(create_app(replace(base_settings, auth_required=False)))

    room = await client.post("/rooms", json={"name": "Open room", "rows": 2, "seatsPerRow": 8})
    assert room.status == 201, await room.text()
    session = await client.post("/sessions", json=session_body((await room.json())["id"]))
    assert session.status == 201, await session.text()
    user = await make_user(client)
    assert (await client.get(f"/users/{user['id']}")).status == 200
    # userId in the body is trusted in this mode
    seats = await seat_ids(client, (await session.json())["id"])
    hold = await client.post("/reservations", json={"userId": user["id"], "sessionId": (await session.json())["id"],
                                                    "sessionSeatIds": seats[:1]})
    assert hold.status == 201, await hold.text()
    assert (await hold.json())["userId"] == user["id"]
    assert (await client.delete(f"/reservations/{(await hold.json())['id']}")).status == 204


# ------------------------------------------------------------------ the bad input table

LONG = "x" * 201
NOW = datetime.now(UTC)


def case(name: str, method: str, path: str, status: int, code: str, *, body: Any = None, raw: bytes | None = None,
         fields: set[str] | None = None, admin: bool = True) -> Any:
    return pytest.param(method, path, body, raw, status, code, fields, admin, id=name)


# {room} is a room of 20 seats, {small} one of 15, {session} a session in {room}, {email} a taken email.
BAD_INPUT = [
    # malformed JSON
    case("users-malformed-json", "POST", "/users", 400, "malformed_json", raw=b'{"name": "Ana",'),
    case("rooms-malformed-json", "POST", "/rooms", 400, "malformed_json", raw=b"{name: 'x'}"),
    case("sessions-malformed-json", "POST", "/sessions", 400, "malformed_json", raw=b'{"movieTitle": "Dune"}}'),
    case("json-not-an-object", "POST", "/users", 400, "validation_error", body=["Ana", "a@b.co"]),
    case("empty-body", "POST", "/users", 400, "validation_error", raw=b"", fields={"name", "email"}),
    case("json-null", "POST", "/rooms", 400, "validation_error", raw=b"null"),
    # wrong types
    case("name-is-a-number", "POST", "/users", 400, "validation_error", body={"name": 42, "email": "a@b.co"},
         fields={"name"}),
    case("rows-is-a-string", "POST", "/rooms", 400, "validation_error",
         body={"name": "R", "rows": "10", "seatsPerRow": 10}, fields={"rows"}),
    case("capacity-is-a-float", "POST", "/rooms", 400, "validation_error", body={"name": "R", "capacity": 20.5},
         fields={"capacity"}),
    case("capacity-is-a-bool", "POST", "/rooms", 400, "validation_error", body={"name": "R", "capacity": True},
         fields={"capacity"}),
    case("price-is-not-a-number", "POST", "/sessions", 400, "validation_error",
         body={"ticketPrice": "free"}, fields={"ticketPrice"}),
    case("price-is-negative", "POST", "/sessions", 400, "validation_error", body={"ticketPrice": -1},
         fields={"ticketPrice"}),
    case("time-is-not-a-time", "POST", "/sessions", 400, "validation_error", body={"startShowTime": "tomorrow"},
         fields={"startShowTime"}),
    case("time-without-timezone", "POST", "/sessions", 400, "validation_error",
         body={"startShowTime": "2031-01-01T20:00:00"}, fields={"startShowTime"}),
    case("email-is-not-an-email", "POST", "/users", 400, "validation_error",
         body={"name": "Ana", "email": "not-an-email"}, fields={"email"}),
    # unknown fields
    case("users-unknown-field", "POST", "/users", 400, "validation_error",
         body={"name": "Ana", "email": "a@b.co", "isAdmin": True}, fields={"isAdmin"}),
    case("rooms-unknown-field", "POST", "/rooms", 400, "validation_error",
         body={"name": "R", "capacity": 20, "vip": 1}, fields={"vip"}),
    case("sessions-unknown-field", "POST", "/sessions", 400, "validation_error", body={"id": str(uuid.uuid4())},
         fields={"id"}),
    # missing fields
    case("users-missing-email", "POST", "/users", 400, "validation_error", body={"name": "Ana"}, fields={"email"}),
    case("rooms-missing-name", "POST", "/rooms", 400, "validation_error", body={"capacity": 20}, fields={"name"}),
    case("rooms-no-shape", "POST", "/rooms", 400, "validation_error", body={"name": "R"}),
    case("rooms-rows-without-seats", "POST", "/rooms", 400, "validation_error", body={"name": "R", "rows": 4}),
    case("rooms-both-shapes", "POST", "/rooms", 400, "validation_error",
         body={"name": "R", "rows": 4, "seatsPerRow": 5, "capacity": 20}),
    case("sessions-missing-room", "POST", "/sessions", 400, "validation_error", body={"roomId": None},
         fields={"roomId"}),
    # non-UUID ids
    case("user-id-not-uuid", "GET", "/users/42", 400, "validation_error", fields={"id"}),
    case("room-id-not-uuid", "GET", "/rooms/sala-1", 400, "validation_error", fields={"id"}),
    case("session-id-not-uuid", "GET", "/sessions/1", 400, "validation_error", fields={"id"}),
    case("seat-map-id-not-uuid", "GET", "/sessions/abc/seats", 400, "validation_error", fields={"id"}),
    case("room-id-in-body-not-uuid", "POST", "/sessions", 400, "validation_error", body={"roomId": "room-1"},
         fields={"roomId"}),
    # strings over bounds, blank or unstorable
    case("user-name-too-long", "POST", "/users", 400, "validation_error", body={"name": LONG, "email": "a@b.co"},
         fields={"name"}),
    case("email-too-long", "POST", "/users", 400, "validation_error",
         body={"name": "Ana", "email": "a" * 250 + "@b.co"}, fields={"email"}),
    case("room-name-too-long", "POST", "/rooms", 400, "validation_error", body={"name": LONG, "capacity": 20},
         fields={"name"}),
    case("movie-title-too-long", "POST", "/sessions", 400, "validation_error", body={"movieTitle": LONG},
         fields={"movieTitle"}),
    case("user-name-empty", "POST", "/users", 400, "validation_error", body={"name": "", "email": "a@b.co"},
         fields={"name"}),
    case("user-name-blank", "POST", "/users", 400, "validation_error", body={"name": "   ", "email": "a@b.co"},
         fields={"name"}),
    case("user-name-with-nul", "POST", "/users", 400, "validation_error", body={"name": "A\u0000na", "email": "a@b.co"},
         fields={"name"}),
    case("room-name-lone-surrogate", "POST", "/rooms", 400, "validation_error",
         raw=b'{"name": "\\ud800", "capacity": 20}', fields={"name"}),
    # bodies over 64 KiB
    case("users-body-over-64k", "POST", "/users", 413, "payload_too_large",
         body={"name": "x" * (64 * 1024), "email": "a@b.co"}),
    case("rooms-body-over-64k", "POST", "/rooms", 413, "payload_too_large", raw=b" " * (64 * 1024 + 1)),
    # rooms of 0 and of 10,000,000 seats
    case("room-of-zero-seats", "POST", "/rooms", 400, "validation_error", body={"name": "R", "capacity": 0},
         fields={"capacity"}),
    case("room-of-zero-rows", "POST", "/rooms", 400, "validation_error",
         body={"name": "R", "rows": 0, "seatsPerRow": 16}, fields={"rows"}),
    case("room-of-ten-million-seats", "POST", "/rooms", 400, "validation_error",
         body={"name": "R", "capacity": 10_000_000}, fields={"capacity"}),
    case("room-of-ten-million-by-grid", "POST", "/rooms", 400, "validation_error",
         body={"name": "R", "rows": 10_000, "seatsPerRow": 1_000}, fields={"rows", "seatsPerRow"}),
    case("room-grid-over-5000-seats", "POST", "/rooms", 400, "validation_error",
         body={"name": "R", "rows": 100, "seatsPerRow": 51}, fields={"_schema"}),
    case("room-of-negative-seats", "POST", "/rooms", 400, "validation_error", body={"name": "R", "capacity": -16},
         fields={"capacity"}),
    # an email taken twice (in any case)
    case("email-taken", "POST", "/users", 409, "email_taken", body={"name": "Ana", "email": "{email}"}),
    case("email-taken-other-case", "POST", "/users", 409, "email_taken", body={"name": "Ana", "email": "{EMAIL}"}),
    # show times in the wrong order
    case("end-before-start", "POST", "/sessions", 422, "invalid_show_times",
         body={"startShowTime": (NOW + timedelta(days=2)).isoformat(),
               "endShowTime": (NOW + timedelta(days=1)).isoformat()}),
    case("end-equals-start", "POST", "/sessions", 422, "invalid_show_times",
         body={"startShowTime": (NOW + timedelta(days=2)).isoformat(),
               "endShowTime": (NOW + timedelta(days=2)).isoformat()}),
    # rules of rooms and sessions
    case("room-too-small", "POST", "/sessions", 422, "room_too_small", body={"roomId": "{small}"}),
    case("room-not-found", "POST", "/sessions", 404, "room_not_found", body={"roomId": str(uuid.uuid4())}),
    # bad ?status
    case("status-unknown", "GET", "/sessions/{session}/seats?status=FREE", 400, "validation_error",
         fields={"status"}),
    case("status-lowercase", "GET", "/sessions/{session}/seats?status=available", 400, "validation_error",
         fields={"status"}),
    case("status-empty", "GET", "/sessions/{session}/seats?status=", 400, "validation_error", fields={"status"}),
    # bad limit/offset
    case("limit-zero", "GET", "/rooms?limit=0", 400, "validation_error", fields={"limit"}),
    case("limit-too-big", "GET", "/sessions?limit=501", 400, "validation_error", fields={"limit"}),
    case("limit-not-a-number", "GET", "/rooms?limit=ten", 400, "validation_error", fields={"limit"}),
    case("offset-negative", "GET", "/sessions?offset=-1", 400, "validation_error", fields={"offset"}),
    case("offset-not-a-number", "GET", "/rooms?offset=1e3", 400, "validation_error", fields={"offset"}),
]


@pytest.mark.parametrize(("method", "path", "body", "raw", "status", "code", "fields", "admin"), BAD_INPUT)
async def test_bad_input(client: TestClient, pg: asyncpg.Connection, method: str, path: str, body: Any,
                         raw: bytes | None, status: int, code: str, fields: set[str] | None, admin: bool) -> None:
    room = await make_room(client, rows=2, per_row=10)
    small = await make_room(client, rows=3, per_row=5)
    session = await client.post("/sessions", json=session_body(room["id"]), headers=ADMIN)
    taken = await make_user(client)
    names = {"room": room["id"], "small": small["id"], "session": (await session.json())["id"],
             "email": taken["email"], "EMAIL": taken["email"].upper()}
    if path == "/sessions" and isinstance(body, dict):
        body = {**session_body(room["id"]), **body}  # a valid session but for the field under test
        body = {k: v for k, v in body.items() if v is not None}
    if isinstance(body, dict):
        body = {k: v.format(**names) if isinstance(v, str) and "{" in v else v for k, v in body.items()}
    path = path.format(**names)
    before = await table_counts(pg)

    kwargs: dict[str, Any] = {"headers": ADMIN if admin else {}}
    if raw is not None:
        kwargs["data"] = raw
    elif body is not None:
        kwargs["json"] = body
    resp = await client.request(method, path, **kwargs)

    error = await error_of(resp, status)
    assert error["code"] == code, error
    if fields is not None:
        assert set(error["details"]["fields"]) == fields, error
    assert "Traceback" not in await resp.text()
    assert resp.headers["X-Node-Id"] == "test-node"
    assert await table_counts(pg) == before  # the database is unchanged
