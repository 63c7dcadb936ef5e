"""Live presence: how many sockets watch each session, counted over every node.

Twice a second each node writes its own count of every session it has sockets for into the session's Redis hash
(a field per node, with its own expiry, so a node that dies stops counting within `PRESENCE_TTL_MS`) and reads
the total back in the same script (lua/presence.lua), pipelined for all its sessions in one round trip. When a
session's total changed, every socket of it on this node gets one `presence` frame (serialized once); a socket
that joined since gets the current total at once. At most one frame per socket per second: a change counted
sooner waits for the next tick past that socket's second (coalesced: only the latest total is sent).
A snapshot carries the count as `watchers` (`Presence.watchers`: the last total, corrected by this node's own
sockets opened or closed since).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from realtime.hub import Connection, Hub, dumps, text_frame
from storage.faults import REDIS_FAULTS
from storage.redis_gate import LUA
from storage.redis_keys import presence_key

log = logging.getLogger("boxoffice.presence")

PRESENCE_INTERVAL = 0.5  # seconds between counts
PRESENCE_MIN_GAP = 1.0  # seconds between two presence frames of one session: the most often a socket hears it
PRESENCE_TTL_MS = 3000  # a node's count lives this long without a refresh


class Presence:
    def __init__(self, redis: Redis | RedisCluster, hub: Hub, node_id: str, timeout: float = 0.5) -> None:
        self.redis = redis
        self.hub = hub
        self.node_id = node_id
        self.timeout = timeout
        self.script = redis.register_script((LUA / "presence.lua").read_text())
        self.totals: dict[str, int] = {}  # session -> watchers on every node, as last counted
        self._local: dict[str, int] = {}  # session -> this node's sockets, as last counted
        # session -> socket -> (total, when) of the last frame it was sent
        self._told: dict[str, dict[Connection, tuple[int, float]]] = {}

    def watchers(self, session_id: str) -> int:
        """The session's watchers now, as well as this node knows: the last total, plus the sockets this node
        opened since (minus those it closed). A snapshot carries it."""
        local = len(self.hub.sessions.get(session_id, ()))
        return max(local, self.totals.get(session_id, 0) - self._local.get(session_id, 0) + local)

    async def tick(self) -> None:
        counts = {sid: len(conns) for sid, conns in self.hub.sessions.items() if conns}
        sessions = sorted(set(counts) | set(self.totals))  # a session left since the last tick reports 0
        if not sessions:
            return
        calls: list[tuple[list[str], list[str | int]]] = [
            ([presence_key(sid)], [self.node_id, counts.get(sid, 0), PRESENCE_TTL_MS]) for sid in sessions]
        async with asyncio.timeout(self.timeout):
            if isinstance(self.redis, RedisCluster):  # a cluster pipeline refuses scripts: one call per session
                totals: list[Any] = await asyncio.gather(*(self.script(keys=k, args=a) for k, a in calls),
                                                         return_exceptions=True)
            else:
                pipe = self.redis.pipeline(transaction=False)
                for keys, args in calls:
                    pipe.evalsha(self.script.sha, len(keys), *keys, *args)
                totals = await pipe.execute(raise_on_error=False)
            for i, total in enumerate(totals):
                if isinstance(total, NoScriptError):  # Redis restarted or flushed its scripts: this loads it
                    totals[i] = await self.script(keys=calls[i][0], args=calls[i][1])
                elif isinstance(total, BaseException):
                    raise total
        now = time.monotonic()
        for sid, total in zip(sessions, totals, strict=True):
            self._tell(sid, int(total), counts.get(sid, 0), now)

    def _tell(self, sid: str, total: int, local: int, now: float) -> None:
        if not local:
            self.totals.pop(sid, None)
            self._local.pop(sid, None)
            self._told.pop(sid, None)
            return
        self.totals[sid], self._local[sid] = total, local
        told = self._told.get(sid, {})
        # each socket: told now if it never was (its snapshot had an estimate), or if the total moved since it was
        # told and that was a second ago; else a later tick tells it (coalesced: only the latest total)
        due = [conn for conn in self.hub.sessions.get(sid, ())
               if (last := told.get(conn)) is None
               or (last[0] != total and now - last[1] >= PRESENCE_MIN_GAP - 0.05)]
        self._told[sid] = {conn: (total, now) if conn in due else told[conn] for conn in self.hub.sessions.get(sid, ())}
        if not due:
            return
        frame = dumps({"type": "presence", "sessionId": sid, "watchers": total})
        wire = text_frame(frame)
        for conn in due:
            conn.send_shared(frame, wire)

    async def leave(self) -> None:
        """This node stops counting (it is stopping): its counts leave every session it reported, so the other
        nodes' totals drop at their next count rather than when its counts would have ended."""
        sessions = sorted(self.totals)
        self.totals.clear()
        if not sessions:
            return
        async with asyncio.timeout(self.timeout):
            await asyncio.gather(*(self.script(keys=[presence_key(sid)], args=[self.node_id, 0, PRESENCE_TTL_MS])
                                   for sid in sessions))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(PRESENCE_INTERVAL)
            try:
                await self.tick()
            except REDIS_FAULTS as exc:  # presence waits for Redis; bookings do not
                log.debug("presence count skipped: %r", exc)


@contextlib.asynccontextmanager
async def running(presence: Presence) -> AsyncIterator[None]:
    task = asyncio.create_task(presence.run(), name="presence")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await presence.leave()
        except REDIS_FAULTS as exc:  # its counts end on their own within PRESENCE_TTL_MS
            log.debug("presence not withdrawn: %r", exc)
