"""A client written for the StarSoft cinema API works against boxoffice unchanged (../shared/SEED_API.md).

Every route of that API is called with its request shapes (its example bodies and the stress script's
calls), and every field it lists is checked: present, of the listed JSON type, with the listed nesting.
Our own fields may be there too; decimals are JSON numbers (a documented difference). The suite runs in
the trusting mode (`AUTH_REQUIRED=false`, the StarSoft API's own) and again with tokens, to show the same
shapes. Then the headers (X-Worker-ID, CORS), the paging of the new list routes, and the integration
events other services read from Kafka.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from core.settings import Settings
from server.app import create_app
from storage import db, seed
from tests.conftest import ADMIN, bearer, with_settings

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


@pytest.fixture(params=["trusting", "tokens"])
async def caller(request: pytest.FixtureRequest, aiohttp_client: Any, settings: Settings) -> Caller:
    tokens = request.param == "tokens"
    app = create_app(with_settings(settings, auth_required=tokens))
    return Caller(await aiohttp_client(app), tokens)


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


# ------------------------------------------------------------------ the list routes: who sees what, paging

async def test_list_routes_with_tokens_show_ones_own_and_the_admin_all(aiohttp_client: Any, settings: Settings) -> None:
    caller = Caller(await aiohttp_client(create_app(settings)), tokens=True)
    _, session = await make_show(caller)
    seats = [s["id"] for s in (await caller.call("GET", f"/sessions/{session['id']}/seats", 200))["seats"]]
    ana, bob = await caller.create_user("Ana"), await caller.create_user("Bob")
    held = await caller.call("POST", "/reservations", 201, as_user=ana["id"],
                             body={"sessionId": session["id"], "sessionSeatIds": seats[:1]})
    bought = await caller.call("POST", "/reservations", 201, as_user=bob["id"],
                               body={"sessionId": session["id"], "sessionSeatIds": seats[1:2]})
    sale = await caller.call("POST", f"/reservations/{bought['id']}/confirm", 201, as_user=bob["id"])

    assert [r["id"] for r in await caller.call("GET", "/reservations", 200, as_user=ana["id"])] == [held["id"]]
    assert [r["id"] for r in await caller.call("GET", "/reservations", 200, as_user=bob["id"])] == [bought["id"]]
    everyone = await caller.call("GET", f"/reservations?sessionId={session['id']}", 200, admin=True)
    assert {r["id"] for r in everyone} == {held["id"], bought["id"]}
    confirmed = await caller.call("GET", f"/reservations?sessionId={session['id']}&status=CONFIRMED", 200, admin=True)
    assert [r["id"] for r in confirmed] == [bought["id"]]
    assert await caller.call("GET", f"/reservations?status=CONFIRMED&sessionId={session['id']}", 200,
                             as_user=ana["id"]) == []

    assert await caller.call("GET", "/sales", 200, as_user=ana["id"]) == []
    assert [s["id"] for s in await caller.call("GET", "/sales", 200, as_user=bob["id"])] == [sale["id"]]
    assert sale["id"] in {s["id"] for s in await caller.call("GET", "/sales?limit=500", 200, admin=True)}

    # GET /users: the admin only
    assert (await caller.call("GET", "/users", 403, as_user=ana["id"]))["code"] == "admin_required"
    assert (await caller.call("GET", "/users", 401))["code"] == "unauthorized"
    for path in ("/reservations", "/sales"):
        assert (await caller.call("GET", path, 401))["code"] == "unauthorized"


@pytest.mark.parametrize("path", ["/users", "/reservations", "/sales", "/rooms", "/sessions"])
async def test_list_routes_page_with_limit_and_offset(client: TestClient, path: str) -> None:
    caller = Caller(client, tokens=True)
    for bad in ("limit=0", "limit=501", "offset=-1", "limit=x", "status=LOST"):
        if bad.startswith("status") and path != "/reservations":
            continue
        body = await caller.call("GET", f"{path}?{bad}", 400, admin=True)
        assert body["code"] == "validation_error", bad
    if path == "/reservations":  # a bad filter is refused, not ignored
        assert (await caller.call("GET", f"{path}?sessionId=nope", 400, admin=True))["code"] == "validation_error"
    # two of everything, so the page below is full whatever ran before
    _, session = await make_show(caller)
    seats = [s["id"] for s in (await caller.call("GET", f"/sessions/{session['id']}/seats", 200))["seats"]]
    for seat in seats[:2]:
        buyer = await caller.create_user("Pager")
        held = await caller.call("POST", "/reservations", 201, as_user=buyer["id"],
                                 body={"userId": buyer["id"], "sessionId": session["id"], "sessionSeatIds": [seat]})
        await caller.call("POST", f"/reservations/{held['id']}/confirm", 201, as_user=buyer["id"])
    first = await caller.call("GET", f"{path}?limit=2", 200, admin=True)
    assert len(first) == 2
    second = await caller.call("GET", f"{path}?limit=1&offset=1", 200, admin=True)
    assert [x["id"] for x in second] == [first[1]["id"]]


# ------------------------------------------------------------------ headers: X-Worker-ID and CORS

async def test_every_response_carries_x_worker_id(client: TestClient) -> None:
    for method, path in (("GET", "/health"), ("GET", "/nope"), ("POST", "/users"), ("GET", "/"),
                         ("GET", f"/sessions/{uuid.uuid4()}"), ("GET", "/api-docs-json")):
        resp = await client.request(method, path, data=b"{" if method == "POST" else None)
        assert resp.headers.get("X-Worker-ID") == "test-node", (method, path, resp.status)
        assert resp.headers["X-Node-Id"] == "test-node"


async def test_cors_lets_a_front_end_on_another_origin_call_with_a_bearer_token(client: TestClient) -> None:
    origin = {"Origin": "http://front.example:5173"}
    preflight = await client.options("/reservations", headers={
        **origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-idempotency-key"})
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert set(preflight.headers["Access-Control-Allow-Methods"].split(",")) >= {"GET", "POST", "DELETE"}
    allowed = {h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed >= {"authorization", "content-type", "x-idempotency-key"}
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    assert preflight.headers["X-Worker-ID"] == "test-node"

    resp = await client.get("/sessions", headers=origin)
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-Worker-ID" in resp.headers.get("Access-Control-Expose-Headers", "")
    error = await client.get("/users", headers=origin)  # an error is readable cross-origin too
    assert error.status == 401 and error.headers["Access-Control-Allow-Origin"] == "*"


async def test_allowed_origins_limits_cors_to_the_listed_origins(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(with_settings(settings, allowed_origins=("https://shop.example",))))
    ok = await client.options("/sessions", headers={"Origin": "https://shop.example",
                                                    "Access-Control-Request-Method": "GET"})
    assert ok.status == 204 and ok.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Origin" in ok.headers.get("Vary", "")
    other = await client.options("/sessions", headers={"Origin": "https://evil.example",
                                                       "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in other.headers
    plain = await client.get("/sessions", headers={"Origin": "https://evil.example"})
    assert plain.status == 200 and "Access-Control-Allow-Origin" not in plain.headers
    assert "Origin" in plain.headers.get("Vary", "")


# ------------------------------------------------------------------ the stress script, on a fresh deployment

@pytest.fixture
async def fresh_database(empty_database: str) -> str:
    """A database of its own, migrated and seeded as `boxoffice migrate` and `boxoffice seed` leave it."""
    await db.migrate(empty_database)
    await seed.seed(empty_database)
    return empty_database


async def test_the_stress_script_finds_one_winner_and_reads_the_worker(
        aiohttp_client: Any, settings: Settings, fresh_database: str) -> None:
    """scripts/simulation.js, step by step (7.2), with 40 users against one node."""
    client = await aiohttp_client(create_app(with_settings(settings, database_url=fresh_database,
                                                           auth_required=False)))
    rooms = await (await client.get("/rooms")).json()
    room = next(r for r in rooms if r["name"] == "Sala 01 - IMAX Extreme")
    now = datetime.now(UTC)
    resp = await client.post("/sessions", json={
        "movieTitle": f"Jogos Vorazes: A Competição {int(time.time() * 1000)}",
        "startShowTime": (now + timedelta(hours=24)).isoformat().replace("+00:00", "Z"),
        "endShowTime": (now + timedelta(hours=25)).isoformat().replace("+00:00", "Z"),
        "roomId": room["id"], "ticketPrice": 50})
    assert resp.status == 201
    session_id = (await resp.json())["id"]
    body = await (await client.get(f"/sessions/{session_id}/seats")).json()
    seats = body if isinstance(body, list) else body["seats"]
    targets = [next(s for s in seats if s["seat"]["seatNumber"] == n)["id"] for n in (1, 2)]
    users = []
    for i in range(40):
        resp = await client.post("/users", json={"name": f"Gladiator {i}",
                                                 "email": f"gladiator{i}_{int(time.time() * 1000)}@arena.com"})
        users.append((await resp.json())["id"])

    async def attempt(user_id: str) -> tuple[int, dict[str, Any], str | None]:
        resp = await client.post("/reservations", json={"userId": user_id, "sessionId": session_id,
                                                        "sessionSeatIds": targets},
                                 headers={"x-idempotency-key": str(uuid.uuid4())})
        return resp.status, await resp.json(), resp.headers.get("x-worker-id")

    results = await asyncio.gather(*(attempt(u) for u in users))
    winners = [(worker, data["id"]) for status, data, worker in results if 200 <= status < 300]
    assert len(winners) == 1, results
    assert winners[0][0] == "test-node"  # not "Server: undefined"
    losers = [(status, data["message"]) for status, data, _ in results if not 200 <= status < 300]
    assert {status for status, _ in losers} == {409} and all(message for _, message in losers)


# ------------------------------------------------------------------ integration events on Kafka (section 4.1)

INTEGRATION_TOPICS = ("reservations-topic", "cinema.reservations", "cinema.sales", "cinema.seats")


async def read_events(consumer: AIOKafkaConsumer, wanted: int, ours: Callable[[dict[str, Any]], bool],
                      within: float = 20.0) -> list[Any]:
    """Records until `wanted` of them are `ours` (other tests' holds expire meanwhile: their events pass by)."""
    got: list[Any] = []
    deadline = time.monotonic() + within
    while len(got) < wanted and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=200)
        got.extend(r for records in batches.values() for r in records if ours(json.loads(r.value)))
    return got


