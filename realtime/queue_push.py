"""Live places in line: every second, each socket waiting in a session's waiting room hears where it stands.

One Redis call per session per second per node (`WaitingRoom.serving`, which also keeps the waiting buyers'
places while they watch), however many sockets wait there; then each waiting socket gets `queue.position`
when its number ahead changed (with more than NEAR ahead, at most every FAR_INTERVAL seconds), or
`queue.admitted` with its admission once the line reaches it. A socket thus gets at most one push a second. A
place Redis lost (a restart: the line is opened anew) is taken again for the socket, in the order the node's
sockets had.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from contract import shapes
from core.aio import stop_task
from realtime.hub import Connection
from storage.waiting_room import Place, WaitingRoom

log = logging.getLogger("boxoffice.queue")
PUSH_INTERVAL = 1.0  # seconds: a socket gets at most one push per interval
# Far back in line a place changes every second yet means little: a socket with more than NEAR buyers ahead hears
# its place at most every FAR_INTERVAL seconds (the page's estimate says minutes there), near the front every second.
NEAR = 100
FAR_INTERVAL = 5.0


@dataclass(slots=True)
class Waiter:
    """One socket waiting in line, and where it stands."""

    user_id: uuid.UUID
    position: int
    ahead: int
    line: int  # the line the place is in: another one means Redis lost the first, and the place with it
    on_admitted: Callable[[str | None], None]  # keeps the admission for the socket's own holds
    pushed_at: float = 0.0  # time.monotonic() of the last push


def place_message(session_id: uuid.UUID, place: Place | None) -> dict[str, object]:
    """`queue.admitted` (with the admission) once the line reached the buyer, else `queue.position`."""
    admitted = place is None or place.admitted
    return {"type": "queue.admitted" if admitted else "queue.position", **shapes.queue_place(session_id, place)}


class QueuePush:
    def __init__(self, room: WaitingRoom, interval: float = PUSH_INTERVAL) -> None:
        self.room = room
        self.interval = interval
        self.waiting: dict[uuid.UUID, dict[Connection, Waiter]] = {}  # session -> its waiting sockets

    def add(self, session_id: uuid.UUID, conn: Connection, user_id: uuid.UUID, place: Place,
            on_admitted: Callable[[str | None], None]) -> None:
        self.waiting.setdefault(session_id, {})[conn] = Waiter(user_id, place.position, place.ahead, place.line,
                                                              on_admitted)

    def remove(self, session_id: uuid.UUID, conn: Connection) -> None:
        waiting = self.waiting.get(session_id)
        if waiting is not None:
            waiting.pop(conn, None)
            if not waiting:
                del self.waiting[session_id]

    async def push_once(self) -> None:
        for session_id in list(self.waiting):
            try:
                await self._push_session(session_id)
            except Exception as exc:  # noqa: BLE001 - Redis down: the pushes pause, the sockets stay
                log.warning("waiting room of %s: no push this round: %r", session_id, exc)

    async def _push_session(self, session_id: uuid.UUID) -> None:
        for conn in [c for c in self.waiting.get(session_id, {}) if c.closing]:
            self.remove(session_id, conn)
        live = sorted(self.waiting.get(session_id, {}).items(), key=lambda item: item[1].position)
        if not live:
            return
        state = await self.room.serving(session_id, [w.user_id for _, w in live])
        if state is None:  # the waiting room was closed: everyone may hold
            for conn, waiter in live:
                waiter.on_admitted(None)
                conn.send_message(place_message(session_id, None))
                self.remove(session_id, conn)
            return
        serving, now = state.serving, time.monotonic()
        for conn, waiter in live:
            place: Place | None
            if waiter.line != state.line:  # Redis lost the line: a place again, in this node's order
                place = await self.room.join(session_id, waiter.user_id)
            elif waiter.position <= serving:  # the line reached the buyer: their admission (one call each)
                place = await self.room.place_of(session_id, waiter.user_id)
                if place is None:  # their place went meanwhile (the line was lost and refilled): a new one
                    place = await self.room.join(session_id, waiter.user_id)
            else:
                place = Place(waiter.position, serving, state.rate, line=state.line)
            if place is not None:
                waiter.position, waiter.line = place.position, place.line
            if place is None or place.admitted:
                waiter.on_admitted(None if place is None else place.admission)
                conn.send_message(place_message(session_id, place))
                self.remove(session_id, conn)
            elif place.ahead != waiter.ahead and (place.ahead <= NEAR or now - waiter.pushed_at >= FAR_INTERVAL):
                waiter.ahead, waiter.pushed_at = place.ahead, now
                conn.send_message(place_message(session_id, place))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.push_once()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[QueuePush]:
        task = asyncio.create_task(self.run(), name="queue-push")
        try:
            yield self
        finally:
            await stop_task(task, "queue-push")
