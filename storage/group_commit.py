"""Group commit for holds: holds that arrive while earlier ones are being written go to PostgreSQL together.

Under a rush most of a hold's database cost is per transaction, not per row: the round trip, the
statement, the commit and its WAL flush. `HoldWriter` keeps up to `max_inflight` writes going; a hold
that arrives while all of them are busy waits for the next one and shares it with every other hold that
arrived meanwhile (at most `max_batch`), through `bx_hold_batch` (migration 004). At low load a hold is
written at once, alone, exactly as before, so batching adds no waiting of its own.

Each hold in a batch is still `bx_hold` in its own subtransaction: a refusal rolls back that hold only and
is raised to its caller as the same `asyncpg.PostgresError` the single call raises. A hold that failed in
a batch for a reason that is not its own (a deadlock with another batch, say) is retried alone.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from storage import metrics

log = logging.getLogger("boxoffice.group_commit")

HOLD_SQL = "SELECT expires_at, seats FROM bx_hold($1, $2, $3, $4, $5, $6, $7)"
BATCH_SQL = ("SELECT r_expires_at, r_seats, r_state, r_message, r_detail"
             " FROM bx_hold_batch($1, $2, $3, $4, $5, $6, $7, $8)")
# the hold's own outcome (a refusal, or its idempotency key taken by a concurrent retry): final
OWN_OUTCOME_PREFIXES = ("BX", "23505")


@dataclass(frozen=True, slots=True)
class HoldRow:
    expires_at: datetime
    seats: Any  # the held seats, contract shape (JSON text or decoded, as the pool's codec gives it)


@dataclass(slots=True)
class _Pending:
    reservation_id: uuid.UUID
    user_id: uuid.UUID
    session_id: uuid.UUID
    seats: list[uuid.UUID]
    idempotency_key: str | None
    done: asyncio.Future[HoldRow]


class HoldWriter:
    """Writes holds to PostgreSQL, batching those that queue up behind writes in flight."""

    def __init__(self, pool: asyncpg.Pool, *, hold_ttl_ms: int, max_seats_per_user: int,
                 max_batch: int = 32, max_inflight: int = 4) -> None:
        self.pool = pool
        self.hold_ttl_ms = hold_ttl_ms
        self.max_seats_per_user = max_seats_per_user
        self.max_batch = max(1, min(max_batch, 48))  # far below the 64-subtransaction cache (migration 004)
        self.max_inflight = max(1, max_inflight)
        self._queue: deque[_Pending] = deque()
        self._writers: set[asyncio.Task[None]] = set()

    async def write(self, reservation_id: uuid.UUID, user_id: uuid.UUID, session_id: uuid.UUID,
                    seats: list[uuid.UUID], idempotency_key: str | None) -> HoldRow:
        """Write one hold (all its seats or none); raises what `bx_hold` raises."""
        done: asyncio.Future[HoldRow] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(reservation_id, user_id, session_id, seats, idempotency_key, done))
        if len(self._writers) < self.max_inflight:
            task = asyncio.create_task(self._drain(), name="hold-writer")
            self._writers.add(task)
            task.add_done_callback(self._writers.discard)
        return await done

    async def _drain(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            batch = [p for p in batch if not p.done.done()]  # a caller that gave up before the write
            if not batch:
                continue
            metrics.HOLD_BATCH_SIZE.observe(len(batch))
            try:
                if len(batch) == 1:
                    await self._write_one(batch[0])
                else:
                    await self._write_batch(batch)
            except BaseException as exc:  # noqa: BLE001 - every waiting caller hears of it, then it goes on
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise

    async def _write_one(self, p: _Pending) -> None:
        try:
            row = await self.pool.fetchrow(HOLD_SQL, p.reservation_id, p.user_id, p.session_id, p.seats,
                                           self.hold_ttl_ms, self.max_seats_per_user, p.idempotency_key)
        except asyncpg.PostgresError as exc:
            if not p.done.done():
                p.done.set_exception(exc)
            return
        if not p.done.done():
            p.done.set_result(HoldRow(row["expires_at"], row["seats"]))

    async def _write_batch(self, batch: list[_Pending]) -> None:
        rows = await self.pool.fetch(
            BATCH_SQL, [p.reservation_id for p in batch], [p.user_id for p in batch],
            [p.session_id for p in batch], [s for p in batch for s in p.seats], [len(p.seats) for p in batch],
            self.hold_ttl_ms, self.max_seats_per_user, [p.idempotency_key for p in batch])
        retry: list[_Pending] = []
        for p, row in zip(batch, rows, strict=True):
            state = row["r_state"]
            if state is None:
                if not p.done.done():
                    p.done.set_result(HoldRow(row["r_expires_at"], row["r_seats"]))
            elif state.startswith(OWN_OUTCOME_PREFIXES):
                if not p.done.done():
                    p.done.set_exception(asyncpg.PostgresError.new(
                        {"C": state, "M": row["r_message"] or "", "D": row["r_detail"] or ""}))
            else:
                log.info("hold %s failed in a batch (%s %s); retrying it alone", p.reservation_id, state,
                         row["r_message"])
                retry.append(p)
        for p in retry:
            await self._write_one(p)
