"""Storage rows -> wire shapes: every REST body and socket payload that carries a row is built here."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from storage.rows import Reservation, Room, Sale, Seat, SeatMap, Session, User
from storage.waiting_room import Place

Body = dict[str, Any]


def user(row: User) -> Body:
    return {"id": str(row.id), "name": row.name, "email": row.email, "createdAt": row.created_at.isoformat()}


def seat(row: Seat) -> Body:
    return {"id": str(row.id), "rowLabel": row.row_label, "seatNumber": row.seat_number}


def room(row: Room) -> Body:
    out: Body = {"id": str(row.id), "name": row.name, "capacity": row.capacity}
    if row.seats is not None:
        out["seats"] = [seat(s) for s in row.seats]
    return out


def session(row: Session) -> Body:
    return {
        "id": str(row.id),
        "movieTitle": row.movie_title,
        "startShowTime": row.start_show_time.isoformat(),
        "endShowTime": row.end_show_time.isoformat(),
        "roomId": str(row.room_id),
        "ticketPrice": float(row.ticket_price),
    }


def seat_map(row: SeatMap) -> Body:
    return {
        "session": session(row.session),
        "room": room(row.room),
        "seats": [{"id": str(s.id), "status": s.status, "version": s.version, "seat": seat(s.seat)}
                  for s in row.seats],
    }


def reservation(row: Reservation) -> Body:
    """A reservation (REST body and the socket's `hold.ok`); a hold just written has no createdAt."""
    out: Body = {"id": str(row.id), "userId": str(row.user_id), "sessionId": str(row.session_id),
                 "status": row.status, "expiresAt": row.expires_at.isoformat()}
    if row.created_at is not None:
        out["createdAt"] = row.created_at.isoformat()
    out["seats"] = [seat(s) for s in row.seats]
    return out


def sale(row: Sale) -> Body:
    return {"id": str(row.id), "reservationId": str(row.reservation_id), "userId": str(row.user_id),
            "sessionId": str(row.session_id), "movieTitle": row.movie_title,
            "startShowTime": row.start_show_time.isoformat(), "totalAmount": float(row.total_amount),
            "confirmedAt": row.confirmed_at.isoformat(), "seats": [seat(s) for s in row.seats]}


def snapshot(rows: Sequence[asyncpg.Record], session_id: str, user_id: str | None, node_id: str,
             hold_ttl_seconds: int) -> Body:
    """The socket's `snapshot` message, from the seat-map records of `storage.catalog.seat_rows` (kept as
    records: a snapshot renders thousands of them); `mine` marks the seats the socket's user holds or bought."""
    return {
        "type": "snapshot", "sessionId": session_id, "nodeId": node_id, "serverTime": int(time.time() * 1000),
        "holdTtlSeconds": hold_ttl_seconds,
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
            "admissionExpiresAt": None if expires is None else datetime.fromtimestamp(expires, UTC).isoformat()}
