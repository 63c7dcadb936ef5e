"""Every Redis key of boxoffice, in one place.

Seat keys carry the hash tag `{s:<session_id>}` so one session's keys share a Redis Cluster slot and
the multi-key Lua scripts run unchanged on a cluster.
"""

from __future__ import annotations

import uuid
from datetime import datetime

PREFIX = "bx"
# Set when the gate is rebuilt from PostgreSQL; its absence means Redis lost its data (flush, restart).
GATE_EPOCH = f"{PREFIX}:gate:epoch"


def seat_key(session_id: uuid.UUID | str, session_seat_id: uuid.UUID | str) -> str:
    return f"{PREFIX}:seat:{{s:{session_id}}}:{session_seat_id}"


def seat_key_prefix(session_id: uuid.UUID | str) -> str:
    """A seat key without its seat id (lua/hold_best.lua makes the keys of the seats it chooses)."""
    return f"{PREFIX}:seat:{{s:{session_id}}}:"


def taken_key(session_id: uuid.UUID | str) -> str:
    """The session's taken seats, kept by every gate script beside the seat keys: a sorted set of seat ids
    scored by when their key ends (ms), so best available reads one key instead of every seat's."""
    return f"{PREFIX}:taken:{{s:{session_id}}}"


def layout_key(session_id: uuid.UUID | str) -> str:
    """The session's seats in seat order, row by row (lua/hold_best.lua; written once, kept until the show
    ends): `rows` (lengths), `ids` (the seat ids, 36 characters each) and each seat id's position."""
    return f"{PREFIX}:layout:{{s:{session_id}}}"

# A seat key's value: `H:<reservation>` while held (until the hold expires), `S:<reservation>` once sold
# (until the show ends, plus this grace). The Lua scripts write the same values.
SOLD_KEY_GRACE_MS = 3_600_000  # an hour


def epoch_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def sold_until_ms(end_show_time: datetime) -> int:
    """When a sold seat's key may go: the show is over. Added in integer milliseconds, so no stored show time
    overflows it (a datetime plus an hour past 9999-12-31 would)."""
    return epoch_ms(end_show_time) + SOLD_KEY_GRACE_MS


def seat_value(status: str, reservation_id: uuid.UUID, expires_at: datetime,
               end_show_time: datetime) -> tuple[str, int]:
    """The gate's (value, expire-at ms) for a seat PostgreSQL has RESERVED or SOLD."""
    if status == "RESERVED":
        return f"H:{reservation_id}", epoch_ms(expires_at)
    return f"S:{reservation_id}", sold_until_ms(end_show_time)


def address_seats_key(address: str) -> str:
    """The seats one client address holds within a hold's lifetime (storage.limits)."""
    return f"{PREFIX}:addr-seats:{address}"


def presence_key(session_id: uuid.UUID | str) -> str:
    """Hash of the watchers of a session: node id -> "<sockets>:<expire-at ms>" (lua/presence.lua)."""
    return f"{PREFIX}:presence:{{s:{session_id}}}"


def queue_keys(session_id: uuid.UUID | str) -> list[str]:
    """The waiting room of a session (storage/lua/queue.lua): the line, the order of places, the last-seen times,
    who is inside (the capacity inlet). One hash tag, so they share a Redis Cluster slot."""
    tag = f"{PREFIX}:queue:{{q:{session_id}}}"
    return [f"{tag}:line", f"{tag}:order", f"{tag}:seen", f"{tag}:inside"]


def demand_key(session_id: uuid.UUID | str) -> str:
    """Hold attempts per second on a session without a waiting room, counted by every node (storage.queue_auto)."""
    return f"{PREFIX}:queue:{{q:{session_id}}}:demand"
