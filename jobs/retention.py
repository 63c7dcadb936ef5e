"""Retention: what the system no longer needs is deleted once older than its setting, on every node.

- published outbox events, after OUTBOX_RETENTION_HOURS (an unpublished one is never deleted);
- idempotency keys, after IDEMPOTENCY_RETENTION_HOURS (a retry after that is a new request);
- CANCELLED and EXPIRED reservations, with their seat links, after RESERVATION_RETENTION_DAYS (a purchase, its
  reservation and a pending hold are never deleted, nor a reservation whose idempotency key is still kept).

A setting of 0 keeps those records forever. Each statement deletes at most `batch` rows and skips rows another
node has locked (SKIP LOCKED), so every node runs the job without waiting on the others, and a backlog is
worked off a batch at a time without one long transaction.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
from aiohttp import web

from core.appkeys import PG_POOL, SETTINGS
from core.settings import Settings
from jobs.runner import running

log = logging.getLogger("boxoffice.retention")

BATCH = 5_000
MAX_BATCHES = 20  # per table and run: a backlog drains over several runs, never in one long burst

PURGES: dict[str, str] = {
    "outbox": """
        DELETE FROM outbox WHERE id IN (
            SELECT id FROM outbox WHERE published_at IS NOT NULL AND created_at < now() - $1::interval
            ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)""",
    "idempotency_keys": """
        DELETE FROM idempotency_keys WHERE (user_id, scope, key) IN (
            SELECT user_id, scope, key FROM idempotency_keys WHERE created_at < now() - $1::interval
            ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)""",
    # only reservations that hold no seat (always so once finished; checked through reservation_seats) and that no
    # idempotency key names any more: a key the purge above skipped (locked, or past its batches) keeps its
    # reservation, so a retry with it never finds a key without its reservation
    "reservations": """
        DELETE FROM reservations WHERE id IN (
            SELECT r.id FROM reservations r
            WHERE r.status IN ('CANCELLED', 'EXPIRED') AND r.updated_at < now() - $1::interval
              AND NOT EXISTS (SELECT 1 FROM reservation_seats rs JOIN session_seats ss ON ss.id = rs.session_seat_id
                              WHERE rs.reservation_id = r.id AND ss.reservation_id = r.id)
              AND NOT EXISTS (SELECT 1 FROM idempotency_keys k
                              WHERE k.user_id = r.user_id AND k.scope = 'hold' AND k.resource_id = r.id)
            ORDER BY r.updated_at LIMIT $2 FOR UPDATE OF r SKIP LOCKED)""",
    # places in line that are over (left, or offered: their hold is a reservation of its own), and places still
    # waiting for a show that ended; kept as long as reservations
    "waitlist_entries": """
        DELETE FROM waitlist_entries WHERE id IN (
            SELECT w.id FROM waitlist_entries w JOIN sessions s ON s.id = w.session_id
            WHERE w.updated_at < now() - $1::interval
              AND (w.status <> 'WAITING' OR s.end_show_time < now() - $1::interval)
            ORDER BY w.id LIMIT $2 FOR UPDATE OF w SKIP LOCKED)""",
}


def retention(settings: Settings) -> dict[str, timedelta | None]:
    """How long each kind of record is kept (None: forever). A hold's idempotency key never outlives its
    reservation: a retry must not find a key whose reservation is gone."""
    reservations = timedelta(days=settings.reservation_retention_days) if settings.reservation_retention_days > 0 \
        else None
    keys = timedelta(hours=settings.idempotency_retention_hours) if settings.idempotency_retention_hours > 0 \
        else reservations
    if keys is not None and reservations is not None:
        keys = min(keys, reservations)
    outbox = timedelta(hours=settings.outbox_retention_hours) if settings.outbox_retention_hours > 0 else None
    return {"outbox": outbox, "idempotency_keys": keys, "reservations": reservations,
            "waitlist_entries": reservations}


async def purge_once(pool: asyncpg.Pool | asyncpg.Connection, settings: Settings, batch: int = BATCH) -> dict[str, int]:
    """Delete what is past its retention (up to MAX_BATCHES batches per table); return the rows deleted."""
    deleted = dict.fromkeys(PURGES, 0)
    for table, keep in retention(settings).items():
        if keep is None:
            continue
        for _ in range(MAX_BATCHES):
            status = await pool.execute(PURGES[table], keep, batch)
            count = int(status.split()[-1])  # "DELETE n"
            deleted[table] += count
            if count < batch:
                break
    if any(deleted.values()):
        log.info("retention deleted %s", ", ".join(f"{n} {t}" for t, n in deleted.items() if n))
    return deleted


async def retention_ctx(app: web.Application) -> AsyncIterator[None]:
    pool, settings = app[PG_POOL], app[SETTINGS]

    async def step() -> None:
        await purge_once(pool, settings)

    async with running(settings.retention_interval, step, "retention"):
        yield
