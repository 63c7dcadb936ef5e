"""The booking invariants, checked straight from PostgreSQL after every concurrency test and load run.

The one module through which the load tests (and the test suite) judge a run from the database. It is
plain SQL over asyncpg and imports nothing of boxoffice: it reads the schema's tables (session_seats,
reservations, reservation_seats, sales, sale_seats, outbox, waitlist_entries) through the connection or pool
it is given, so it judges any deployment it can reach, not only one started from this checkout.

What it checks (`CHECKS`, each an SQL query returning the rows that break it):
- no seat sold twice, and every SOLD seat is in exactly one sale, of the reservation that holds it;
- every sale has all the seats of its reservation, SOLD to it, and the reservation is CONFIRMED;
- a reservation is CONFIRMED if and only if it has a sale;
- a RESERVED seat belongs to a PENDING reservation that lists it, and a PENDING reservation still holds
  every one of its seats;
- no PENDING hold has outlived its expiry by more than `expiry_slack_seconds`;
- every outbox event has been published;
- the waiting list: a place offered seats points at a hold of its buyer, on its session, of its size; and
  nobody waits for N seats while N are free (and their MAX_SEATS_PER_USER allows them).

`check_invariants` returns a report: each invariant's name -> the offending rows (empty = holds);
`wait_for_invariants` checks until they all hold or a timeout passes; `broken` keeps the failures only.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

# name -> SQL returning offending rows; $1 is an optional array of session ids (NULL = every session)
CHECKS: dict[str, str] = {
    # no seat sold twice: at most one sale per seat (the UNIQUE constraint makes this impossible)
    "no_double_sale": """
        SELECT session_seat_id, count(*) AS sales FROM sale_seats
        WHERE $1::uuid[] IS NULL OR session_id = ANY($1)
        GROUP BY session_seat_id HAVING count(*) > 1""",
    # a SOLD seat is in exactly one sale, of the reservation that holds it
    "sold_seats_have_a_sale": """
        SELECT ss.id, ss.reservation_id FROM session_seats ss
        LEFT JOIN sale_seats x ON x.session_seat_id = ss.id
        LEFT JOIN sales sa ON sa.id = x.sale_id
        WHERE ss.status = 'SOLD' AND ($1::uuid[] IS NULL OR ss.session_id = ANY($1))
          AND (sa.id IS NULL OR sa.reservation_id IS DISTINCT FROM ss.reservation_id)""",
    # every sale has all the seats of its reservation, and they are SOLD to it
    "sales_have_their_seats": """
        SELECT sa.id, count(DISTINCT x.session_seat_id) AS sold, count(DISTINCT rs.session_seat_id) AS held
        FROM sales sa
        JOIN reservations r ON r.id = sa.reservation_id
        LEFT JOIN sale_seats x ON x.sale_id = sa.id
        LEFT JOIN reservation_seats rs ON rs.reservation_id = sa.reservation_id
        LEFT JOIN session_seats ss ON ss.id = x.session_seat_id
        WHERE $1::uuid[] IS NULL OR sa.session_id = ANY($1)
        GROUP BY sa.id, r.status
        HAVING count(DISTINCT x.session_seat_id) = 0
            OR count(DISTINCT x.session_seat_id) <> count(DISTINCT rs.session_seat_id)
            OR r.status <> 'CONFIRMED'
            OR bool_or(ss.status IS DISTINCT FROM 'SOLD')""",
    # a confirmed reservation has a sale; an expired or cancelled one has none
    "confirmed_iff_sold": """
        SELECT r.id, r.status FROM reservations r LEFT JOIN sales sa ON sa.reservation_id = r.id
        WHERE ($1::uuid[] IS NULL OR r.session_id = ANY($1))
          AND ((r.status = 'CONFIRMED') <> (sa.id IS NOT NULL))""",
    # a RESERVED seat belongs to a PENDING reservation that lists it
    "reserved_seats_are_held": """
        SELECT ss.id, ss.reservation_id, r.status FROM session_seats ss
        LEFT JOIN reservations r ON r.id = ss.reservation_id
        LEFT JOIN reservation_seats rs ON rs.reservation_id = ss.reservation_id AND rs.session_seat_id = ss.id
        WHERE ss.status = 'RESERVED' AND ($1::uuid[] IS NULL OR ss.session_id = ANY($1))
          AND (r.status IS DISTINCT FROM 'PENDING' OR rs.session_seat_id IS NULL)""",
    # a PENDING reservation still holds every one of its seats (no seat in two live holds)
    "pending_holds_own_their_seats": """
        SELECT r.id, rs.session_seat_id, ss.status, ss.reservation_id FROM reservations r
        JOIN reservation_seats rs ON rs.reservation_id = r.id
        JOIN session_seats ss ON ss.id = rs.session_seat_id
        WHERE r.status = 'PENDING' AND ($1::uuid[] IS NULL OR r.session_id = ANY($1))
          AND (ss.status <> 'RESERVED' OR ss.reservation_id IS DISTINCT FROM r.id)""",
    # no hold outlives its TTL by more than the sweep interval (+ slack), given as $2 seconds
    "holds_expire_on_time": """
        SELECT r.id, r.expires_at FROM reservations r
        WHERE r.status = 'PENDING' AND ($1::uuid[] IS NULL OR r.session_id = ANY($1))
          AND r.expires_at < now() - make_interval(secs => $2)""",
    # every outbox event published
    "outbox_published": """
        SELECT o.id, o.event_type, o.created_at FROM outbox o
        WHERE o.published_at IS NULL AND ($1::uuid[] IS NULL OR o.session_id = ANY($1))""",
    # a place offered seats points at a hold of its own buyer, on its session, of the size it asked for
    "waitlist_offers_match_their_holds": """
        SELECT w.id, w.reservation_id, r.user_id, r.session_id FROM waitlist_entries w
        JOIN reservations r ON r.id = w.reservation_id
        WHERE w.status = 'OFFERED' AND ($1::uuid[] IS NULL OR w.session_id = ANY($1))
          AND (r.user_id <> w.user_id OR r.session_id <> w.session_id
               OR (SELECT count(*) FROM reservation_seats rs WHERE rs.reservation_id = r.id) <> w.quantity)""",
    # nobody waits in line for N seats while N seats of a show still to come are free and their quota allows
    # them (the release that frees seats serves the line, and a backstop job catches what it could not)
    "waitlist_not_stalled": """
        SELECT w.id, w.session_id, w.quantity FROM waitlist_entries w JOIN sessions se ON se.id = w.session_id
        WHERE w.status = 'WAITING' AND se.start_show_time > now() + interval '5 seconds'
          AND ($1::uuid[] IS NULL OR w.session_id = ANY($1))
          AND w.quantity <= (SELECT count(*) FROM session_seats ss
                             WHERE ss.session_id = w.session_id AND ss.status = 'AVAILABLE')
          AND (w.max_user_seats = 0 OR w.quantity + (
                SELECT count(*) FROM reservations r JOIN reservation_seats rs ON rs.reservation_id = r.id
                WHERE r.user_id = w.user_id AND r.status = 'PENDING' AND r.expires_at > now()) <= w.max_user_seats)""",
}


async def check_invariants(con: asyncpg.Connection | asyncpg.Pool, session_ids: Sequence[uuid.UUID | str] | None = None,
                           *, expiry_slack_seconds: float = 2.0) -> dict[str, list[dict[str, Any]]]:
    ids = [uuid.UUID(str(s)) for s in session_ids] if session_ids else None
    report: dict[str, list[dict[str, Any]]] = {}
    for name, sql in CHECKS.items():
        args: list[Any] = [ids]
        if "$2" in sql:
            args.append(expiry_slack_seconds)
        report[name] = [dict(r) for r in await con.fetch(sql, *args)]
    return report


async def wait_for_invariants(con: asyncpg.Connection | asyncpg.Pool,
                              session_ids: Sequence[uuid.UUID | str] | None = None, *, timeout: float = 15.0,  # noqa: ASYNC109
                              expiry_slack_seconds: float = 2.0) -> dict[str, list[dict[str, Any]]]:
    """Check until every invariant holds or `timeout` passes (the outbox and sweeper need a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        report = await check_invariants(con, session_ids, expiry_slack_seconds=expiry_slack_seconds)
        if not any(report.values()) or time.monotonic() > deadline:
            return report
        await asyncio.sleep(0.25)


def broken(report: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Only the invariants that failed (for assertion messages)."""
    return {name: rows[:5] for name, rows in report.items() if rows}
