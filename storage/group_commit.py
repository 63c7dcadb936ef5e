"""Group commit for holds: holds that arrive while earlier ones are being written go to PostgreSQL together.

Under a rush most of a hold's database cost is per transaction, not per row: the round trip, the statement,
the commit and its WAL flush. `HoldWriter` batches holds (storage.batching) into one call of `bx_hold_batch`:
one round trip and one commit for the batch. A hold written alone is one `bx_hold` call, exactly as without
batching.

A batch is first written set-based (`bx_hold_set`: one statement per table for the whole batch), which only
succeeds if every hold of it is granted; otherwise nothing of it is written and it goes to `bx_hold_batch`,
where each hold is still `bx_hold` in its own subtransaction: a refusal rolls back that hold only and is
raised to its caller as the same `asyncpg.PostgresError` the single call raises. A hold that failed in a batch
for a reason that is not its own (a deadlock with another batch, say) is retried alone. Behind the Redis gate
almost every batch is granted whole; without it (REDIS_GATE=false) batches under contention seldom are, so
that path goes straight to `bx_hold_batch`.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from core import metrics
from storage.batching import Batcher
from storage.rows import SessionSeat, held_seats

log = logging.getLogger("boxoffice.group_commit")

HOLD_SQL = "SELECT expires_at, seats FROM bx_hold($1, $2, $3, $4, $5, $6, $7)"
SET_SQL = "SELECT r_expires_at, r_seats FROM bx_hold_set($1, $2, $3, $4, $5, $6, $7, $8)"
BATCH_SQL = ("SELECT r_expires_at, r_seats, r_state, r_message, r_detail"
             " FROM bx_hold_batch($1, $2, $3, $4, $5, $6, $7, $8)")
# the hold's own outcome (a refusal, or its idempotency key taken by a concurrent retry): final
OWN_OUTCOME_PREFIXES = ("BX", "23505")
# far below the 64 subtransactions a backend caches (storage/migrations)
MAX_BATCH = 48


@dataclass(frozen=True, slots=True)
class HoldRow:
    expires_at: datetime
    seats: list[SessionSeat]  # the held seats, in seat-map order


@dataclass(frozen=True, slots=True)
class _Hold:
    reservation_id: uuid.UUID
    user_id: uuid.UUID
    session_id: uuid.UUID
    seats: list[uuid.UUID]
    idempotency_key: str | None


class HoldWriter:
    """Writes holds to PostgreSQL, batching those that queue up behind writes in flight."""

    def __init__(self, pool: asyncpg.Pool, *, hold_ttl_ms: int, max_seats_per_user: int,
                 max_batch: int = 32, max_inflight: int = 4, set_based: bool = True) -> None:
        self.pool = pool
        self.set_based = set_based
        self.set_batches = self.set_refused = 0  # batches written set-based / sent on to bx_hold_batch
        self.hold_ttl_ms = hold_ttl_ms
        self.max_seats_per_user = max_seats_per_user
        self.batcher: Batcher[_Hold, HoldRow] = Batcher(
            self._write, max_batch=min(max_batch, MAX_BATCH), max_inflight=max_inflight, name="hold-writer",
            on_batch=metrics.HOLD_BATCH_SIZE.observe)

    async def write(self, reservation_id: uuid.UUID, user_id: uuid.UUID, session_id: uuid.UUID,
                    seats: list[uuid.UUID], idempotency_key: str | None) -> HoldRow:
        """Write one hold (all its seats or none); raises what `bx_hold` raises."""
        return await self.batcher.submit(_Hold(reservation_id, user_id, session_id, seats, idempotency_key))

    async def _write(self, holds: list[_Hold]) -> list[HoldRow | BaseException]:
        if len(holds) == 1:
            return [await self._write_one(holds[0])]
        args = ([h.reservation_id for h in holds], [h.user_id for h in holds], [h.session_id for h in holds],
                [s for h in holds for s in h.seats], [len(h.seats) for h in holds], self.hold_ttl_ms,
                self.max_seats_per_user, [h.idempotency_key for h in holds])
        if self.set_based:
            try:
                granted = await self.pool.fetch(SET_SQL, *args)
            except asyncpg.PostgresError as exc:  # a hold of it would be refused (or another error): one by one
                self.set_refused += 1
                metrics.HOLD_SET_BATCHES.labels("refused").inc()
                log.debug("a batch of %d holds is written hold by hold: %s %s", len(holds), exc.sqlstate, exc)
            else:
                self.set_batches += 1
                metrics.HOLD_SET_BATCHES.labels("granted").inc()
                return [HoldRow(row["r_expires_at"], held_seats(row["r_seats"], hold.session_id))
                        for hold, row in zip(holds, granted, strict=True)]
        rows = await self.pool.fetch(BATCH_SQL, *args)
        outcomes: list[HoldRow | BaseException] = []
        for hold, row in zip(holds, rows, strict=True):
            state = row["r_state"]
            if state is None:
                outcomes.append(HoldRow(row["r_expires_at"], held_seats(row["r_seats"], hold.session_id)))
            elif state.startswith(OWN_OUTCOME_PREFIXES):
                outcomes.append(asyncpg.PostgresError.new(
                    {"C": state, "M": row["r_message"] or "", "D": row["r_detail"] or ""}))
            else:
                log.info("hold %s failed in a batch (%s %s); retrying it alone", hold.reservation_id, state,
                         row["r_message"])
                outcomes.append(await self._write_one(hold))
        return outcomes

    async def _write_one(self, hold: _Hold) -> HoldRow | BaseException:
        try:
            row = await self.pool.fetchrow(HOLD_SQL, hold.reservation_id, hold.user_id, hold.session_id, hold.seats,
                                           self.hold_ttl_ms, self.max_seats_per_user, hold.idempotency_key)
        except asyncpg.PostgresError as exc:
            return exc
        return HoldRow(row["expires_at"], held_seats(row["seats"], hold.session_id))
