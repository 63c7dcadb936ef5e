"""Best available seats: hold the N best free seats of a session, chosen and locked in one Redis script
(lua/hold_best.lua, the rules in storage/best_seats.py), then written to PostgreSQL like any hold.

The one implementation REST and the socket both reach, through `contract.limits.hold_within_limits`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from core import ids, metrics
from core.errors import NotFound, SeatsUnavailable, Unprocessable, ValidationFailed
from storage import best_seats
from storage.best_seats import LayoutRow, MapRow
from storage.booking import Booking
from storage.faults import REDIS_FAULTS, RedisUnavailable, redis_fault
from storage.redis_gate import GateInconsistent, Watch
from storage.rows import Reservation

log = logging.getLogger("boxoffice.best")

# A best-available gate key outlives its hold by this much: a hold written slowly (a busy database) must not
# be offered to the next buyer before PostgreSQL has it. The hold's end (expiry sweep, release) deletes the
# key; a sale overwrites it.
BEST_GATE_MARGIN_MS = 5000
BEST_ATTEMPTS = 4  # a choice PostgreSQL refuses (the gate was stale) is made again this often
LAYOUT_CACHE_SEATS = 250_000  # seats of the session layouts a node keeps (about 50 MB; a 5,000-seat layout ~1 MB)


@dataclass(frozen=True)
class SessionLayout:
    """A session's rows of seats in seat order (they never change) and when the show ends."""

    rows: list[LayoutRow]
    end_show_time: datetime

    @property
    def total_rows(self) -> int:
        return len(self.rows)

    @functools.cached_property
    def places(self) -> dict[uuid.UUID, tuple[int, int]]:
        """Each seat's (row, place in the row)."""
        return {seat: (m, c) for m, row in enumerate(self.rows) for c, seat in enumerate(row.seat_ids)}

    def rows_named(self, labels: Sequence[str] | None) -> list[LayoutRow]:
        if not labels:
            return self.rows
        unknown = sorted(set(labels) - {r.label for r in self.rows})
        if unknown:
            raise Unprocessable("Some rows are not in this session's room", code="rows_not_in_session",
                                details={"rows": unknown})
        wanted = set(labels)
        return [r for r in self.rows if r.label in wanted]


def check_best_request(quantity: int, max_seats_per_hold: int) -> None:
    if not 1 <= quantity <= max_seats_per_hold:
        raise ValidationFailed(f"A hold takes 1 to {max_seats_per_hold} seats", code="invalid_seat_count",
                               details={"count": quantity, "max": max_seats_per_hold})


def same_best(quantity: int, rows: Sequence[str] | None) -> Callable[[Reservation], bool]:
    """A best-available request, compared with an earlier reservation made with its idempotency key: as many
    seats, in the rows asked for."""
    wanted = set(rows or ())
    return lambda prior: len(prior.seats) == quantity and (not wanted or {s.row_label for s in prior.seats} <= wanted)


