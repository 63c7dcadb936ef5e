"""Integration events: the StarSoft API's business events (SEED_API.md 4.1) on its topics, for other services.

They are not a second outbox: each is derived from one domain event of the outbox (`seat-events` carries the
same rows unchanged), by the relay that publishes that row, in the same pass, before the row is marked
published. So they are never lost (a row left unpublished is published again, with them) and never invented
(only a committed row has them). What a domain event does not carry is read from rows that never change once
written (a reservation's ids, times and seats, a sale), so a late publish says what the commit said: a
reservation's status and its seats' status and version come from the event, not from the row's state now.

Beside that API's fields, each message carries those its own consumers read but never got (SEED_API.md 8.4):
`userId`, `sessionId`, `seatIds` (the session-seat ids, as `sessionSeatIds`), `reservationId`, `expiredAt`,
`soldAt`; decimals are JSON numbers, as in REST.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from contract import shapes
from storage import details

RESERVATIONS_TOPIC = "reservations-topic"
CINEMA_RESERVATIONS = "cinema.reservations"
CINEMA_SALES = "cinema.sales"
CINEMA_SEATS = "cinema.seats"
TOPICS = (RESERVATIONS_TOPIC, CINEMA_RESERVATIONS, CINEMA_SALES, CINEMA_SEATS)

SALES_SQL = "SELECT id, reservation_id, total_amount, confirmed_at FROM sales WHERE reservation_id = ANY($1::uuid[])"


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def _message(topic: str, key: str | None, value: dict[str, Any], committed_ms: int) -> Message:
    return Message(topic, key.encode() if key is not None else None, json.dumps(value).encode(),
                   [("timestamp", str(committed_ms).encode())])


def _seat_ids(event: dict[str, Any]) -> list[str]:
    return [str(change["id"]) for change in event["changes"]]


def _created(event: dict[str, Any], reservation: dict[str, Any]) -> dict[str, Any]:
    """The reservation as its hold committed it: PENDING, its seats RESERVED at the event's versions."""
    changes = {str(c["id"]): c for c in event["changes"]}
    seats = []
    for seat in reservation["reservationSeats"]:
        change = changes.get(seat["sessionSeatId"], {})
        seats.append({**seat, "sessionSeat": {**seat["sessionSeat"], "status": change.get("status", "RESERVED"),
                                              "version": change.get("version", seat["sessionSeat"]["version"])}})
    fields = ("id", "userId", "sessionId", "expiresAt", "idempotencyKey", "createdAt")
    return {"event": "CREATED", **{k: reservation[k] for k in fields}, "status": "PENDING",
            "updatedAt": reservation["createdAt"], "reservationSeats": seats, "reservationId": reservation["id"],
            "seatIds": [s["sessionSeatId"] for s in seats]}


def _released(event: dict[str, Any], at: str) -> tuple[str, dict[str, Any]]:
    seats = _seat_ids(event)
    base = {"reservationId": str(event["reservationId"]), "sessionSeatIds": seats, "userId": str(event["userId"]),
            "sessionId": str(event["sessionId"]), "seatIds": seats}
    if event["type"] == "reservation.cancelled":
        return RESERVATIONS_TOPIC, {"eventType": "RESERVATION_CANCELLED", **base, "cancelledAt": at}
    return CINEMA_RESERVATIONS, {"eventType": "reservation.expired", **base, "expiredAt": at}


async def messages(con: asyncpg.Connection | asyncpg.Pool, payloads: Sequence[str]) -> list[Message]:
    """The integration messages of outbox rows (their payloads, in publish order), in the same order."""
    events = [json.loads(p) for p in payloads]
    created = [uuid.UUID(e["reservationId"]) for e in events if e["type"] == "reservation.created"]
    paid = [uuid.UUID(e["reservationId"]) for e in events if e["type"] == "payment.confirmed"]
    reservations = {str(r.id): shapes.reservation(r) for r in await details.reservations(
        con, "r.id = ANY($1::uuid[])", [created], len(created))} if created else {}
    sales = {str(r["reservation_id"]): r for r in await con.fetch(SALES_SQL, paid)} if paid else {}
    out: list[Message] = []
    for event in events:
        committed_ms = int(event["committedAt"])
        at = shapes.timestamp(datetime.fromtimestamp(committed_ms / 1000, UTC))
        reservation_id = str(event["reservationId"])
        if event["type"] == "reservation.created" and reservation_id in reservations:
            out.append(_message(RESERVATIONS_TOPIC, None, _created(event, reservations[reservation_id]), committed_ms))
        elif event["type"] in ("reservation.cancelled", "reservation.expired"):
            topic, value = _released(event, at)
            out.append(_message(topic, None, value, committed_ms))
        elif event["type"] == "payment.confirmed" and reservation_id in sales:
            sale = sales[reservation_id]
            sale_id, confirmed = str(sale["id"]), shapes.timestamp(sale["confirmed_at"])
            seats = _seat_ids(event)
            out.append(_message(CINEMA_SALES, sale_id, {
                "eventType": "payment.confirmed", "saleId": sale_id, "totalAmount": shapes.amount(sale["total_amount"]),
                "confirmedAt": confirmed, "reservationId": reservation_id, "userId": str(event["userId"]),
                "sessionId": str(event["sessionId"])}, committed_ms))
            out.append(_message(CINEMA_SEATS, str(event["sessionId"]), {
                "eventType": "seat.sold", "sessionId": str(event["sessionId"]), "sessionSeatIds": seats,
                "seatIds": seats, "saleId": sale_id, "soldAt": confirmed, "reservationId": reservation_id,
                "userId": str(event["userId"])}, committed_ms))
    return out
