"""Rows to JSON: the one place that shapes users, rooms, seats, sessions, reservations and sales for REST,
the socket and the integration events, with the StarSoft API's fields (SEED_API.md section 2) beside ours.

Rows are asyncpg records or dicts with the column names of the queries in `storage.details`. Rooms, seats,
sessions and users are never changed once created, so their `updatedAt` is their `createdAt`, and a seat is
created with its room (same transaction), so it carries the room's `created_at`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

Row = Mapping[str, Any]
ROOM_STATUS = "ACTIVE"  # rooms here are always bookable: the StarSoft MAINTENANCE/INACTIVE states do not exist
_MASK_128 = (1 << 128) - 1


def timestamp(value: datetime | str) -> str:
    """Every date-time on the wire: UTC with milliseconds and `Z` (`2026-02-01T19:00:00.000Z`)."""
    if isinstance(value, str):  # a timestamptz that went through jsonb
        value = datetime.fromisoformat(value)
    if value.tzinfo is not UTC:  # asyncpg's timestamptz is UTC already
        value = value.astimezone(UTC)
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"  # "+00:00" -> "Z"


def amount(value: Decimal | float) -> float:
    """Decimals (prices, totals) are JSON numbers."""
    return float(value)


def reservation_seat_id(reservation_id: uuid.UUID, session_seat_id: uuid.UUID) -> str:
    """The id of one seat of a reservation: derived from the pair (stable, not stored), in UUID v4 form. The
    reservation id, its bits rotated, XOR the seat's: two random ids give a new random-looking one, and one
    reservation's seats never share it."""
    rotated = ((reservation_id.int << 64) | (reservation_id.int >> 64)) & _MASK_128
    return str(uuid.UUID(int=rotated ^ session_seat_id.int, version=4))


def user_json(row: Row) -> dict[str, Any]:
    created = timestamp(row["created_at"])
    return {"id": str(row["id"]), "name": row["name"], "email": row["email"], "createdAt": created,
            "updatedAt": created}


def room_json(row: Row) -> dict[str, Any]:
    created = timestamp(row["created_at"])
    return {"id": str(row["id"]), "name": row["name"], "capacity": row["capacity"], "status": ROOM_STATUS,
            "createdAt": created, "updatedAt": created}


def seat_json(seat_id: uuid.UUID, row_label: str, seat_number: int, room_id: uuid.UUID,
              room_created_at: datetime | str) -> dict[str, Any]:
    created = timestamp(room_created_at)
    return {"id": str(seat_id), "roomId": str(room_id), "rowLabel": row_label, "seatNumber": seat_number,
            "createdAt": created, "updatedAt": created}


def session_json(row: Row) -> dict[str, Any]:
    created = timestamp(row["created_at"])
    return {
        "id": str(row["id"]), "movieTitle": row["movie_title"],
        "startShowTime": timestamp(row["start_show_time"]), "endShowTime": timestamp(row["end_show_time"]),
        "roomId": str(row["room_id"]), "ticketPrice": amount(row["ticket_price"]),
        "createdAt": created, "updatedAt": created,
    }


def session_seat_json(row: Row, room_created_at: datetime | str) -> dict[str, Any]:
    """A seat of one session, with its physical seat. `row`: id, session_id, seat_id, status, version,
    room_id, row_label, seat_number (`SESSION_SEAT_COLUMNS`)."""
    return {
        "id": str(row["id"]), "sessionId": str(row["session_id"]), "seatId": str(row["seat_id"]),
        "status": row["status"], "version": row["version"],
        "seat": seat_json(row["seat_id"], row["row_label"], row["seat_number"], row["room_id"], room_created_at),
    }


def reservation_json(row: Row, seats: Sequence[Row]) -> dict[str, Any]:
    """A reservation with its seats, both ours (`seats`) and the StarSoft API's (`reservationSeats`,
    `seatLabels`). `row`: id, user_id, session_id, status, expires_at, created_at, updated_at, idempotency_key;
    `seats`: its session seats in seat order, with `room_created_at`."""
    reservation_uuid = row["id"]
    reservation_id = str(reservation_uuid)
    return {
        "id": reservation_id, "userId": str(row["user_id"]), "sessionId": str(row["session_id"]),
        "status": row["status"], "expiresAt": timestamp(row["expires_at"]),
        "idempotencyKey": row["idempotency_key"],
        "createdAt": timestamp(row["created_at"]), "updatedAt": timestamp(row["updated_at"]),
        "seats": [{"id": str(s["id"]), "rowLabel": s["row_label"], "seatNumber": s["seat_number"]} for s in seats],
        "reservationSeats": [
            {"id": reservation_seat_id(reservation_uuid, s["id"]), "reservationId": reservation_id,
             "sessionSeatId": str(s["id"]), "sessionSeat": session_seat_json(s, s["room_created_at"])}
            for s in seats
        ],
        "seatLabels": [f"{s['row_label']}{s['seat_number']}" for s in seats],
    }


def sale_json(row: Row, reservation: dict[str, Any], user: dict[str, Any] | None) -> dict[str, Any]:
    """A sale: our fields (the session's title and start, the seats) and the StarSoft API's nested
    `reservation` (with its `session`) and `user`. `row`: id, reservation_id, user_id, session_id,
    total_amount, confirmed_at."""
    confirmed = timestamp(row["confirmed_at"])
    session = reservation["session"]
    out = {
        "id": str(row["id"]), "reservationId": str(row["reservation_id"]), "userId": str(row["user_id"]),
        "sessionId": str(row["session_id"]), "movieTitle": session["movieTitle"],
        "startShowTime": session["startShowTime"], "totalAmount": amount(row["total_amount"]),
        "confirmedAt": confirmed, "createdAt": confirmed, "seats": reservation["seats"],
        "reservation": reservation,
    }
    if user is not None:
        out["user"] = user
    return out
