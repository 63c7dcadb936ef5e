"""Storage rows -> wire shapes: every REST body, socket payload and integration event that carries a row is
built here, with the StarSoft API's fields (SEED_API.md section 2) beside ours.

Rooms, seats, sessions and users never change once created, so their `updatedAt` is their `createdAt`; a
seat is created with its room (same transaction) and carries the room's time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from storage.rows import Reservation, Room, Sale, Seat, SeatMap, Session, SessionSeat, User
from storage.waiting_room import Inlet, Place

Body = dict[str, Any]


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


def user(row: User) -> Body:
    created = timestamp(row.created_at)
    return {"id": str(row.id), "name": row.name, "email": row.email, "createdAt": created, "updatedAt": created}


def seat(row: Seat) -> Body:
    """Ours: a seat by its labels (in reservations and sales, `id` is the session seat's)."""
    return {"id": str(row.id), "rowLabel": row.row_label, "seatNumber": row.seat_number}


def room_seat(seat_id: uuid.UUID, row_label: str, seat_number: int, room_id: uuid.UUID,
              room_created_at: datetime) -> Body:
    """A seat of a room (the StarSoft API's Seat)."""
    created = timestamp(room_created_at)
    return {"id": str(seat_id), "roomId": str(room_id), "rowLabel": row_label, "seatNumber": seat_number,
            "createdAt": created, "updatedAt": created}


def room(row: Room) -> Body:
    created = timestamp(row.created_at)
    out: Body = {"id": str(row.id), "name": row.name, "capacity": row.capacity, "status": ROOM_STATUS,
                 "createdAt": created, "updatedAt": created}
    if row.seats is not None:
        out["seats"] = [room_seat(s.id, s.row_label, s.seat_number, row.id, row.created_at) for s in row.seats]
    if row.seat_count is not None:
        out["_count"] = {"seats": row.seat_count}
    return out


def session_seat(row: SessionSeat) -> Body:
    """A seat of one session, with its room's seat (`id` is what `sessionSeatIds` take)."""
    return {"id": str(row.id), "sessionId": str(row.session_id), "seatId": str(row.seat_id), "status": row.status,
            "version": row.version,
            "seat": room_seat(row.seat_id, row.row_label, row.seat_number, row.room_id, row.room_created_at)}


def session(row: Session) -> Body:
    created = timestamp(row.created_at)
    out: Body = {
        "id": str(row.id), "movieTitle": row.movie_title,
        "startShowTime": timestamp(row.start_show_time), "endShowTime": timestamp(row.end_show_time),
        "roomId": str(row.room_id), "ticketPrice": amount(row.ticket_price),
        "createdAt": created, "updatedAt": created,
    }
    if row.room is not None:
        out["room"] = room(row.room)
    if row.free_seats is not None:
        out["_count"] = {"sessionSeats": row.free_seats}
    if row.seats is not None:
        out["sessionSeats"] = [session_seat(s) for s in row.seats]
    return out


def seat_map(row: SeatMap) -> Body:
    the_room = room(row.room)
    return {"session": {**session(row.session), "room": the_room}, "room": the_room,
            "seats": [session_seat(s) for s in row.seats]}


def held(row: Reservation, stranded: Sequence[uuid.UUID]) -> Body:
    """A hold's answer (REST 201, the socket's `hold.ok` reservation): the reservation, and when the hold leaves
    free seats alone, `warnings` (docs/beyond.md: the no-orphan rule warns, it does not refuse)."""
    out = reservation(row)
    if stranded:
        out["warnings"] = [{"code": "seats_stranded", "message": "This hold leaves single seats alone beside it",
                            "sessionSeatIds": [str(s) for s in stranded]}]
    return out


def reservation(row: Reservation, with_user: bool = True) -> Body:
    """A reservation (REST body, the socket's `hold.ok`) with its seats, both ours (`seats`) and the StarSoft
    API's (`reservationSeats`, `seatLabels`), and its session and user when read."""
    reservation_id = str(row.id)
    out: Body = {
        "id": reservation_id, "userId": str(row.user_id), "sessionId": str(row.session_id), "status": row.status,
        "expiresAt": timestamp(row.expires_at), "idempotencyKey": row.idempotency_key,
        "createdAt": timestamp(row.created_at), "updatedAt": timestamp(row.updated_at),
        "seats": [{"id": str(s.id), "rowLabel": s.row_label, "seatNumber": s.seat_number} for s in row.seats],
        "reservationSeats": [
            {"id": reservation_seat_id(row.id, s.id), "reservationId": reservation_id, "sessionSeatId": str(s.id),
             "sessionSeat": session_seat(s)}
            for s in row.seats
        ],
        "seatLabels": [f"{s.row_label}{s.seat_number}" for s in row.seats],
    }
    if row.session is not None:
        out["session"] = session(row.session)
    if with_user and row.user is not None:
        out["user"] = user(row.user)
    return out


def sale(row: Sale) -> Body:
    """A sale: ours (the session's title and start, the seats) and the StarSoft API's nested `reservation`
    (with its session and seats) and `user`."""
    confirmed = timestamp(row.confirmed_at)
    nested = reservation(row.reservation, with_user=False)
    out: Body = {
        "id": str(row.id), "reservationId": str(row.reservation_id), "userId": str(row.user_id),
        "sessionId": str(row.session_id), "movieTitle": nested["session"]["movieTitle"],
        "startShowTime": nested["session"]["startShowTime"], "totalAmount": amount(row.total_amount),
        "confirmedAt": confirmed, "createdAt": confirmed, "seats": nested["seats"], "reservation": nested,
    }
    if row.reservation.user is not None:
        out["user"] = user(row.reservation.user)
    return out


def user_detail(row: User, reservations: Sequence[Reservation]) -> Body:
    """A user with their reservations (each with its seats and session)."""
    return {**user(row), "reservations": [reservation(r, with_user=False) for r in reservations]}


def snapshot(rows: Sequence[asyncpg.Record], session_id: str, user_id: str | None, node_id: str,
             hold_ttl_seconds: int, watchers: int | None = None) -> Body:
    """The socket's `snapshot` message, from the seat-map records of `storage.catalog.seat_rows` (kept as
    records: a snapshot renders thousands of them); `mine` marks the seats the socket's user holds or bought;
    `watchers` is how many sockets watch the session over every node (docs/beyond.md)."""
    extra: Body = {} if watchers is None else {"watchers": watchers}
    return {
        "type": "snapshot", "sessionId": session_id, "nodeId": node_id, "serverTime": int(time.time() * 1000),
        "holdTtlSeconds": hold_ttl_seconds, **extra,
        "seats": [
            {"id": str(r["id"]), "status": r["status"], "version": r["version"], "rowLabel": r["row_label"],
             "seatNumber": r["seat_number"],
             "mine": user_id is not None and r["user_id"] is not None and str(r["user_id"]) == user_id}
            for r in rows
        ],
    }


def queue_place(session_id: uuid.UUID, place: Place | None) -> Body:
    """A buyer's place in a session's waiting room (None: the session has none, hold at once)."""
    if place is None:
        return {"sessionId": str(session_id), "enabled": False, "position": None, "ahead": 0,
                "estimatedWaitSeconds": 0, "admitted": True, "admission": None, "admissionExpiresAt": None}
    expires = place.admission_expires_at
    return {"sessionId": str(session_id), "enabled": True, "position": place.position, "ahead": place.ahead,
            "estimatedWaitSeconds": place.wait_seconds, "admitted": place.admitted, "admission": place.admission,
            "admissionExpiresAt": None if expires is None else timestamp(datetime.fromtimestamp(expires, UTC))}


def queue_state(session_id: uuid.UUID, inlet: Inlet | None) -> Body:
    """A session's waiting room as an admin set it (or as it turned itself on: `auto`)."""
    return {"sessionId": str(session_id), "enabled": inlet is not None, "inlet": None if inlet is None else inlet.kind,
            "rate": None if inlet is None else inlet.rate, "capacity": None if inlet is None else inlet.capacity,
            "auto": bool(inlet and inlet.auto)}
