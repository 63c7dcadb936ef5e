"""What the runner reads from PostgreSQL: seat counts, overdue holds, sell-out times and the invariants.

The invariants come from `loadtests.invariants`; everything else here is the runner's own SQL.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import asyncpg

from loadtests.invariants import wait_for_invariants

EXPIRY_SLACK_SECONDS = 2.0  # a PENDING hold may outlive its TTL by the sweep interval plus this


SEAT_COUNTS_SQL = """
    SELECT status, count(*)::int AS n FROM session_seats WHERE session_id = ANY($1::uuid[]) GROUP BY status"""
OVERDUE_SQL = """
    SELECT count(*)::int AS n, coalesce(extract(epoch FROM max(now() - expires_at)), 0)::float AS worst
    FROM reservations WHERE status = 'PENDING' AND session_id = ANY($1::uuid[])
      AND expires_at < now() - make_interval(secs => $2)"""
SOLD_TIMES_SQL = """
    SELECT extract(epoch FROM sa.confirmed_at - (SELECT min(created_at) FROM reservations
                                                 WHERE session_id = ANY($1::uuid[])))::float AS after
    FROM sale_seats x JOIN sales sa ON sa.id = x.sale_id
    WHERE x.session_id = ANY($1::uuid[]) ORDER BY sa.confirmed_at"""
SELL_MILESTONES = {"50%": 0.5, "90%": 0.9, "100%": 1.0}
PENDING_SQL = "SELECT count(*)::int FROM reservations WHERE status = 'PENDING' AND session_id = ANY($1::uuid[])"
SELL_OUT_SQL = """
    SELECT (SELECT min(created_at) FROM reservations WHERE session_id = ANY($1::uuid[])) AS first_hold,
           (SELECT max(confirmed_at) FROM sales WHERE session_id = ANY($1::uuid[])) AS last_sale,
           (SELECT count(*)::int FROM sales WHERE session_id = ANY($1::uuid[])) AS sales"""


class Database:
    """One asyncpg connection driven from this synchronous runner."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.loop = asyncio.new_event_loop()
        self.con: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(dsn))

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def seat_counts(self, session_ids: list[str]) -> dict[str, int]:
        rows = self.run(self.con.fetch(SEAT_COUNTS_SQL, session_ids))
        return {r["status"]: r["n"] for r in rows}

    def overdue_holds(self, session_ids: list[str]) -> tuple[int, float]:
        row = self.run(self.con.fetchrow(OVERDUE_SQL, session_ids, EXPIRY_SLACK_SECONDS))
        return row["n"], row["worst"]

    def pending(self, session_ids: list[str]) -> int:
        return int(self.run(self.con.fetchval(PENDING_SQL, session_ids)))

    def sell_out(self, session_ids: list[str]) -> dict[str, Any]:
        return dict(self.run(self.con.fetchrow(SELL_OUT_SQL, session_ids)))

    def time_to_sell(self, session_ids: list[str], total_seats: int) -> dict[str, float | None]:
        """Seconds from the first hold until 50 %, 90 % and 100 % of the seats were sold (None: not reached)."""
        after = [r["after"] for r in self.run(self.con.fetch(SOLD_TIMES_SQL, session_ids))]
        out: dict[str, float | None] = {}
        for label, share in SELL_MILESTONES.items():
            needed = max(1, math.ceil(round(total_seats * share, 6)))
            out[label] = round(after[needed - 1], 2) if len(after) >= needed else None
        return out

    def invariants(self, session_ids: list[str], timeout: float) -> dict[str, list[dict[str, Any]]]:
        return self.run(wait_for_invariants(self.con, session_ids, timeout=timeout,  # type: ignore[no-any-return]
                                            expiry_slack_seconds=EXPIRY_SLACK_SECONDS))

    def close(self) -> None:
        self.run(self.con.close())
        self.loop.close()
