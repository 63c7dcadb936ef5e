"""Nested reads: reservations with their seats, session and user, and sales with their reservation, one or a
page at a time. One query for the parents, one for all their seats, whatever the page size."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg

from storage import wire

Con: TypeAlias = asyncpg.Connection | asyncpg.Pool

RESERVATIONS_SQL = """
SELECT r.id, r.user_id, r.session_id, r.status, r.expires_at, r.created_at, r.updated_at,
       (SELECT k.key FROM idempotency_keys k
        WHERE k.user_id = r.user_id AND k.scope = 'hold' AND k.resource_id = r.id) AS idempotency_key,
       u.name AS user_name, u.email AS user_email, u.created_at AS user_created_at,
       se.movie_title, se.start_show_time, se.end_show_time, se.room_id, se.ticket_price,
       se.created_at AS session_created_at
FROM reservations r JOIN users u ON u.id = r.user_id JOIN sessions se ON se.id = r.session_id
WHERE {where}
ORDER BY r.created_at DESC, r.id LIMIT ${limit} OFFSET ${offset}
"""

SEATS_SQL = """
SELECT rs.reservation_id, ss.id, ss.session_id, ss.seat_id, ss.status, ss.version,
       st.room_id, st.row_label, st.seat_number, ro.created_at AS room_created_at
FROM reservation_seats rs JOIN session_seats ss ON ss.id = rs.session_seat_id
JOIN seats st ON st.id = ss.seat_id JOIN rooms ro ON ro.id = st.room_id
WHERE rs.reservation_id = ANY($1::uuid[])
ORDER BY ss.position
"""

# A reservation just held, with its seats: one query (the hold's own answer, on the hot path)
HELD_SQL = """
SELECT rs.reservation_id, ss.id, ss.session_id, ss.seat_id, ss.status, ss.version,
       st.room_id, st.row_label, st.seat_number, ro.created_at AS room_created_at,
       r.user_id, r.status AS reservation_status, r.expires_at, r.created_at, r.updated_at
FROM reservations r JOIN reservation_seats rs ON rs.reservation_id = r.id
JOIN session_seats ss ON ss.id = rs.session_seat_id JOIN seats st ON st.id = ss.seat_id
JOIN rooms ro ON ro.id = st.room_id
WHERE r.id = $1
ORDER BY ss.position
"""

SALES_SQL = """
SELECT sa.id, sa.reservation_id, sa.user_id, sa.session_id, sa.total_amount, sa.confirmed_at
FROM sales sa WHERE {where}
ORDER BY sa.confirmed_at DESC, sa.id LIMIT ${limit} OFFSET ${offset}
"""


def _page_sql(template: str, where: str, args: Sequence[object]) -> str:
    return template.format(where=where, limit=len(args) + 1, offset=len(args) + 2)


async def seats_of(con: Con, reservation_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[asyncpg.Record]]:
    """The session seats of each reservation, in seat order."""
    seats: dict[uuid.UUID, list[asyncpg.Record]] = {r: [] for r in reservation_ids}
    if reservation_ids:
        for row in await con.fetch(SEATS_SQL, reservation_ids):
            seats[row["reservation_id"]].append(row)
    return seats


def _full(row: asyncpg.Record, seats: list[asyncpg.Record]) -> dict[str, Any]:
    out = wire.reservation_json(row, seats)
    out["session"] = wire.session_json({
        "id": row["session_id"], "movie_title": row["movie_title"], "start_show_time": row["start_show_time"],
        "end_show_time": row["end_show_time"], "room_id": row["room_id"], "ticket_price": row["ticket_price"],
        "created_at": row["session_created_at"]})
    out["user"] = wire.user_json({"id": row["user_id"], "name": row["user_name"], "email": row["user_email"],
                                  "created_at": row["user_created_at"]})
    return out


async def reservations(con: Con, where: str, args: Sequence[object], limit: int, offset: int = 0
                       ) -> list[dict[str, Any]]:
    """Reservations (newest first) with their seats, session and user. `where` names the parameters $1..$n
    of `args` and may use the aliases r (reservations), u (users), se (sessions)."""
    rows = await con.fetch(_page_sql(RESERVATIONS_SQL, where, args), *args, limit, offset)
    seats = await seats_of(con, [r["id"] for r in rows])
    return [_full(r, seats[r["id"]]) for r in rows]


async def reservation(con: Con, reservation_id: uuid.UUID) -> dict[str, Any] | None:
    found = await reservations(con, "r.id = $1", [reservation_id], 1)
    return found[0] if found else None


async def held(con: Con, reservation_id: uuid.UUID, idempotency_key: str | None) -> dict[str, Any] | None:
    """A reservation with its seats, without its session and user (the StarSoft API's answer to a new hold)."""
    seats = await con.fetch(HELD_SQL, reservation_id)
    if not seats:
        return None
    first = seats[0]
    return wire.reservation_json({
        "id": reservation_id, "user_id": first["user_id"], "session_id": first["session_id"],
        "status": first["reservation_status"], "expires_at": first["expires_at"], "created_at": first["created_at"],
        "updated_at": first["updated_at"], "idempotency_key": idempotency_key}, seats)


async def sales(con: Con, where: str, args: Sequence[object], limit: int, offset: int = 0) -> list[dict[str, Any]]:
    """Sales (newest first), each with its reservation (seats and session) and its user. `where` may use the
    alias sa (sales)."""
    rows = await con.fetch(_page_sql(SALES_SQL, where, args), *args, limit, offset)
    if not rows:
        return []
    found = await reservations(con, "r.id = ANY($1::uuid[])", [[r["reservation_id"] for r in rows]], len(rows))
    by_id = {res["id"]: res for res in found}
    out = []
    for row in rows:
        nested = dict(by_id[str(row["reservation_id"])])
        user = nested.pop("user")
        out.append(wire.sale_json(row, nested, user))
    return out


async def users(con: Con, limit: int, offset: int) -> list[dict[str, Any]]:
    rows = await con.fetch("SELECT id, name, email, created_at FROM users ORDER BY created_at DESC, id"
                           " LIMIT $1 OFFSET $2", limit, offset)
    return [wire.user_json(r) for r in rows]
