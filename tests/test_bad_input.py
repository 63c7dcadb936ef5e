"""A table of bad input to the catalog REST routes: each answers its status and stable code, names the
bad fields, and changes nothing in the database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.catalog_support import error_of, session_body
from tests.conftest import ADMIN, make_room, make_user, table_counts

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
