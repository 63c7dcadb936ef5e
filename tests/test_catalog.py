"""The catalog REST API: users and tokens, rooms, sessions, seat maps and auth."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from core.settings import Settings
from server.app import create_app
from tests.catalog_support import error_of, session_body
from tests.conftest import ADMIN, bearer, make_room, make_session, make_user, seat_ids, table_counts

# ------------------------------------------------------------------ users

async def test_create_user_returns_a_token_stored_only_hashed(client: TestClient, pg: asyncpg.Connection) -> None:
    email = f"ana.{uuid.uuid4().hex[:8]}@example.com"
    resp = await client.post("/users", json={"name": "Ana Souza", "email": email})

    assert resp.status == 201
    user = await resp.json()
    assert set(user) == {"id", "name", "email", "token", "createdAt", "updatedAt"}
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
    assert body == {"id": ana["id"], "name": "Ana", "email": ana["email"], "createdAt": ana["createdAt"],
                    "updatedAt": ana["createdAt"], "reservations": []}
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
    assert set(session) == {"id", "movieTitle", "startShowTime", "endShowTime", "roomId", "ticketPrice",
                            "createdAt", "updatedAt"}
    assert session["roomId"] == room["id"] and session["ticketPrice"] == 18.9 and session["movieTitle"] == "Dune"
    sent = datetime.fromisoformat(body["startShowTime"])
    assert session["startShowTime"].endswith("Z")  # UTC, to the millisecond
    assert datetime.fromisoformat(session["startShowTime"]) == sent.replace(microsecond=sent.microsecond // 1000 * 1000)
    sid = uuid.UUID(session["id"])
    # one transaction wrote the session and all its seats: they carry the same creating transaction id
    session_xmin = await pg.fetchval("SELECT xmin::text FROM sessions WHERE id = $1", sid)
    seat_xmins = await pg.fetch("SELECT DISTINCT xmin::text AS x FROM session_seats WHERE session_id = $1", sid)
    assert [r["x"] for r in seat_xmins] == [session_xmin]
    assert await pg.fetchval("SELECT count(*) FROM session_seats WHERE session_id = $1", sid) == 20
    detail = await (await client.get(f"/sessions/{session['id']}")).json()
    assert {k: v for k, v in detail.items() if k not in ("room", "sessionSeats")} == session
    assert detail["room"]["id"] == room["id"] and len(detail["sessionSeats"]) == 20
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
    assert seat_map["session"] == {**session, "room": seat_map["room"]}
    room = seat_map["room"]
    assert room["id"] == session["roomId"] and room["capacity"] == 16 and room["name"].startswith("Room ")
    seats = seat_map["seats"]
    assert len(seats) == 16
    assert all(s["status"] == "AVAILABLE" and s["version"] >= 1 for s in seats)
    assert [(s["seat"]["rowLabel"], s["seat"]["seatNumber"]) for s in seats] == \
        [(row, n) for row in "AB" for n in range(1, 9)]
    assert all(set(s) == {"id", "sessionId", "seatId", "status", "version", "seat"}
               and set(s["seat"]) == {"id", "roomId", "rowLabel", "seatNumber", "createdAt", "updatedAt"}
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