class BestSeats:
    """Best-available holds of one node, over its `Booking` (the same gate, writer and idempotency rules)."""

    def __init__(self, booking: Booking) -> None:
        self.booking = booking
        self._layouts: dict[uuid.UUID, SessionLayout] = {}
        self._seats = 0  # seats of the layouts kept, bounded by LAYOUT_CACHE_SEATS
        self._loading: dict[uuid.UUID, asyncio.Task[SessionLayout]] = {}

    async def hold(self, user_id: uuid.UUID, session_id: uuid.UUID, quantity: int,
                   rows: Sequence[str] | None = None, idempotency_key: str | None = None) -> Reservation:
        """Hold the `quantity` best free seats (of `rows`, if given). Should PostgreSQL know better than the gate
        (Redis flushed), the session's gate is repaired and the choice made again."""
        booking = self.booking
        check_best_request(quantity, booking.max_seats_per_hold)
        same = same_best(quantity, rows)
        if idempotency_key:
            prior = await booking.prior_hold(user_id, session_id, same, idempotency_key)
            if prior is not None:
                return prior
        layout = await self.layout(session_id)
        chosen_rows = layout.rows_named(rows)
        for attempt in range(BEST_ATTEMPTS):
            reservation_id = ids.uuid4()
            seats = await self._choose_and_gate(session_id, layout, chosen_rows, quantity, reservation_id)
            if not seats:
                metrics.HOLDS.labels("conflict").inc()
                raise SeatsUnavailable([], f"Fewer than {quantity} seats are free")
            try:
                return await booking.write_hold(reservation_id, user_id, session_id, seats, idempotency_key, same)
            except SeatsUnavailable:
                if attempt == BEST_ATTEMPTS - 1:
                    raise
                # the gate was stale for some seats, maybe for more: bring the whole map up to date first
                await booking.repair_gate(session_id, None)
        raise AssertionError("unreachable")

    async def _choose_and_gate(self, session_id: uuid.UUID, layout: SessionLayout, rows: Sequence[LayoutRow],
                               quantity: int, reservation_id: uuid.UUID) -> list[uuid.UUID]:
        booking = self.booking
        for _ in range(2):
            try:
                seats = await booking.gate.hold_best(session_id, layout.rows, layout.end_show_time, rows, quantity,
                                                     reservation_id, booking.hold_ttl_ms + BEST_GATE_MARGIN_MS)
            except GateInconsistent:  # its free-seat map disagrees with its seat keys: rebuild both, once
                await booking.repair_gate(session_id, None)
                continue
            except REDIS_FAULTS as exc:
                metrics.HOLDS.labels("redis_unavailable").inc()
                raise redis_fault(exc) from None
            if seats is not None:
                return seats
            # no gate (REDIS_GATE=false): the same choice from PostgreSQL's seat map; PostgreSQL refuses a stale one
            free = {r["id"] for r in await booking.pool.fetch(
                "SELECT id FROM session_seats WHERE session_id = $1 AND status = 'AVAILABLE'", session_id)}
            chosen = best_seats.choose([MapRow(r.index, tuple(s not in free for s in r.seat_ids)) for r in rows],
                                       layout.total_rows, quantity)
            return [rows[m].seat_ids[c] for m, c in chosen or ()]
        metrics.HOLDS.labels("redis_unavailable").inc()
        raise RedisUnavailable()

    async def watch_for(self, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID]) -> Watch | None:
        """What a hold of `seat_ids` should have the gate look at for the no-orphan rule (docs/beyond.md): each held
        seat's free-or-not neighbour and the seat past it. None when the session's rows cannot be read (no
        warning then; the hold itself goes on and answers for the session)."""
        try:
            layout = await self.layout(session_id)
        except Exception as exc:  # noqa: BLE001 - a warning never fails a hold
            log.debug("no layout for the no-orphan rule: %r", exc)
            return None
        held = set(seat_ids)
        beside = _beside(layout, held)
        return Watch(sorted({x for pair in beside for x in pair if x is not None and x not in held}))

    async def stranded_by(self, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID],
                          watch: Watch | None = None) -> list[uuid.UUID]:
        """The free seats a hold of `seat_ids` leaves alone: a free seat beside a held one whose other side is a
        taken seat or the row's end. From what the gate saw in the hold's own script (`watch`), else read now
        from the gate (one MGET) or PostgreSQL without one. A warning never fails a hold: whatever goes wrong
        tells nothing (an empty list)."""
        try:
            return await self._stranded_by(session_id, seat_ids, watch)
        except Exception as exc:  # noqa: BLE001 - a layout or neighbour read that failed: no warning
            log.debug("could not check a hold for stranded seats: %r", exc)
            return []

    async def _stranded_by(self, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID],
                           watch: Watch | None) -> list[uuid.UUID]:
        layout = await self.layout(session_id)
        held = set(seat_ids)
        beside = _beside(layout, held)
        if not beside:
            return []
        taken = watch.taken if watch is not None else None
        if taken is None:
            ask = sorted({x for pair in beside for x in pair if x is not None and x not in held})
            taken = await self.booking.gate.taken_among(session_id, ask)
        if taken is None:
            taken = {r["id"] for r in await self.booking.pool.fetch(
                "SELECT id FROM session_seats WHERE id = ANY($1::uuid[]) AND status <> 'AVAILABLE'", ask)}
        stranded = {seat for seat, past in beside
                    if seat not in taken and (past is None or past in held or past in taken)}
        return sorted(stranded, key=layout.places.__getitem__)

    async def layout(self, session_id: uuid.UUID) -> SessionLayout:
        """The session's rows of seats, read once per node: the holds that ask while it is read share the read
        (a rush's first wave must not read a big room once per buyer)."""
        layout = self._layouts.pop(session_id, None)
        if layout is not None:
            self._layouts[session_id] = layout  # the most recently used go last, evicted last
            return layout
        loading = self._loading.get(session_id)
        if loading is None:
            loading = self._loading[session_id] = asyncio.create_task(self._load(session_id))
            loading.add_done_callback(lambda task: self._loaded(session_id, task))
        return await asyncio.shield(loading)  # a caller that goes away does not cancel the others' read

    def _loaded(self, session_id: uuid.UUID, task: asyncio.Task[SessionLayout]) -> None:
        self._loading.pop(session_id, None)
        if not task.cancelled():
            task.exception()  # retrieved here: every caller may have gone

    async def _load(self, session_id: uuid.UUID) -> SessionLayout:
        records = await self.booking.pool.fetch(
            "SELECT ss.id, st.row_label, se.end_show_time FROM session_seats ss JOIN seats st ON st.id = ss.seat_id"
            " JOIN sessions se ON se.id = ss.session_id WHERE ss.session_id = $1"
            " ORDER BY ss.position, st.seat_number", session_id)
        if not records:
            raise NotFound("Session not found", code="session_not_found")
        by_label: dict[str, list[uuid.UUID]] = {}
        for r in records:
            by_label.setdefault(r["row_label"], []).append(r["id"])
        layout = SessionLayout([LayoutRow(i, label, tuple(seats)) for i, (label, seats) in enumerate(by_label.items())],
                               records[0]["end_show_time"])
        self._layouts[session_id] = layout
        self._seats += len(records)
        while self._seats > LAYOUT_CACHE_SEATS and len(self._layouts) > 1:  # the least recently used go first
            oldest = next(iter(self._layouts))
            self._seats -= sum(len(r.seat_ids) for r in self._layouts.pop(oldest).rows)
        return layout


def _beside(layout: SessionLayout, held: set[uuid.UUID]) -> list[tuple[uuid.UUID, uuid.UUID | None]]:
    """Each free-or-not neighbour of a held seat that is not held itself, with the seat past it (None: the row's
    end)."""
    beside: list[tuple[uuid.UUID, uuid.UUID | None]] = []
    for seat in held:
        m, c = layout.places.get(seat, (-1, -1))
        row = layout.rows[m].seat_ids if m >= 0 else ()
        for step in (-1, 1):
            if 0 <= c + step < len(row) and row[c + step] not in held:
                past = c + 2 * step
                beside.append((row[c + step], row[past] if 0 <= past < len(row) else None))
    return beside


_of: weakref.WeakKeyDictionary[Booking, BestSeats] = weakref.WeakKeyDictionary()


def best_seats_of(booking: Booking) -> BestSeats:
    """The best-available holds over `booking` (one per booking, made with its first use)."""
    best = _of.get(booking)
    if best is None:
        best = _of[booking] = BestSeats(booking)
    return best
