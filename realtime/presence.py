"""Live presence: how many sockets watch each session, counted over every node.

Once a second each node writes its own count of every session it has sockets for into the session's Redis hash
(a field per node, with its own expiry, so a node that dies stops counting within `PRESENCE_TTL`) and reads the
total back in the same script (lua/presence.lua), pipelined for all its sessions in one round trip. When a
session's total changed, every socket of it on this node gets one `presence` frame (serialized once); a socket
that joined since the last tick gets the current total too. At most one frame per session per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from realtime.hub import Connection, Hub, dumps, text_frame
from server.typedefs import HUB, NODE_ID, REDIS, SETTINGS
from storage.redis_gate import LUA
from storage.redis_keys import presence_key

log = logging.getLogger("boxoffice.presence")

PRESENCE_INTERVAL = 1.0  # seconds between counts: the most frequent a socket hears of presence
PRESENCE_TTL_MS = 3000  # a node's count lives this long without a refresh


class Presence:
    def __init__(self, redis: Redis, hub: Hub, node_id: str, timeout: float = 0.5) -> None:
        self.redis = redis
        self.hub = hub
        self.node_id = node_id
        self.timeout = timeout
        self.script = redis.register_script((LUA / "presence.lua").read_text())
        self.totals: dict[str, int] = {}  # session -> watchers on every node, as last counted
        self._told: dict[str, set[Connection]] = {}

    async def tick(self) -> None:
        counts = {sid: len(conns) for sid, conns in self.hub.sessions.items() if conns}
        sessions = sorted(set(counts) | set(self.totals))  # a session left since the last tick reports 0
        if not sessions:
            return
        now_ms = int(time.time() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        for sid in sessions:
            pipe.evalsha(self.script.sha, 1, presence_key(sid), self.node_id, counts.get(sid, 0), now_ms,
                         PRESENCE_TTL_MS)
        async with asyncio.timeout(self.timeout):
            totals = await pipe.execute(raise_on_error=False)
            for i, total in enumerate(totals):
                if isinstance(total, NoScriptError):  # Redis restarted or flushed its scripts: this loads it
                    totals[i] = await self.script(keys=[presence_key(sessions[i])],
                                                  args=[self.node_id, counts.get(sessions[i], 0), now_ms,
                                                        PRESENCE_TTL_MS])
                elif isinstance(total, Exception):
                    raise total
        for sid, total in zip(sessions, totals, strict=True):
            self._tell(sid, int(total), counts.get(sid, 0) > 0)

    def _tell(self, sid: str, total: int, local: bool) -> None:
        if not local:
            self.totals.pop(sid, None)
            self._told.pop(sid, None)
            return
        conns = set(self.hub.sessions.get(sid, ()))
        changed = self.totals.get(sid) != total
        self.totals[sid] = total
        to_tell = conns if changed else conns - self._told.get(sid, set())
        self._told[sid] = conns
        if not to_tell:
            return
        frame = dumps({"type": "presence", "sessionId": sid, "watchers": total})
        wire = text_frame(frame)
        for conn in to_tell:
            conn.send_shared(frame, wire)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(PRESENCE_INTERVAL)
            try:
                await self.tick()
            except (TimeoutError, RedisError, OSError) as exc:  # presence waits for Redis; bookings do not
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


def setup(app: web.Application) -> None:
    """After the fan-out context (the hub): count this node's sockets once a second while the node runs."""

    async def presence_ctx(app: web.Application) -> AsyncIterator[None]:
        presence = Presence(app[REDIS], app[HUB], app[NODE_ID], app[SETTINGS].redis_timeout)
        async with running(presence):
            yield

    app.cleanup_ctx.append(presence_ctx)
