"""Nested reads: reservations with their seats, session and user, and sales with their reservation, one or a
page at a time. One query for the parents, one for all their seats, whatever the page size."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TypeAlias

import asyncpg

from storage.rows import SESSION_SEAT_COLUMNS, Reservation, Sale, Session, SessionSeat, User, session_seat

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

SEATS_SQL = f"""
SELECT rs.reservation_id, {SESSION_SEAT_COLUMNS}, ro.created_at AS room_created_at
FROM reservation_seats rs JOIN session_seats ss ON ss.id = rs.session_seat_id
JOIN seats st ON st.id = ss.seat_id JOIN rooms ro ON ro.id = st.room_id
WHERE rs.reservation_id = ANY($1::uuid[])
ORDER BY ss.position
"""

SALES_SQL = """
SELECT sa.id, sa.reservation_id, sa.user_id, sa.session_id, sa.total_amount, sa.confirmed_at
FROM sales sa WHERE {where}
ORDER BY sa.confirmed_at DESC, sa.id LIMIT ${limit} OFFSET ${offset}
"""


def _page_sql(template: str, where: str, args: Sequence[object]) -> str:
    return template.format(where=where, limit=len(args) + 1, offset=len(args) + 2)


async def seats_of(con: Con, reservation_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[SessionSeat]]:
    """The session seats of each reservation, in seat order."""
    seats: dict[uuid.UUID, list[SessionSeat]] = {r: [] for r in reservation_ids}
    if reservation_ids:
        for row in await con.fetch(SEATS_SQL, reservation_ids):
            seats[row["reservation_id"]].append(session_seat(row))
    return seats


def _reservation(row: asyncpg.Record, seats: list[SessionSeat]) -> Reservation:
    session = Session(row["session_id"], row["movie_title"], row["start_show_time"], row["end_show_time"],
                      row["room_id"], row["ticket_price"], row["session_created_at"])
    user = User(row["user_id"], row["user_name"], row["user_email"], row["user_created_at"])
    return Reservation(row["id"], row["user_id"], row["session_id"], row["status"], row["expires_at"],
                       row["created_at"], row["updated_at"], row["idempotency_key"], seats, session, user)


async def reservations(con: Con, where: str, args: Sequence[object], limit: int, offset: int = 0
                       ) -> list[Reservation]:
    """Reservations (newest first) with their seats, session and user. `where` names the parameters $1..$n
    of `args` and may use the aliases r (reservations), u (users), se (sessions)."""
    rows = await con.fetch(_page_sql(RESERVATIONS_SQL, where, args), *args, limit, offset)
    seats = await seats_of(con, [r["id"] for r in rows])
    return [_reservation(r, seats[r["id"]]) for r in rows]


async def reservation(con: Con, reservation_id: uuid.UUID) -> Reservation | None:
    found = await reservations(con, "r.id = $1", [reservation_id], 1)
    return found[0] if found else None


async def sales(con: Con, where: str, args: Sequence[object], limit: int, offset: int = 0) -> list[Sale]:
    """Sales (newest first), each with its reservation (seats, session, user). `where` may use the alias sa
    (sales)."""
    rows = await con.fetch(_page_sql(SALES_SQL, where, args), *args, limit, offset)
    if not rows:
        return []
    found = await reservations(con, "r.id = ANY($1::uuid[])", [[r["reservation_id"] for r in rows]], len(rows))
    by_id = {res.id: res for res in found}
    return [Sale(r["id"], r["reservation_id"], r["user_id"], r["session_id"], r["total_amount"], r["confirmed_at"],
                 by_id[r["reservation_id"]]) for r in rows]


async def users(con: Con, limit: int, offset: int) -> list[User]:
    rows = await con.fetch("SELECT id, name, email, created_at FROM users ORDER BY created_at DESC, id"
                           " LIMIT $1 OFFSET $2", limit, offset)
    return [User(**dict(r)) for r in rows]
