"""The waiting list of a sold-out session: buyers wait in line for N seats; seats that come back go to the first
buyer whose request fits, as a hold of their own.

PostgreSQL rows (`waitlist_entries`), not Redis: the hand-over must be part of the release that frees the
seats, and a release is a PostgreSQL transaction. bx_release and bx_expire_due serve the line in the same
transaction (storage/migrations/001_baseline.sql), so no crash can fall between "seats freed"
and "offered"; the offer's outbox row tells the buyer's socket on any node (realtime/waitlist.py). The order
is the entries' bigserial id, served under a per-session lock: first come, first served on every node.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from core.errors import Conflict, DomainError, NotFound, RateLimited, ValidationFailed
from storage.booking import Booking
from storage.offers import hand_over
from storage.waitlist_line import LineOrder


class NotOnWaitlist(NotFound):
    code, message = "not_on_waitlist", "You are not on the waiting list of this session"


class SeatsAvailable(Conflict):
    code, message = "seats_available", "Enough seats are free for this request: pick them on the seat map"


class AddressWaitsEnough(RateLimited):
    code, message = "address_quota_exceeded", "This address already waits for as many seats on this show as it may"


@dataclass(frozen=True, slots=True)
class WaitlistEntry:
    id: int
    session_id: uuid.UUID
    user_id: uuid.UUID
    quantity: int
    status: str  # WAITING, OFFERED or LEFT
    position: int | None  # 1 = first in line; None once no longer waiting
    waiting: int  # buyers waiting on this session's list in all
    reservation_id: uuid.UUID | None  # the hold made for this entry once OFFERED
    created_at: datetime
    updated_at: datetime


ENTRY_SQL = """
SELECT w.id, w.session_id, w.user_id, w.quantity, w.status, w.reservation_id, w.created_at, w.updated_at,
       (SELECT l.version FROM waitlist_lines l WHERE l.session_id = w.session_id) AS line_version
FROM waitlist_entries w
WHERE {where}
ORDER BY w.id DESC LIMIT 1
"""


class Waitlist:
    """Join, leave, read one's place, and the backstop sweep; through one booking (pool, gate, error mapping)."""

    def __init__(self, booking: Booking, max_quantity: int, max_address_seats: int = 0) -> None:
        self.booking = booking
        self.max_quantity = max_quantity
        self.max_address_seats = max_address_seats  # MAX_SEATS_PER_ADDRESS: seats one address waits for per show
        self.line = LineOrder(booking.pool)  # places in line without counting the line per read

    async def join(self, user_id: uuid.UUID, session_id: uuid.UUID, quantity: int,
                   address: str = "") -> tuple[WaitlistEntry, bool]:
        """A place in line for `quantity` seats; (entry, created). Joining again returns the same place (its
        quantity as first asked). Refused 409 seats_available while that many seats are free, and 429
        hold_quota_exceeded while the user's held seats and `quantity` pass MAX_SEATS_PER_USER (the seats held for
        them when served count against it too: bx_waitlist_serve skips them while they hold too many), and 429
        address_quota_exceeded while the places of `address` on this show and `quantity` pass MAX_SEATS_PER_ADDRESS."""
        if not 1 <= quantity <= self.max_quantity:
            raise ValidationFailed(f"A waiting-list place asks for 1 to {self.max_quantity} seats",
                                   code="invalid_seat_count", details={"count": quantity, "max": self.max_quantity})
        try:
            row = await self.booking.pool.fetchrow(
                "SELECT entry_id, created FROM bx_waitlist_join($1, $2, $3, $4, $5, $6, $7)",
                session_id, user_id, quantity, self.booking.hold_ttl_ms, self.booking.max_seats_per_user,
                address, self.max_address_seats)
        except BaseException as exc:
            raise self._mapped(exc) from None
        entry = await self._read("w.id = $1", row["entry_id"])
        if entry is None:  # committed above: gone only if its session was deleted meanwhile
            raise NotOnWaitlist()
        return entry, bool(row["created"])

    async def leave(self, user_id: uuid.UUID, session_id: uuid.UUID) -> None:
        """Give up one's place (404 not_on_waitlist when not waiting)."""
        try:
            await self.booking.pool.fetchval("SELECT bx_waitlist_leave($1, $2)", session_id, user_id)
        except BaseException as exc:
            raise self._mapped(exc) from None

    async def entry(self, user_id: uuid.UUID, session_id: uuid.UUID) -> WaitlistEntry:
        """The user's latest entry on this session's list: waiting (with its place) or offered (with its hold)."""
        found = await self._read("w.session_id = $1 AND w.user_id = $2 AND w.status <> 'LEFT'", session_id, user_id)
        if found is None:
            raise NotOnWaitlist()
        return found

    async def _read(self, where: str, *args: object) -> WaitlistEntry | None:
        row = await self.booking.pool.fetchrow(ENTRY_SQL.format(where=where), *args)
        if row is None:
            return None
        position, waiting = await self.line.place(row["session_id"], row["id"], row["line_version"])
        return WaitlistEntry(row["id"], row["session_id"], row["user_id"], row["quantity"], row["status"],
                             position if row["status"] == "WAITING" else None, waiting, row["reservation_id"],
                             row["created_at"], row["updated_at"])

    async def sweep(self) -> int:
        """Serve every line that waits while seats are free (the backstop of the hand-over in each release);
        return how many offers were made."""
        rows = await self.booking.pool.fetch("SELECT session_id, offers FROM bx_waitlist_sweep()")
        made = 0
        for row in rows:
            made += len(row["offers"] or ())
            await hand_over(self.booking.gate, row["session_id"], row["offers"], self.booking.gate_timeout)
        if made:
            self.booking.on_commit()
        return made

    def _mapped(self, exc: BaseException) -> BaseException:
        message = getattr(exc, "message", "") or ""
        if isinstance(exc, asyncpg.PostgresError) and (getattr(exc, "sqlstate", "") or "").startswith("BX"):
            if message == "seats_available":
                return SeatsAvailable(details={"available": int(getattr(exc, "detail", "") or 0)})
            if message == "not_on_waitlist":
                return NotOnWaitlist()
            if message == "address_quota_exceeded":  # places leave the line as holds end: retry after one
                wait = str(max(1, self.booking.hold_ttl_ms // 1000))
                return AddressWaitsEnough(details={"maxSeatsPerAddress": self.max_address_seats,
                                                   "waiting": int(getattr(exc, "detail", "") or 0)},
                                          headers={"Retry-After": wait})
        error: DomainError | None = self.booking._map_db_error(exc)
        return error if error is not None else exc