async def test_integration_events_for_a_hold_a_cancel_an_expiry_and_a_confirm(
        aiohttp_client: Any, settings: Settings, fresh_database: str) -> None:
    """A database of its own: the nodes of other tests (a cluster may be up) relay their own database's rows,
    not this one's, so every event here is published by this node, with INTEGRATION_EVENTS on."""
    app_settings = with_settings(settings, database_url=fresh_database, integration_events=True,
                                 hold_ttl_seconds=1, expiry_sweep_interval=0.1)
    client = await aiohttp_client(create_app(app_settings))
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        assert set(INTEGRATION_TOPICS) <= set(await admin.list_topics())  # created on start
    finally:
        await admin.close()

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                fetch_max_wait_ms=50)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in INTEGRATION_TOPICS
                      for p in (consumer.partitions_for_topic(t) or {0})]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)  # fixed now: only what the actions below cause is read

        caller = Caller(client, tokens=True)
        _, session = await make_show(caller, price=35)
        seats = [s["id"] for s in (await caller.call("GET", f"/sessions/{session['id']}/seats", 200))["seats"]]
        user = await caller.create_user("Kafka Reader")
        hold_body = {"sessionId": session["id"]}
        cancelled = await caller.call("POST", "/reservations", 201, as_user=user["id"],
                                      body={**hold_body, "sessionSeatIds": seats[:1]})
        await caller.call("DELETE", f"/reservations/{cancelled['id']}", 204, as_user=user["id"])
        expired = await caller.call("POST", "/reservations", 201, as_user=user["id"],
                                    body={**hold_body, "sessionSeatIds": seats[1:2]})
        confirmed = await caller.call("POST", "/reservations", 201, as_user=user["id"],
                                      body={**hold_body, "sessionSeatIds": seats[2:4]})
        sale = await caller.call("POST", f"/reservations/{confirmed['id']}/confirm", 201, as_user=user["id"])
        mine = {cancelled["id"], expired["id"], confirmed["id"]}

        def ours(value: dict[str, Any]) -> bool:
            return (value.get("reservationId") or value.get("id")) in mine

        # 3 CREATED + 1 RESERVATION_CANCELLED + 1 reservation.expired + payment.confirmed + seat.sold
        records = await read_events(consumer, 7, ours)
    finally:
        await consumer.stop()

    events: dict[tuple[str, str], Any] = {}
    for record in records:
        value = json.loads(record.value)
        reservation_id = value.get("reservationId") or value.get("id")
        kind = value.get("event") or value.get("eventType")
        events[(record.topic, f"{kind}:{reservation_id}")] = record
        assert abs(int(dict(record.headers)["timestamp"]) - time.time() * 1000) < 60_000
    topics_kinds = sorted((topic, kind.split(":")[0]) for topic, kind in events)
    assert topics_kinds == sorted([
        ("reservations-topic", "CREATED"), ("reservations-topic", "CREATED"), ("reservations-topic", "CREATED"),
        ("reservations-topic", "RESERVATION_CANCELLED"), ("cinema.reservations", "reservation.expired"),
        ("cinema.sales", "payment.confirmed"), ("cinema.seats", "seat.sold")]), topics_kinds

    created = json.loads(events[("reservations-topic", f"CREATED:{confirmed['id']}")].value)
    check(created, {**RESERVATION, "reservationSeats": [RS]})
    assert created["status"] == "PENDING" and created["userId"] == user["id"]
    assert [rs["sessionSeatId"] for rs in created["reservationSeats"]] == seats[2:4]
    assert events[("reservations-topic", f"CREATED:{confirmed['id']}")].key is None

    cancel = json.loads(events[("reservations-topic", f"RESERVATION_CANCELLED:{cancelled['id']}")].value)
    assert cancel["sessionSeatIds"] == seats[:1] and cancel["reservationId"] == cancelled["id"]

    expiry_record = events[("cinema.reservations", f"reservation.expired:{expired['id']}")]
    expiry = json.loads(expiry_record.value)
    assert expiry_record.key is None
    assert expiry["sessionSeatIds"] == seats[1:2]
    # the fields that API's own consumer read but never got (8.4)
    assert (expiry["userId"], expiry["sessionId"], expiry["seatIds"]) == (user["id"], session["id"], seats[1:2])
    check(expiry, {"expiredAt": DATE})

    paid_record = events[("cinema.sales", f"payment.confirmed:{confirmed['id']}")]
    assert paid_record.key == sale["id"].encode()
    paid = json.loads(paid_record.value)
    assert (paid["saleId"], paid["totalAmount"], paid["confirmedAt"]) == (sale["id"], 70, sale["confirmedAt"])
    assert (paid["reservationId"], paid["userId"]) == (confirmed["id"], user["id"])

    sold_record = events[("cinema.seats", f"seat.sold:{confirmed['id']}")]
    assert sold_record.key == session["id"].encode()
    sold = json.loads(sold_record.value)
    assert (sold["sessionId"], sold["saleId"]) == (session["id"], sale["id"])
    assert sorted(sold["sessionSeatIds"]) == sorted(sold["seatIds"]) == sorted(seats[2:4])  # in no given order
    check(sold, {"soldAt": DATE})
    # after the sales message, as that API sends them
    assert paid_record.timestamp <= sold_record.timestamp


def test_integration_events_are_a_setting_off_by_default() -> None:
    assert Settings.from_env(env={}).integration_events is False
    assert Settings.from_env(env={"INTEGRATION_EVENTS": "true"}).integration_events is True


def test_integration_acks_are_not_expected_back_by_the_events_consumer() -> None:
    """The relay's acks go to the consumer's read-back check (Echo) only for the topic it reads."""
    from aiokafka.structs import RecordMetadata

    from realtime.kafka import Echo

    echo = Echo("seat-events")
    echo.sent([RecordMetadata("cinema.sales", 0, None, 7, 0, None, 0),
               RecordMetadata("seat-events", 1, None, 3, 0, None, 0)])
    assert set(echo.pending) == {1}
