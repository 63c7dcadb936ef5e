"""Seat-map snapshots for sockets: one PostgreSQL read shared by every socket of a session that asks at once.

A read is shared only by requests made before it started: a socket registers with the hub, then
asks for its snapshot, so the read it gets began after its registration and no change can fall
between the snapshot and the changes the hub queues for it.

The sockets without a user (watchers: no `mine` to mark) that share a read share its rendered frame too:
a burst of 2,000 watchers renders one snapshot, not 2,000 (each ~25 kB of JSON built from ~1,000 objects).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import asyncpg

from contract import shapes
from realtime.hub import dumps
from storage.catalog import seat_rows

if TYPE_CHECKING:
    from realtime.hub import Connection


class SeatRead:
    """One read of a session's seats, and its frame for sockets without a user, rendered once when first asked."""

    __slots__ = ("rows", "anonymous_frame")

    def __init__(self, rows: list[asyncpg.Record]) -> None:
        self.rows = rows
        self.anonymous_frame: bytes | None = None


class SnapshotReader:
    """Coalesces concurrent seat-map reads per session (a resync of 2,000 sockets is a handful of queries)."""

    def __init__(self, pool: asyncpg.Pool, node_id: str, hold_ttl_seconds: int,
                 watchers: Callable[[str], int] | None = None) -> None:
        self.pool = pool
        self.watchers = watchers  # a session's watchers over every node (realtime.presence), for the snapshot
        self.node_id = node_id
        self.hold_ttl_seconds = hold_ttl_seconds
        self._next: dict[str, asyncio.Task[SeatRead]] = {}  # not started yet: joinable
        self._running: dict[str, asyncio.Task[SeatRead]] = {}
        self._tasks: set[asyncio.Task[SeatRead]] = set()
        self.queries = 0

    async def read(self, session_id: str) -> SeatRead:
        task = self._next.get(session_id)
        if task is None:
            task = asyncio.create_task(self._read(session_id, self._running.get(session_id)))
            self._next[session_id] = task
            self._tasks.add(task)
            task.add_done_callback(self._forget)
        # shielded: a socket that goes away must not cancel the read other sockets wait for
        return await asyncio.shield(task)

    async def _read(self, session_id: str,
                    previous: asyncio.Task[SeatRead] | None) -> SeatRead:
        if previous is not None:  # one read per session at a time; requests meanwhile share the next one
            await asyncio.wait({previous})
        me = asyncio.current_task()
        self._next.pop(session_id, None)
        self._running[session_id] = me  # type: ignore[assignment]
        try:
            self.queries += 1
            return SeatRead(await seat_rows(self.pool, uuid.UUID(session_id)))
        finally:
            if self._running.get(session_id) is me:
                del self._running[session_id]

    def _forget(self, task: asyncio.Task[SeatRead]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone

    async def render(self, conn: Connection) -> bytes:
        """The snapshot message of one socket (`mine` marks the seats of its user's reservations)."""
        read = await self.read(conn.session_id)
        watchers = self.watchers(conn.session_id) if self.watchers is not None else None
        if conn.user_id is not None:
            return snapshot_frame(read.rows, conn.session_id, conn.user_id, self.node_id, self.hold_ttl_seconds,
                                  watchers)
        if read.anonymous_frame is None:  # shared by the sockets that asked together: their count, give or take
            read.anonymous_frame = snapshot_frame(read.rows, conn.session_id, None, self.node_id,
                                                  self.hold_ttl_seconds, watchers)
        return read.anonymous_frame

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task


def snapshot_frame(rows: Sequence[asyncpg.Record], session_id: str, user_id: str | None, node_id: str,
                   hold_ttl_seconds: int, watchers: int | None = None) -> bytes:
    return dumps(shapes.snapshot(rows, session_id, user_id, node_id, hold_ttl_seconds, watchers))
