"""Every Redis key of boxoffice, in one place.

Seat keys carry the hash tag `{s:<session_id>}` so one session's keys share a Redis Cluster slot and
the multi-key Lua scripts run unchanged on a cluster.
"""

from __future__ import annotations

import uuid

PREFIX = "bx"
# Set when the gate is rebuilt from PostgreSQL; its absence means Redis lost its data (flush, restart).
GATE_EPOCH = f"{PREFIX}:gate:epoch"


def seat_key(session_id: uuid.UUID | str, session_seat_id: uuid.UUID | str) -> str:
    return f"{PREFIX}:seat:{{s:{session_id}}}:{session_seat_id}"


def rate_key(scope: str, who: str) -> str:
    return f"{PREFIX}:rate:{scope}:{who}"


def address_seats_key(address: str) -> str:
    """The seats one client address holds within a hold's lifetime (storage.limits)."""
    return f"{PREFIX}:addr-seats:{address}"
