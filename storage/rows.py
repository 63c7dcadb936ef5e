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


def seats_from_json(items: list[dict[str, Any]] | None) -> list[Seat]:
    """Seats aggregated by SQL as jsonb objects {id, row_label, seat_number}."""
    return [Seat(uuid.UUID(s["id"]), s["row_label"], s["seat_number"]) for s in items or ()]


@dataclass(frozen=True, slots=True)
class Room:
    id: uuid.UUID
    name: str
    capacity: int
    seats: list[Seat] | None = None  # None: not read (room lists)


@dataclass(frozen=True, slots=True)
class Session:
    id: uuid.UUID
    movie_title: str
    start_show_time: datetime
    end_show_time: datetime
    room_id: uuid.UUID
    ticket_price: Decimal


@dataclass(frozen=True, slots=True)
class SessionSeat:
    id: uuid.UUID
    status: str
    version: int
    seat: Seat


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
    seats: list[Seat]
    created_at: datetime | None = None  # None: a hold just written (its answer carries no createdAt)


@dataclass(frozen=True, slots=True)
class Sale:
    id: uuid.UUID
    reservation_id: uuid.UUID
    user_id: uuid.UUID
    session_id: uuid.UUID
    movie_title: str
    start_show_time: datetime
    total_amount: Decimal
    confirmed_at: datetime
    seats: list[Seat]


@dataclass(frozen=True, slots=True)
class Released:
    reservation_id: uuid.UUID
    session_id: uuid.UUID
    seat_ids: list[uuid.UUID]
