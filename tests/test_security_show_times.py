"""Show times are bounded to a sane window, and every date computation on them is safe: no 500 at the extremes,
no confirm that fails after its sale committed, no gate rebuild broken by one odd session."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core.appkeys import GATE, PG_POOL
from jobs.reconcile import rebuild_gate
from storage.redis_keys import seat_key
from tests.conftest import ADMIN, bearer, make_room, make_session, make_user, seat_ids, table_counts

SOON = datetime.now(UTC) + timedelta(days=1)


def session_body(room_id: str, start: str, end: str) -> dict[str, Any]:
    return {"movieTitle": "Edge", "startShowTime": start, "endShowTime": end, "roomId": room_id, "ticketPrice": 10}


@pytest.mark.parametrize(("start", "end", "field"), [
    ("9999-12-31T20:00:00.000Z", "9999-12-31T22:00:00.000Z", "startShowTime"),  # year 9999
    ("9999-12-31T23:30:00-01:00", "9999-12-31T23:45:00-01:00", "startShowTime"),  # past year 9999 in UTC
    ("0001-01-01T00:30:00+01:00", "0001-01-01T02:00:00+01:00", "startShowTime"),  # before year 1 in UTC
    ("1970-01-01T00:00:00Z", "1970-01-01T02:00:00Z", "startShowTime"),  # long gone
    (SOON.isoformat(), "9999-12-31T23:59:59.999Z", "endShowTime"),  # a show without end
    (SOON.isoformat(), (SOON + timedelta(days=30)).isoformat(), "endShowTime"),  # a month-long show
    ((SOON + timedelta(days=365 * 20)).isoformat(), (SOON + timedelta(days=365 * 20, hours=2)).isoformat(),
     "startShowTime"),  # twenty years ahead
])
async def test_show_times_outside_the_window_are_refused(client: TestClient, pg: asyncpg.Connection,
                                                         start: str, end: str, field: str) -> None:
    room = await make_room(client, rows=2, per_row=8)
    before = await table_counts(pg)
    resp = await client.post("/sessions", json=session_body(room["id"], start, end), headers=ADMIN)
    body = await resp.json()
    assert (resp.status, body["code"]) == (400, "validation_error"), body
    assert field in body["details"]["fields"], body
    assert await table_counts(pg) == before


async def test_the_window_edges_are_served(client: TestClient) -> None:
    """Within the window, a session can be created and sold at its far edge."""
    room = await make_room(client, rows=2, per_row=8)
    start = datetime.now(UTC) + timedelta(days=365 * 5)
    resp = await client.post("/sessions", json=session_body(
        room["id"], start.isoformat(), (start + timedelta(days=1)).isoformat()), headers=ADMIN)
    assert resp.status == 201, await resp.text()
    session = await resp.json()
    seats = await seat_ids(client, session["id"])
    user = await make_user(client)
    resp = await client.post("/reservations", json={"sessionId": session["id"], "sessionSeatIds": seats[:1]},
                             headers=bearer(user["token"]))
    assert resp.status == 201
    resp = await client.post(f"/reservations/{(await resp.json())['id']}/confirm", headers=bearer(user["token"]))
    assert resp.status == 201


async def test_a_session_ending_in_year_9999_is_sold_and_rebuilt_safely(
        client: TestClient, pg: asyncpg.Connection, redis_client: Redis) -> None:
    """Rows written before the window existed (or by hand): confirm still answers, the gate still rebuilds."""
    template = await make_session(client)
    session_id = uuid.uuid4()
    await pg.execute(
        "INSERT INTO sessions (id, movie_title, start_show_time, end_show_time, room_id, ticket_price)"
        " SELECT $1, 'Forever', now() + interval '1 day', '9999-12-31T23:59:59.999Z', room_id, $2"
        " FROM sessions WHERE id = $3::uuid", session_id, Decimal("9.5"), template["id"])
    await pg.execute(
        "INSERT INTO session_seats (id, session_id, seat_id, position) SELECT gen_random_uuid(), $1, seat_id, position"
        " FROM session_seats WHERE session_id = $2::uuid", session_id, template["id"])
    seats = await seat_ids(client, str(session_id))
    user = await make_user(client)
    resp = await client.post("/reservations", json={"sessionId": str(session_id), "sessionSeatIds": seats[:2]},
                             headers=bearer(user["token"]))
    assert resp.status == 201, await resp.text()
    reservation = await resp.json()
    resp = await client.post(f"/reservations/{reservation['id']}/confirm", headers=bearer(user["token"]))
    assert resp.status == 201, await resp.text()

    await redis_client.delete(seat_key(session_id, seats[0]))
    assert await rebuild_gate(client.app[PG_POOL], client.app[GATE]) >= 1
    assert (await redis_client.get(seat_key(session_id, seats[0]))) == f"S:{reservation['id']}".encode()
