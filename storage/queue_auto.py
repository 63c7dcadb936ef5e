"""The waiting room that turns itself on: when the demand on a session passes a threshold, its line opens.

Demand is hold attempts on a session that has no waiting room, counted by every node at the hold door
(`WaitingRoom.require_admission` calls `note`) and added up in Redis once a second per session per node
(`lua/demand.lua`, one call per busy session per node per second, none on a quiet node). When the attempts
over the last `window` seconds, cluster-wide, reach `threshold x window`, the session's waiting room opens at
`rate` buyers per second, as if an admin had opened it (`waiting_rooms.auto` says it was not one). A session
an admin has configured, on or off, is left alone. Off unless `QUEUE_AUTO_HOLDS_PER_SECOND` is above 0: a
client written for the StarSoft API knows nothing of admissions, and its holds would start answering 403.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from core.aio import stop_task
from storage.redis_keys import demand_key
from storage.waiting_room import WaitingRoom

LUA = Path(__file__).parent / "lua" / "demand.lua"
log = logging.getLogger("boxoffice.queue")


class AutoTurnOn:
    def __init__(self, room: WaitingRoom, redis: Redis | RedisCluster, *, threshold_per_second: float,
                 window_seconds: int, rate: float, interval: float = 1.0) -> None:
        self.room = room
        self.threshold = threshold_per_second
        self.window = max(1, window_seconds)
        self.rate = rate
        self.interval = interval
        self.script = redis.register_script(LUA.read_text())
        self.counts: Counter[uuid.UUID] = Counter()  # hold attempts since the last flush, per session
        self.turned_on = 0  # sessions this node turned on (the tests read it)

    @property
    def enabled(self) -> bool:
        return self.threshold > 0 and self.rate > 0

    def note(self, session_id: uuid.UUID) -> None:
        """One hold attempt on a session without a waiting room (in memory: no I/O on the hold's path)."""
        if len(self.counts) < 10_000:
            self.counts[session_id] += 1

    async def flush_once(self) -> None:
        counts, self.counts = self.counts, Counter()
        for session_id, attempts in counts.items():
            total = int(await self.script(keys=[demand_key(session_id)], args=[attempts, self.window]))
            if total >= self.threshold * self.window and await self.room.turn_on_by_itself(session_id, self.rate):
                self.turned_on += 1
                log.warning("waiting room of %s turned itself on at %.1f buyers/s: %d hold attempts in %d s",
                            session_id, self.rate, total, self.window)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush_once()
            except Exception as exc:  # noqa: BLE001 - Redis or PostgreSQL down: counting resumes next second
                log.warning("waiting rooms: demand not counted this second: %r", exc)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[AutoTurnOn]:
        """Counting while the block runs (nothing at all when turned off)."""
        if not self.enabled:
            yield self
            return
        self.room.on_no_room = self.note
        task = asyncio.create_task(self.run(), name="queue-auto-turn-on")
        try:
            yield self
        finally:
            self.room.on_no_room = lambda session_id: None
            await stop_task(task, "queue-auto-turn-on")
