"""The order of each waiting list, as one node last read it: the place in line without counting the line.

Every buyer in line reads their place (the page asks every 10 s and soon after seats change). Counting the
entries ahead of each one costs a scan of the line per read, so a line of n buyers costs n^2 rows a round.
Here a node reads a session's waiting ids once (one range of `waitlist_line_idx`, with the line's version,
`waitlist_lines`, in the same statement) and answers every place from that copy while the version read with
the buyer's own entry is the same; concurrent readers share one read. Places are exact: any change of who
waits bumps the version (`bx_waitlist_bump`, storage/migrations/001_baseline.sql), so a copy is read again
after each change, once per node.
"""

from __future__ import annotations

import asyncio
import bisect
import time
import uuid

import asyncpg

FORGET_SECONDS = 60.0  # copies not read for this long are dropped

LINE_SQL = """
SELECT (SELECT l.version FROM waitlist_lines l WHERE l.session_id = $1) AS version,
       (SELECT coalesce(array_agg(w.id ORDER BY w.id), '{}') FROM waitlist_entries w
        WHERE w.session_id = $1 AND w.status = 'WAITING') AS ids
"""


class _Copy:
    __slots__ = ("ids", "read_at", "version")

    def __init__(self, version: int, ids: list[int]) -> None:
        self.version, self.ids, self.read_at = version, ids, time.monotonic()


class LineOrder:
    """Per node: each session's waiting ids, in line order, read again only when the line changed."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._copies: dict[uuid.UUID, _Copy] = {}
        self._reading: dict[uuid.UUID, asyncio.Future[_Copy]] = {}

    async def place(self, session_id: uuid.UUID, entry_id: int, version: int | None) -> tuple[int, int]:
        """(position, waiting in all) of an entry, 1 for the first in line, as of the line's `version` (read
        with the entry, None for a line never changed)."""
        version = version or 0
        copy = self._copies.get(session_id)
        if copy is None or copy.version < version:
            copy = await self._shared_read(session_id)
            if copy.version < version:  # a read begun before that change committed: one begun after
                copy = await self._shared_read(session_id)
        copy.read_at = time.monotonic()
        return bisect.bisect_right(copy.ids, entry_id), len(copy.ids)

    async def _shared_read(self, session_id: uuid.UUID) -> _Copy:
        reading = self._reading.get(session_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read(session_id))
            reading.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved: no warning
            self._reading[session_id] = reading
        return await asyncio.shield(reading)  # one reader giving up does not cancel the others' read

    async def _read(self, session_id: uuid.UUID) -> _Copy:
        try:
            row = await self.pool.fetchrow(LINE_SQL, session_id)
        finally:
            self._reading.pop(session_id, None)
        copy = _Copy(row["version"] or 0, list(row["ids"]))
        kept = self._copies.get(session_id)
        if kept is None or kept.version <= copy.version:  # never replace a newer copy with an older read
            self._copies[session_id] = copy
        now = time.monotonic()
        for stale in [s for s, c in self._copies.items() if now - c.read_at > FORGET_SECONDS]:
            del self._copies[stale]
        return copy
