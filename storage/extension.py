"""Hold extension: a buyer extends a PENDING hold once, by HOLD_EXTENSION_SECONDS (at most
MAX_EXTENSION_SECONDS), unless buyers wait for the session.

One atomic statement in PostgreSQL (`bx_extend`: the row lock decides the race with the expiry sweep, which
skips a locked row; whichever commits first wins, the other sees its outcome), then the Redis gate's seat
keys follow the new expiry (`lua/extend.lua`). REST and the socket both call `HoldExtender.extend`.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from core import metrics
from core.aio import within
from core.errors import Conflict, DomainError, HoldExpired, NotPending, Unprocessable
from storage.booking import Actor, Booking
from storage.faults import REDIS_FAULTS
from storage.redis_gate import RedisGate
from storage.redis_keys import epoch_ms
from storage.rows import Reservation

log = logging.getLogger("boxoffice.extension")

MAX_EXTENSION_SECONDS = 300  # the cap: whatever HOLD_EXTENSION_SECONDS says, a hold gains at most this
EXTEND_LUA = Path(__file__).parent / "lua" / "extend.lua"


class AlreadyExtended(Conflict):
    code, message = "already_extended", "This hold was already extended once"


class ExtensionNotAllowed(Conflict):
    code, message = "extension_not_allowed", "Holds of this session cannot be extended while buyers wait for seats"

    def __init__(self, reason: str) -> None:
        super().__init__(details={"reason": reason})


class ExtensionDisabled(Unprocessable):
    code, message = "extension_disabled", "Hold extension is turned off on this server"


async def extension_refusal(booking: Booking, session_id: uuid.UUID) -> str | None:
    """Why holds of this session may not be extended now, or None when they may: the one place of the rule.

    "waiting_list": buyers wait on the session's waiting list (storage/waitlist.py); bx_extend checks it again
    inside its transaction, under the line's lock, so a join in flight is seen. "waiting_room": the session's
    waiting room is on (storage/waiting_room.py): the buyers in it are waiting for these seats' time too.
    """
    if booking.waiting_room is not None and await booking.waiting_room.inlet(session_id) is not None:
        return "waiting_room"
    waiting = await booking.pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM waitlist_entries WHERE session_id = $1 AND status = 'WAITING')", session_id)
    if waiting:
        return "waiting_list"
    return None


def _refused(exc: BaseException) -> DomainError | None:
    message = getattr(exc, "message", "") or ""
    if isinstance(exc, asyncpg.PostgresError) and (getattr(exc, "sqlstate", "") or "").startswith("BX"):
        if message == "already_extended":
            return AlreadyExtended()
        if message == "extension_not_allowed":
            return ExtensionNotAllowed(getattr(exc, "detail", "") or "waiting_list")
    return None


class HoldExtender:
    """Extends holds through one booking (its pool, gate and error mapping)."""

    def __init__(self, booking: Booking, extension_seconds: int) -> None:
        self.booking = booking
        self.extension_ms = max(0, min(extension_seconds, MAX_EXTENSION_SECONDS)) * 1000
        gate = booking.gate
        self._extend = gate.client.register_script(EXTEND_LUA.read_text()) if isinstance(gate, RedisGate) else None

    async def extend(self, actor: Actor, reservation_id: uuid.UUID) -> Reservation:
        """Extend the hold once; the reservation with its new expiresAt. Errors: 404 reservation_not_found,
        403 not_owner, 410 hold_expired, 409 not_pending, already_extended, extension_not_allowed (details.reason),
        422 extension_disabled."""
        if not self.extension_ms:
            raise ExtensionDisabled()
        booking = self.booking
        held = await booking.get_reservation(reservation_id, actor)  # 404, 403
        if held.status == "EXPIRED" or (held.status == "PENDING" and held.expires_at <= datetime.now(UTC)):
            metrics.HOLD_EXTENSIONS.labels("expired").inc()
            raise HoldExpired()
        if held.status != "PENDING":
            raise NotPending(f"The reservation is {held.status}", details={"status": held.status})
        reason = await extension_refusal(booking, held.session_id)
        if reason is not None:
            metrics.HOLD_EXTENSIONS.labels("refused").inc()
            raise ExtensionNotAllowed(reason)
        try:
            row = await booking.pool.fetchrow(
                "SELECT session_id, seat_ids, expires_at FROM bx_extend($1, $2, $3, $4)",
                reservation_id, actor.user_id, actor.check_owner, self.extension_ms)
        except BaseException as exc:
            error = _refused(exc) or booking._map_db_error(exc)
            metrics.HOLD_EXTENSIONS.labels(error.code if error else "error").inc()
            if error is None:
                raise
            raise error from None
        metrics.HOLD_EXTENSIONS.labels("ok").inc()
        await self._follow_in_gate(row["session_id"], row["seat_ids"], reservation_id, epoch_ms(row["expires_at"]))
        return await booking.get_reservation(reservation_id, actor)

    async def _follow_in_gate(self, session_id: uuid.UUID, seat_ids: list[uuid.UUID], owner: uuid.UUID,
                              expire_at_ms: int) -> None:
        """The seat keys expire with the extended hold. Best effort: a key that expires early lets a buyer through
        to PostgreSQL, which refuses them, and the gate is repaired with the hold's true expiry."""
        if self._extend is None or not seat_ids:
            return
        keys = RedisGate.keys(session_id, seat_ids)  # the gate's own key list (its taken set first, where it has one)
        try:
            await within(self.booking.gate_timeout, self._extend(keys=keys, args=[str(owner), expire_at_ms]))
        except REDIS_FAULTS as exc:
            log.warning("could not extend the gate keys of %s: %r", owner, exc)
