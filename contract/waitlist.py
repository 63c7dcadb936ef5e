"""Wire shapes of the waiting list: an entry (REST body and the socket's `waitlist.joined`) and the offer pushed
to the buyer's sockets when seats were held for them (`waitlist.offer`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from contract.shapes import Body, timestamp
from storage.waitlist import WaitlistEntry


def entry(row: WaitlistEntry) -> Body:
    """`position` is 1 for the first in line (null once the entry no longer waits); `ahead` = position - 1."""
    return {
        "id": str(row.id), "sessionId": str(row.session_id), "userId": str(row.user_id), "quantity": row.quantity,
        "status": row.status, "position": row.position,
        "ahead": row.position - 1 if row.position is not None else None, "waiting": row.waiting,
        "reservationId": str(row.reservation_id) if row.reservation_id else None,
        "createdAt": timestamp(row.created_at), "updatedAt": timestamp(row.updated_at),
    }


def _at(ms: int) -> str:
    return timestamp(datetime.fromtimestamp(ms / 1000, UTC))


def offer(event: dict[str, Any]) -> Body:
    """The `waitlist.offer` socket message of a reservation.created outbox event that carries `waitlist`: the hold
    in the contract's reservation shape (id, userId, sessionId, status, expiresAt, seats)."""
    made = event["waitlist"]
    return {
        "type": "waitlist.offer", "sessionId": str(event["sessionId"]), "entryId": str(made["entryId"]),
        "quantity": made["quantity"],
        "reservation": {
            "id": str(event["reservationId"]), "userId": str(event["userId"]), "sessionId": str(event["sessionId"]),
            "status": "PENDING", "expiresAt": _at(int(made["expiresAtMs"])), "createdAt": _at(int(made["createdAtMs"])),
            "seats": [{"id": s["id"], "rowLabel": s["rowLabel"], "seatNumber": s["seatNumber"]} for s in made["seats"]],
        },
    }
