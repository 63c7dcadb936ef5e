"""The rows storage returns: small frozen dataclasses in storage's own names (contract/ shapes them for the wire)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    name: str
    email: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Seat:
    """A seat of a room; `id` is the session seat's id when it belongs to a reservation or sale."""

    id: uuid.UUID
    row_label: str
    seat_number: int


@dataclass(frozen=True, slots=True)
class Room:
    """Rooms never change once created (so their updatedAt is their created_at); their seats are created with
    them, at the same time."""

    id: uuid.UUID
    name: str
    capacity: int
    created_at: datetime
    seats: list[Seat] | None = None  # None: not read (room lists)
    seat_count: int | None = None  # room lists


@dataclass(frozen=True, slots=True)
class SessionSeat:
    """A seat of one session: the session seat (id, status, version), the room's seat (seat_id, labels) and its
    room (`room_created_at`: the seat's own creation time)."""

    id: uuid.UUID
    session_id: uuid.UUID
    seat_id: uuid.UUID
    status: str
    version: int
    room_id: uuid.UUID
    row_label: str
    seat_number: int
    room_created_at: datetime


SESSION_SEAT_COLUMNS = ("ss.id, ss.session_id, ss.seat_id, ss.status, ss.version, st.room_id, st.row_label,"
                        " st.seat_number")


def session_seat(row: Any, room_created_at: datetime | None = None) -> SessionSeat:
    """From a record of SESSION_SEAT_COLUMNS (and `room_created_at`, unless given)."""
    return SessionSeat(row["id"], row["session_id"], row["seat_id"], row["status"], row["version"], row["room_id"],
                       row["row_label"], row["seat_number"],
                       row["room_created_at"] if room_created_at is None else room_created_at)


def held_seats(items: list[dict[str, Any]] | None, session_id: uuid.UUID) -> list[SessionSeat]:
    """The seats a hold just took, as the hold's SQL aggregates them (jsonb objects of SESSION_SEAT_COLUMNS'
    fields, in seat order): the hold's answer needs no second read."""
    return [SessionSeat(uuid.UUID(s["id"]), session_id, uuid.UUID(s["seat_id"]), "RESERVED", s["version"],
                        uuid.UUID(s["room_id"]), s["row_label"], s["seat_number"],
                        datetime.fromisoformat(s["room_created_at"])) for s in items or ()]


@dataclass(frozen=True, slots=True)
class Session:
    """Sessions never change once created (so their updatedAt is their created_at)."""

    id: uuid.UUID
    movie_title: str
    start_show_time: datetime
    end_show_time: datetime
    room_id: uuid.UUID
    ticket_price: Decimal
    created_at: datetime
    room: Room | None = None  # session lists and one session
    free_seats: int | None = None  # session lists: the seats still AVAILABLE
    seats: list[SessionSeat] | None = None  # one session


@dataclass(frozen=True, slots=True)
class SeatMap:
    session: Session
    room: Room
    seats: list[SessionSeat]


@dataclass(frozen=True, slots=True)
class Reservation:
    id: uuid.UUID
    user_id: uuid.UUID
    session_id: uuid.UUID
    status: str
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    idempotency_key: str | None
    seats: list[SessionSeat]  # in seat order
    session: Session | None = None  # None: not read (a hold's answer)
    user: User | None = None


@dataclass(frozen=True, slots=True)
class Sale:
    id: uuid.UUID
    reservation_id: uuid.UUID
    user_id: uuid.UUID
    session_id: uuid.UUID
    total_amount: Decimal
    confirmed_at: datetime
    reservation: Reservation  # with its seats, session and user


@dataclass(frozen=True, slots=True)
class Released:
    reservation_id: uuid.UUID
    session_id: uuid.UUID
    seat_ids: list[uuid.UUID]
