"""The StarSoft API's shapes (../shared/SEED_API.md section 2) and a client that calls it as a StarSoft client does.

Every field it lists is checked: present, of the listed JSON type, with the listed nesting. Our own fields may be
there too; decimals are JSON numbers (a documented difference).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN, bearer

# ------------------------------------------------------------------ the shapes of SEED_API.md section 2

DATE, UUID, STR, INT, NUM, NULLABLE_STR = "date", "uuid", "str", "int", "number", "str|null"


ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


ROOM_STATUS = ("ACTIVE", "MAINTENANCE", "INACTIVE")


SEAT_STATUS = ("AVAILABLE", "RESERVED", "SOLD")


RESERVATION_STATUS = ("PENDING", "CONFIRMED", "EXPIRED", "CANCELLED")


USER = {"id": UUID, "email": STR, "name": STR, "createdAt": DATE, "updatedAt": DATE}


ROOM = {"id": UUID, "name": STR, "capacity": INT, "status": ROOM_STATUS, "createdAt": DATE, "updatedAt": DATE}


SEAT = {"id": UUID, "roomId": UUID, "rowLabel": STR, "seatNumber": INT, "createdAt": DATE, "updatedAt": DATE}


SESSION = {"id": UUID, "roomId": UUID, "movieTitle": STR, "startShowTime": DATE, "endShowTime": DATE,
           "ticketPrice": NUM, "createdAt": DATE, "updatedAt": DATE}


SESSION_SEAT = {"id": UUID, "sessionId": UUID, "seatId": UUID, "status": SEAT_STATUS, "version": INT}


RESERVATION = {"id": UUID, "userId": UUID, "sessionId": UUID, "expiresAt": DATE, "status": RESERVATION_STATUS,
               "idempotencyKey": NULLABLE_STR, "createdAt": DATE, "updatedAt": DATE}


SALE = {"id": UUID, "reservationId": UUID, "userId": UUID, "totalAmount": NUM, "confirmedAt": DATE,
        "createdAt": DATE}


RS = {"id": UUID, "reservationId": UUID, "sessionSeatId": UUID, "sessionSeat": {**SESSION_SEAT, "seat": SEAT}}


RESERVATION_LITE = {**RESERVATION, "reservationSeats": [RS], "seatLabels": [STR]}


RESERVATION_FULL = {**RESERVATION_LITE, "session": SESSION, "user": USER}


SALE_FULL = {**SALE, "reservation": {**RESERVATION, "session": SESSION, "reservationSeats": [RS]}, "user": USER}


USER_WITH_RESERVATIONS = {**USER, "reservations": [{**RESERVATION, "reservationSeats": [RS], "session": SESSION}]}


PURCHASE = {**SALE, "reservation": {**RESERVATION, "session": SESSION, "reservationSeats": [RS]}}


ROOM_LISTED = {**ROOM, "_count": {"seats": INT}}


ROOM_WITH_SEATS = {**ROOM, "seats": [SEAT]}


SESSION_LISTED = {**SESSION, "room": ROOM, "_count": {"sessionSeats": INT}}


SESSION_WITH_SEATS = {**SESSION, "sessionSeats": [{**SESSION_SEAT, "seat": SEAT}], "room": ROOM}


SEAT_MAP = {"session": {**SESSION, "room": ROOM}, "seats": [{**SESSION_SEAT, "seat": SEAT}]}


def check(value: Any, spec: Any, path: str = "$") -> None:
    """`value` has every field of `spec`, of its JSON type, with its nesting (more fields are allowed)."""
    if isinstance(spec, dict):
        assert isinstance(value, dict), f"{path}: {value!r} is not an object"
        for key, inner in spec.items():
            assert key in value, f"{path}.{key} is missing (has {sorted(value)})"
            check(value[key], inner, f"{path}.{key}")
    elif isinstance(spec, list):
        assert isinstance(value, list), f"{path}: {value!r} is not an array"
        assert value, f"{path}: empty, so its items cannot be checked"
        for i, item in enumerate(value):
            check(item, spec[0], f"{path}[{i}]")
    elif isinstance(spec, tuple):
        assert value in spec, f"{path}: {value!r} is not one of {spec}"
    elif spec == DATE:
        assert isinstance(value, str) and ISO_Z.match(value), f"{path}: {value!r} is not UTC with ms and Z"
    elif spec == UUID:
        assert isinstance(value, str) and str(uuid.UUID(value)) == value, f"{path}: {value!r} is not a uuid"
    elif spec == STR:
        assert isinstance(value, str), f"{path}: {value!r} is not a string"
    elif spec == NULLABLE_STR:
        assert value is None or isinstance(value, str), f"{path}: {value!r} is not a string or null"
    elif spec == INT:
        assert isinstance(value, int) and not isinstance(value, bool), f"{path}: {value!r} is not an integer"
    elif spec == NUM:
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{path}: {value!r} is not a number"
    else:  # pragma: no cover - a typo in a spec above
        raise AssertionError(f"unknown spec {spec!r}")


# ------------------------------------------------------------------ a StarSoft client, in either mode

@dataclass
class Caller:
    """Calls the API as a StarSoft client does. `tokens`: the same calls with bearer tokens (auth on)."""

    client: TestClient
    tokens: bool
    user_tokens: dict[str, str] = field(default_factory=dict)

    def _headers(self, as_user: str | None, admin: bool, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.tokens and admin:
            headers |= ADMIN
        elif self.tokens and as_user is not None:
            headers |= bearer(self.user_tokens[as_user])
        return headers

    async def call(self, method: str, path: str, status: int, *, body: Any = None, as_user: str | None = None,
                   admin: bool = False, headers: dict[str, str] | None = None) -> Any:
        resp = await self.client.request(method, path, json=body, headers=self._headers(as_user, admin, headers))
        text = await resp.text()
        assert resp.status == status, f"{method} {path}: {resp.status} {text}"
        assert resp.headers["X-Worker-ID"] == resp.headers["X-Node-Id"] == "test-node"
        return json.loads(text) if text else None

    async def create_user(self, name: str) -> dict[str, Any]:
        email = f"{uuid.uuid4().hex[:10]}@arena.com"
        user = await self.call("POST", "/users", 201, body={"name": name, "email": email})
        self.user_tokens[user["id"]] = user["token"]
        return user  # type: ignore[no-any-return]


def future(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


async def make_show(caller: Caller, price: float = 35) -> tuple[dict[str, Any], dict[str, Any]]:
    """A room of 20 seats (rows of 16, as `capacity` lays them out) and a session in it tomorrow."""
    room = await caller.call("POST", "/rooms", 201, body={"name": f"Sala {uuid.uuid4().hex[:8]}", "capacity": 20},
                             admin=True)
    session = await caller.call("POST", "/sessions", 201, admin=True, body={
        "movieTitle": "Interstellar 2: The Return", "startShowTime": future(24), "endShowTime": future(27),
        "roomId": room["id"], "ticketPrice": price})
    return room, session
