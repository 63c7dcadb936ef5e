"""Seats a release handed to the waiting list, written into the Redis gate as the new holds' keys.

PostgreSQL made the offers in the release's own transaction (bx_waitlist_serve); here the gate learns who
holds those seats now, so other buyers are turned away in Redis as for any hold. Best effort, like every gate
write: when Redis does not answer, a buyer let through is refused by PostgreSQL and the gate is repaired.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from core import metrics
from core.aio import within
from storage.faults import REDIS_FAULTS
from storage.redis_gate import GateEntry, SeatGate

log = logging.getLogger("boxoffice.waitlist")


def gate_entries(session_id: uuid.UUID, offers: Sequence[dict[str, Any]] | None) -> list[GateEntry]:
    """The seat keys the offers' holds should have: (session, seat, 'H:<reservation>', expire-at ms)."""
    return [(session_id, uuid.UUID(seat), f"H:{offer['reservationId']}", int(offer["expiresAtMs"]))
            for offer in offers or () for seat in offer["seatIds"]]


async def hand_over(gate: SeatGate, session_id: uuid.UUID, offers: Sequence[dict[str, Any]] | None,
                    within_seconds: float) -> None:
    """Write the offered holds' seat keys (after the released holds' keys were deleted: only missing keys are
    set, so a newer key is never overwritten)."""
    entries = gate_entries(session_id, offers)
    if not entries:
        return
    metrics.WAITLIST_OFFERS.inc(len(offers or ()))

    async def owners() -> list[GateEntry]:
        return entries

    try:
        await within(within_seconds, gate.repair(owners))
    except REDIS_FAULTS as exc:  # PostgreSQL refuses others meanwhile
        log.warning("could not write the gate keys of %d waiting-list holds: %r", len(offers or ()), exc)
