"""The booking logic: hold, confirm, release, expire. The one implementation REST and WebSocket both call.

Each transition is one atomic PostgreSQL statement (the `bx_*` functions of storage/migrations) that also
writes its outbox event; the Redis gate in front turns losers away before they reach the database.
This module knows nothing of Kafka or sockets: after each commit it calls `on_commit`, which the app
wires to the outbox relay.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from core import ids, metrics
from core.aio import within
from core.errors import (
    DomainError,
    Forbidden,
    HoldExpired,
    NotFound,
    NotPending,
    Overloaded,
    RateLimited,
    SeatsUnavailable,
    Unprocessable,
    ValidationFailed,
)
from storage import details
from storage.faults import REDIS_FAULTS, redis_fault, service_fault
from storage.gate_state import session_gate_entries
from storage.group_commit import HoldWriter
from storage.offers import hand_over
from storage.redis_gate import GateEntry, SeatGate, Watch
from storage.redis_keys import sold_until_ms
from storage.rows import Released, Reservation, Sale
from storage.waiting_room import WaitingRoom

log = logging.getLogger("boxoffice.booking")


class ReservationNotFound(NotFound):
    code, message = "reservation_not_found", "Reservation not found"


class SaleNotFound(NotFound):
    code, message = "sale_not_found", "Sale not found"


# SQLSTATE 'BXnnn' raised by the bx_* functions -> domain error
_REFUSALS: dict[str, Callable[[str, str], DomainError]] = {
    "session_not_found": lambda m, d: NotFound("Session not found", code=m),
    "session_started": lambda m, d: Unprocessable("The session has already started", code=m),
    "seats_not_in_session": lambda m, d: Unprocessable(
        "Some seats do not belong to this session", code=m, details={"seats": d.split(",") if d else []}),
    "hold_quota_exceeded": lambda m, d: RateLimited(
        "Too many seats held at once by this user", code=m, details={"held": int(d or 0)},
        headers={"Retry-After": "5"}),
    "seats_unavailable": lambda m, d: SeatsUnavailable(d.split(",") if d else []),
    "reservation_not_found": lambda m, d: ReservationNotFound(),
    "not_owner": lambda m, d: Forbidden("This reservation belongs to another user", code=m),
    "not_pending": lambda m, d: NotPending(f"The reservation is {d or 'not pending'}", details={"status": d}),
    "hold_expired": lambda m, d: HoldExpired(),
    "idempotency_key_reused": lambda m, d: Unprocessable(
        "This idempotency key was already used for another request", code=m),
}


IDEMPOTENCY_KEYS = "idempotency_keys_pkey"  # the constraint a key written twice violates (named in its message)


def refusal_for(message: str, detail: str = "") -> DomainError:
    return _REFUSALS[message](message, detail)


def refusal(exc: asyncpg.PostgresError) -> DomainError | None:
    """The domain error a bx_* function raised, or None for any other database error."""
    state = getattr(exc, "sqlstate", "") or ""
    if not state.startswith("BX"):
        return None
    message = getattr(exc, "message", "") or ""
    make = _REFUSALS.get(message)
    if make is None:
        return None
    return make(message, getattr(exc, "detail", "") or "")


@dataclass(frozen=True)
class Actor:
    """Who acts: a user (owner checks apply) or the system/admin (`check_owner=False`)."""

    user_id: uuid.UUID | None
    check_owner: bool = True


UNSWEPT_GATE_MS = 1000  # how long a repaired key of an expired, not yet swept hold keeps buyers off it


class Booking:
    def __init__(self, pool: asyncpg.Pool, gate: SeatGate, *, hold_ttl_seconds: int, max_seats_per_hold: int,
                 max_seats_per_user: int = 0, gate_timeout: float = 0.5,
                 on_commit: Callable[[], None] | None = None, hold_batch_max: int = 32,
                 hold_writers: int = 4, max_pending_holds: int = 0,
                 waiting_room: WaitingRoom | None = None) -> None:
        self.pool = pool
        self.gate = gate
        self.hold_ttl_ms = hold_ttl_seconds * 1000
        self.max_seats_per_hold = max_seats_per_hold
        self.max_seats_per_user = max_seats_per_user
        self.gate_timeout = gate_timeout  # a hold never waits longer than this on Redis: it fails fast instead
        self.on_commit = on_commit or (lambda: None)
        # holds taken and not yet answered on this node (REST and socket alike), bounded (0: no bound)
        self.max_pending_holds = max_pending_holds
        self.pending_holds = 0
        self.waiting_room = waiting_room  # sessions with a waiting room take holds with an admission only
        self.writer = HoldWriter(pool, hold_ttl_ms=self.hold_ttl_ms, max_seats_per_user=max_seats_per_user,
                                 max_batch=hold_batch_max,
                                 # without the gate, concurrent batches could take overlapping seats in
                                 # opposite orders and deadlock: one batch in flight at a time then
                                 max_inflight=hold_writers if gate.screens_holds else 1,
                                 # behind the gate a batch is almost always granted whole (bx_hold_set)
                                 set_based=gate.screens_holds)

    # ------------------------------------------------------------------ hold

    def check_seat_list(self, seat_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        if not 1 <= len(seat_ids) <= self.max_seats_per_hold:
            raise ValidationFailed(
                f"A hold takes 1 to {self.max_seats_per_hold} seats", code="invalid_seat_count",
                details={"count": len(seat_ids), "max": self.max_seats_per_hold})
        if len(set(seat_ids)) != len(seat_ids):
            dupes = sorted({str(s) for s in seat_ids if seat_ids.count(s) > 1})
            raise ValidationFailed("The same seat is requested twice", code="duplicate_seats",
                                   details={"seats": dupes})
        return list(seat_ids)

    @asynccontextmanager
    async def hold_slot(self, session_id: uuid.UUID, user_id: uuid.UUID, admission: str | None) -> AsyncIterator[None]:
        """What a hold passes before it touches anything (contract.limits.hold_within_limits, the one door): the
        node's bound on holds taken and not yet answered -- beyond `max_pending_holds`, `Overloaded` at once,
        before Redis or PostgreSQL -- then, on a session with a waiting room, the user's admission to it
        (`NotAdmitted` without a valid one). The hold counts as pending for the life of the block."""
        if self.max_pending_holds and self.pending_holds >= self.max_pending_holds:
            metrics.SHED.labels("hold").inc()
            raise Overloaded()
        self.pending_holds += 1
        try:
            if self.waiting_room is not None:
                await self.waiting_room.require_admission(session_id, user_id, admission)
            yield
        finally:
            self.pending_holds -= 1

    async def hold(self, user_id: uuid.UUID, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID],
                   idempotency_key: str | None = None, watch: Watch | None = None) -> Reservation:
        """Hold every seat for the user, or none. Returns the reservation. `watch`: seats the gate looks at in the
        same step (storage.redis_gate.Watch)."""
        seats = self.check_seat_list(seat_ids)
        same = same_seats(seats)
        if idempotency_key:
            prior = await self.prior_hold(user_id, session_id, same, idempotency_key)
            if prior is not None:
                return prior
        reservation_id = ids.uuid4()
        try:
            await self._gate_hold(session_id, seats, reservation_id, user_id, idempotency_key, watch)
        except _PriorHold as prior:
            return prior.reservation
        return await self.write_hold(reservation_id, user_id, session_id, seats, idempotency_key, same)

    async def write_hold(self, reservation_id: uuid.UUID, user_id: uuid.UUID, session_id: uuid.UUID,
                         seats: list[uuid.UUID], idempotency_key: str | None,
                         same: Callable[[Reservation], bool]) -> Reservation:
        """PostgreSQL's half of a hold the gate let through (the group-committed bx_hold paths); `same` tells
        whether a concurrent retry's reservation (the same idempotency key) answers this request."""
        try:
            row = await self.writer.write(reservation_id, user_id, session_id, seats, idempotency_key)
        except BaseException as exc:
            await self._gate_release_quietly(session_id, seats, reservation_id)
            error = self._map_db_error(exc)
            if isinstance(error, SeatsUnavailable):
                metrics.HOLDS.labels("conflict_db").inc()
                # the gate was wrong about these seats: teach it what PostgreSQL knows
                await self.repair_gate(session_id, [uuid.UUID(c) for c in error.conflicts])
            if idempotency_key and isinstance(exc, asyncpg.UniqueViolationError):
                concurrent = await self.prior_hold(user_id, session_id, same, idempotency_key)
                if concurrent is not None:  # a concurrent retry of this hold committed first
                    return concurrent
            if error is None:
                raise
            raise error from None
        metrics.HOLDS.labels("ok").inc()
        self.on_commit()
        # the hold's own row is its answer: it was created at expires_at - TTL, exactly (bx_hold)
        created = row.expires_at - timedelta(milliseconds=self.hold_ttl_ms)
        return Reservation(reservation_id, user_id, session_id, "PENDING", row.expires_at, created, created,
                           idempotency_key or None, row.seats)

    async def _gate_hold(self, session_id: uuid.UUID, seats: list[uuid.UUID], reservation_id: uuid.UUID,
                         user_id: uuid.UUID, idempotency_key: str | None, watch: Watch | None = None) -> None:
        try:  # bounded by the gate's own timeout (on the Redis round trip); a lost answer is taken back there
            taken = await self.gate.hold(session_id, seats, reservation_id, self.hold_ttl_ms, watch)
        except REDIS_FAULTS as exc:  # unreachable, slow, OOM, READONLY...
            metrics.HOLDS.labels("redis_unavailable").inc()
            raise redis_fault(exc) from None
        if taken:
            if idempotency_key:  # a concurrent retry of this same hold may be the one holding them
                prior = await self.prior_hold(user_id, session_id, same_seats(seats), idempotency_key, wait=0.2)
                if prior is not None:
                    raise _PriorHold(prior)
            metrics.HOLDS.labels("conflict").inc()
            raise SeatsUnavailable([str(s) for s in taken])

    async def _gate_release_quietly(self, session_id: uuid.UUID, seats: Sequence[uuid.UUID],
                                    owner: uuid.UUID) -> None:
        try:
            await within(self.gate_timeout, self.gate.release(session_id, seats, owner))
        except REDIS_FAULTS as exc:  # the keys expire on their own
            log.warning("could not release gate keys of %s: %r", owner, exc)

    async def repair_gate(self, session_id: uuid.UUID, seat_ids: list[uuid.UUID] | None) -> None:
        """Write the true owner of seats the gate let through although PostgreSQL has them taken (after a
        flush or restart of Redis, or a hold past its gate key but not yet swept), so the next buyers are
        turned away in Redis again. `seat_ids` None: every taken seat of the session (live keys are kept)."""
        if seat_ids is not None and not seat_ids:
            return

        async def true_owners() -> list[GateEntry]:
            return await session_gate_entries(self.pool, session_id, seat_ids, UNSWEPT_GATE_MS)

        try:
            await within(self.gate_timeout, self.gate.repair(true_owners))
        except (*REDIS_FAULTS, asyncpg.PostgresError) as exc:
            log.warning("could not repair the gate for %s seats: %r", len(seat_ids) if seat_ids else "all", exc)

    async def prior_hold(self, user_id: uuid.UUID, session_id: uuid.UUID, same: Callable[[Reservation], bool],
                         key: str, wait: float = 0.0) -> Reservation | None:
        """The reservation an earlier hold with this key made, if the request was the same (Stripe's rule): the
        same session and `same` of its reservation (named holds: the same seats, in any order). The same key
        with another request is refused, whatever became of that reservation since (confirmed, cancelled,
        expired)."""
        for attempt in range(2 if wait else 1):
            if attempt:
                await asyncio.sleep(wait)
            row = await self.pool.fetchrow(
                "SELECT request_ref, resource_id FROM idempotency_keys WHERE user_id = $1 AND scope = 'hold'"
                " AND key = $2", user_id, key)
            if row is not None:
                prior = await self.get_reservation(row["resource_id"], Actor(user_id))
                if row["request_ref"] != session_id or not same(prior):
                    raise Unprocessable("This idempotency key was already used for another request",
                                        code="idempotency_key_reused")
                return prior
        return None

    # ------------------------------------------------------------------ confirm

    async def confirm(self, actor: Actor, reservation_id: uuid.UUID,
                      idempotency_key: str | None = None) -> Sale:
        """Buy the held seats: one sale, however often it is retried with the same key."""
        try:
            row = await self.pool.fetchrow(
                "SELECT sale_id, created, session_id, seat_ids, sold_until FROM bx_confirm($1, $2, $3, $4, $5)",
                reservation_id, actor.user_id, actor.check_owner, ids.uuid4(), idempotency_key,
            )
        except BaseException as exc:
            error = self._map_db_error(exc)
            metrics.CONFIRMS.labels(error.code if error else "error").inc()
            if error is None:
                raise
            raise error from None
        if row["created"]:
            metrics.CONFIRMS.labels("ok").inc()
            self.on_commit()
            try:
                sold = self.gate.mark_sold(row["session_id"], row["seat_ids"], reservation_id,
                                           sold_until_ms(row["sold_until"]))
                await within(self.gate_timeout, sold)
            except REDIS_FAULTS as exc:  # reconciliation restores it
                log.warning("could not mark seats sold in Redis for %s: %r", reservation_id, exc)
        else:
            metrics.CONFIRMS.labels("replay").inc()
        sale = await self.get_sale(row["sale_id"], Actor(None, check_owner=False))
        if row["created"] and self.waiting_room is not None:  # the capacity inlet: the next buyer goes in
            await self.waiting_room.bought(sale.session_id, sale.user_id)
        return sale

    # ------------------------------------------------------------------ release / expire

    async def release(self, actor: Actor, reservation_id: uuid.UUID) -> Released:
        """Cancel a PENDING reservation and free its seats."""
        try:
            row = await self.pool.fetchrow(
                "SELECT session_id, seat_ids, offers FROM bx_release($1, $2, $3)",
                reservation_id, actor.user_id, actor.check_owner,
            )
        except BaseException as exc:
            error = self._map_db_error(exc)
            if error is None:
                raise
            raise error from None
        metrics.CANCELLED.inc()
        self.on_commit()
        await self._gate_release_quietly(row["session_id"], row["seat_ids"], reservation_id)
        await hand_over(self.gate, row["session_id"], row["offers"], self.gate_timeout)  # the waiting list's holds
        return Released(reservation_id, row["session_id"], list(row["seat_ids"]))

    async def expire_due(self, limit: int = 500) -> int:
        """Expire every PENDING reservation past its time (safe on many nodes at once); return how many. The seats
        that came back are offered to the sessions' waiting lists in the same transaction (rows without a
        reservation_id carry those offers)."""
        rows = await self.pool.fetch(
            "SELECT reservation_id, session_id, seat_ids, offers FROM bx_expire_due($1)", limit)
        expired = [row for row in rows if row["reservation_id"] is not None]
        if not rows:
            return 0
        metrics.EXPIRED.inc(len(expired))
        self.on_commit()
        for row in expired:
            await self._gate_release_quietly(row["session_id"], row["seat_ids"], row["reservation_id"])
        for row in rows:
            if row["reservation_id"] is None:
                await hand_over(self.gate, row["session_id"], row["offers"], self.gate_timeout)
        return len(expired)

    # ------------------------------------------------------------------ reads

    async def get_reservation(self, reservation_id: uuid.UUID, actor: Actor) -> Reservation:
        found = await details.reservation(self.pool, reservation_id)
        if found is None:
            raise ReservationNotFound()
        if actor.check_owner and found.user_id != actor.user_id:
            raise Forbidden("This reservation belongs to another user", code="not_owner")
        return found

    async def list_reservations(self, actor: Actor, session_id: uuid.UUID | None, status: str | None,
                                limit: int, offset: int) -> list[Reservation]:
        """The actor's reservations (everyone's for the admin), newest first, optionally of one session and
        one status."""
        where, args = ["true"], []
        for column, value in (("r.user_id", actor.user_id if actor.check_owner else None),
                              ("r.session_id", session_id), ("r.status", status)):
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        return await details.reservations(self.pool, " AND ".join(where), args, limit, offset)

    async def get_sale(self, sale_id: uuid.UUID, actor: Actor) -> Sale:
        found = await details.sales(self.pool, "sa.id = $1", [sale_id], 1)
        if not found:
            raise SaleNotFound()
        sale = found[0]
        if actor.check_owner and sale.user_id != actor.user_id:
            raise Forbidden("This sale belongs to another user", code="not_owner")
        return sale

    async def user_sales(self, user_id: uuid.UUID, limit: int = 100, offset: int = 0) -> list[Sale]:
        return await details.sales(self.pool, "sa.user_id = $1", [user_id], limit, offset)

    async def list_sales(self, actor: Actor, limit: int, offset: int) -> list[Sale]:
        """The actor's sales (everyone's for the admin), newest first."""
        if actor.check_owner:
            return await self.user_sales(actor.user_id, limit, offset)  # type: ignore[arg-type]
        return await details.sales(self.pool, "true", [], limit, offset)

    # ------------------------------------------------------------------ errors

    @staticmethod
    def _map_db_error(exc: BaseException) -> DomainError | None:
        if isinstance(exc, asyncpg.UniqueViolationError) and IDEMPOTENCY_KEYS in str(exc):
            # a concurrent request wrote this key first (neither saw it when it looked): the key is another
            # request's (a retry of the same one replays it before this: Booking.hold, bx_confirm's lock)
            return refusal_for("idempotency_key_reused")
        if isinstance(exc, asyncpg.ForeignKeyViolationError):
            return NotFound("User not found", code="user_not_found")
        if isinstance(exc, asyncpg.DeadlockDetectedError):
            return SeatsUnavailable([], "The seats were contended; retry")
        if isinstance(exc, asyncpg.PostgresError) and (refused := refusal(exc)) is not None:
            return refused
        return service_fault(exc)


def same_seats(seats: Sequence[uuid.UUID]) -> Callable[[Reservation], bool]:
    """A named hold's request, compared with an earlier reservation: the same seats, in any order."""
    wanted = set(seats)
    return lambda prior: {s.id for s in prior.seats} == wanted


class _PriorHold(Exception):
    """Internal: a concurrent retry with the same idempotency key already holds these seats."""

    def __init__(self, reservation: Reservation) -> None:
        super().__init__("prior hold")
        self.reservation = reservation
