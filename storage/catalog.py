"""Catalog queries: users, rooms with their seats, sessions with their session seats, seat maps."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

import asyncpg

from core.errors import Conflict, NotFound, Unprocessable
from storage import details
from storage.auth import hash_token, new_token
from storage.rows import Reservation, Room, Seat, SeatMap, Session, User, session_seat

MIN_SESSION_SEATS = 16
SEATS_PER_ROW_FOR_CAPACITY = 16


class EmailTaken(Conflict):
    code, message = "email_taken", "A user with this email already exists"


class RoomNotFound(NotFound):
    code, message = "room_not_found", "Room not found"


class SessionNotFound(NotFound):
    code, message = "session_not_found", "Session not found"


class UserNotFound(NotFound):
    code, message = "user_not_found", "User not found"


class RoomTooSmall(Unprocessable):
    code = "room_too_small"


class InvalidShowTimes(Unprocessable):
    code, message = "invalid_show_times", "endShowTime must be after startShowTime"


def row_label(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA ... (spreadsheet style)."""
    label = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        label = chr(ord("A") + rem) + label
    return label


def seat_layout(rows: int | None, seats_per_row: int | None, capacity: int | None) -> list[tuple[str, int]]:
    if rows and seats_per_row:
        return [(row_label(r), n + 1) for r in range(rows) for n in range(seats_per_row)]
    assert capacity
    return [(row_label(i // SEATS_PER_ROW_FOR_CAPACITY), i % SEATS_PER_ROW_FOR_CAPACITY + 1) for i in range(capacity)]


# ---------------------------------------------------------------- users

async def create_user(pool: asyncpg.Pool, name: str, email: str) -> tuple[User, str]:
    token = new_token()
    try:
        row = await pool.fetchrow(
            "INSERT INTO users (id, name, email, token_hash) VALUES ($1, $2, $3, $4)"
            " RETURNING id, name, email, created_at",
            uuid.uuid4(), name, email, hash_token(token),
        )
    except asyncpg.UniqueViolationError:
        raise EmailTaken() from None
    return User(**dict(row)), token


USER_RESERVATIONS = 100  # GET /users/{id} lists the user's newest reservations, at most this many


async def get_user_detail(pool: asyncpg.Pool, user_id: uuid.UUID) -> tuple[User, list[Reservation]]:
    """A user with their newest reservations (any status), each with its seats and session."""
    async with pool.acquire() as con:
        row = await con.fetchrow("SELECT id, name, email, created_at FROM users WHERE id = $1", user_id)
        if row is None:
            raise UserNotFound()
        found = await details.reservations(con, "r.user_id = $1", [user_id], USER_RESERVATIONS)
    return User(**dict(row)), found


async def list_users(pool: asyncpg.Pool, limit: int, offset: int) -> list[User]:
    return await details.users(pool, limit, offset)


# ---------------------------------------------------------------- rooms

ROOM_COLUMNS = "id, name, capacity, created_at"


def _room(row: asyncpg.Record, seats: list[Seat] | None = None, seat_count: int | None = None) -> Room:
    return Room(row["id"], row["name"], row["capacity"], row["created_at"], seats, seat_count)


async def create_room(pool: asyncpg.Pool, name: str, layout: list[tuple[str, int]]) -> Room:
    room_id = uuid.uuid4()
    seat_rows = [(uuid.uuid4(), room_id, label, number, pos) for pos, (label, number) in enumerate(layout)]
    async with pool.acquire() as con, con.transaction():
        room = await con.fetchrow(
            f"INSERT INTO rooms (id, name, capacity) VALUES ($1, $2, $3) RETURNING {ROOM_COLUMNS}",
            room_id, name, len(layout),
        )
        await con.copy_records_to_table(
            "seats", records=seat_rows, columns=["id", "room_id", "row_label", "seat_number", "position"]
        )
    return _room(room, [Seat(r[0], r[2], r[3]) for r in seat_rows])


async def list_rooms(pool: asyncpg.Pool, limit: int, offset: int) -> list[Room]:
    rows = await pool.fetch(
        f"SELECT {ROOM_COLUMNS}, (SELECT count(*) FROM seats s WHERE s.room_id = rooms.id) AS seat_count"
        " FROM rooms ORDER BY created_at, id LIMIT $1 OFFSET $2", limit, offset
    )
    return [_room(r, seat_count=r["seat_count"]) for r in rows]


async def get_room(pool: asyncpg.Pool, room_id: uuid.UUID) -> Room:
    async with pool.acquire() as con:
        room = await con.fetchrow(f"SELECT {ROOM_COLUMNS} FROM rooms WHERE id = $1", room_id)
        if room is None:
            raise RoomNotFound()
        seats = await con.fetch(
            "SELECT id, row_label, seat_number FROM seats WHERE room_id = $1 ORDER BY position", room_id
        )
    return _room(room, [Seat(r["id"], r["row_label"], r["seat_number"]) for r in seats])


# ---------------------------------------------------------------- sessions

SESSION_COLUMNS = "id, movie_title, start_show_time, end_show_time, room_id, ticket_price, created_at"


def _session(row: asyncpg.Record) -> Session:
    return Session(row["id"], row["movie_title"], row["start_show_time"], row["end_show_time"], row["room_id"],
                   row["ticket_price"], row["created_at"])


async def create_session(pool: asyncpg.Pool, movie_title: str, start: datetime, end: datetime,
                         room_id: uuid.UUID, ticket_price: Decimal) -> Session:
    if end <= start:
        raise InvalidShowTimes()
    session_id = uuid.uuid4()
    async with pool.acquire() as con, con.transaction():
        capacity = await con.fetchval("SELECT capacity FROM rooms WHERE id = $1 FOR SHARE", room_id)
        if capacity is None:
            raise RoomNotFound()
        if capacity < MIN_SESSION_SEATS:
            raise RoomTooSmall(
                f"A session needs a room of at least {MIN_SESSION_SEATS} seats; this room has {capacity}",
                details={"capacity": capacity, "minimum": MIN_SESSION_SEATS},
            )
        row = await con.fetchrow(
            "INSERT INTO sessions (id, movie_title, start_show_time, end_show_time, room_id, ticket_price)"
            f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {SESSION_COLUMNS}",
            session_id, movie_title, start, end, room_id, ticket_price,
        )
        await con.execute(
            "INSERT INTO session_seats (id, session_id, seat_id, position)"
            " SELECT gen_random_uuid(), $1, id, position FROM seats WHERE room_id = $2",
            session_id, room_id,
        )
    return _session(row)


async def list_sessions(pool: asyncpg.Pool, limit: int, offset: int) -> list[Session]:
    rows = await pool.fetch(
        f"SELECT {', '.join('se.' + c.strip() for c in SESSION_COLUMNS.split(','))},"
        " ro.name AS room_name, ro.capacity AS room_capacity, ro.created_at AS room_created_at,"
        " (SELECT count(*) FROM session_seats ss WHERE ss.session_id = se.id AND ss.status = 'AVAILABLE') AS free"
        " FROM sessions se JOIN rooms ro ON ro.id = se.room_id"
        " ORDER BY se.start_show_time, se.id LIMIT $1 OFFSET $2", limit, offset
    )
    return [replace(_session(r), room=Room(r["room_id"], r["room_name"], r["room_capacity"], r["room_created_at"]),
                    free_seats=r["free"]) for r in rows]


async def get_session_row(con: asyncpg.Connection | asyncpg.Pool, session_id: uuid.UUID) -> asyncpg.Record:
    row = await con.fetchrow(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1", session_id)
    if row is None:
        raise SessionNotFound()
    return row


async def get_session(pool: asyncpg.Pool, session_id: uuid.UUID) -> Session:
    """A session with its room and every seat of it."""
    seats = await seat_map(pool, session_id, None)
    return replace(seats.session, room=seats.room, seats=seats.seats)


SEAT_MAP_SQL = """
SELECT ss.id, ss.status, ss.version, ss.reservation_id, r.user_id, s.id AS seat_id, s.row_label, s.seat_number,
       ss.session_id, s.room_id
FROM session_seats ss
JOIN seats s ON s.id = ss.seat_id
LEFT JOIN reservations r ON r.id = ss.reservation_id
WHERE ss.session_id = $1 AND ($2::text IS NULL OR ss.status = $2)
ORDER BY ss.position
"""


async def seat_rows(con: asyncpg.Connection | asyncpg.Pool, session_id: uuid.UUID,
                    status: str | None = None) -> list[asyncpg.Record]:
    """The seat map rows of a session, as plain records: the WebSocket snapshot renders thousands of them
    straight to its frame (realtime.snapshot)."""
    return list(await con.fetch(SEAT_MAP_SQL, session_id, status))


async def seat_map(pool: asyncpg.Pool, session_id: uuid.UUID, status: str | None) -> SeatMap:
    async with pool.acquire() as con:
        session = await get_session_row(con, session_id)
        room = await con.fetchrow(f"SELECT {ROOM_COLUMNS} FROM rooms WHERE id = $1", session["room_id"])
        rows = await seat_rows(con, session_id, status)
    return SeatMap(_session(session), _room(room), [session_seat(r, room["created_at"]) for r in rows])
