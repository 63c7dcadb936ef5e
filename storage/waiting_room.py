"""The waiting room of a session: a fair line kept in Redis, admissions signed with a shared secret.

After aws-solutions/virtual-waiting-room-on-aws: a place in line is one counter increment (`lua/queue.lua`),
and buyers are admitted by a second, "serving", counter; a buyer is admitted once it reaches their place, so
the order is join order, whichever node each buyer joined on. Two inlets move that counter:

- **rate**: `rate` buyers per second of Redis's clock, moved by whichever node asks first (no node is the
  advancer, and the rate holds for 1 node or 10);
- **capacity**: at most `capacity` buyers inside at once; the next one goes in as one inside buys, leaves or
  runs out of time (`QUEUE_ADMISSION_TTL_SECONDS`).

An admission is `<expiry>.<signature>`: an HMAC-SHA256 of the session, the user and the expiry, with a secret
every node shares (`QUEUE_SECRET`, or a random one each node reads from PostgreSQL, made once by the first).
Checking one needs no Redis and no database.

Which sessions have a line open (and with what inlet) is kept in PostgreSQL, so a Redis restart loses the
places in line but not the line: the next call reopens it with the same inlet, admissions already given stay
valid, and buyers still waiting take a place again (sockets do it on their own).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from core.errors import DomainError
from storage.redis_keys import queue_keys

LUA = Path(__file__).parent / "lua" / "queue.lua"
CONFIG_TTL = 1.0  # seconds a node trusts what it read of a session's waiting room before reading again
log = logging.getLogger("boxoffice.queue")


class NotAdmitted(DomainError):
    status, code = 403, "not_admitted"
    message = "This session has a waiting room: join it and hold with the admission it gives"


class NotInQueue(DomainError):
    status, code, message = 404, "not_in_queue", "You have no place in this session's waiting room"


@dataclass(frozen=True, slots=True)
class Inlet:
    """How a session's waiting room admits: `rate` buyers per second, or at most `capacity` inside at once."""

    rate: float | None = None
    capacity: int | None = None
    auto: bool = False  # turned on by itself (storage.queue_auto), not by an admin

    @property
    def kind(self) -> str:
        return "capacity" if self.capacity else "rate"


@dataclass(frozen=True, slots=True)
class Place:
    """A buyer's place: `position` in join order; admitted once `serving` reaches it."""

    position: int
    serving: int
    rate: float  # buyers admitted per second (the capacity inlet: as measured), for the estimate
    admission: str | None = None  # set once admitted
    admission_expires_at: float | None = None  # epoch seconds
    line: int = 0  # which line the place is in (when it was opened, ms): a line Redis lost is opened anew

    @property
    def ahead(self) -> int:
        return max(0, self.position - self.serving - 1)

    @property
    def admitted(self) -> bool:
        return self.position <= self.serving

    @property
    def wait_seconds(self) -> int:
        if self.admitted:
            return 0
        return int((self.position - self.serving) / max(self.rate, 0.001) + 0.999)


async def shared_secret(pool: asyncpg.Pool, configured: str, name: str = "queue") -> bytes:
    """The configured secret, else the random one stored in PostgreSQL (made now if no node made it yet)."""
    if configured:
        return hashlib.sha256(configured.encode()).digest()
    await pool.execute("INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                       name, secrets.token_bytes(32))
    value: bytes = await pool.fetchval("SELECT value FROM server_secrets WHERE name = $1", name)
    return value


class Admissions:
    """Signs and checks admissions: bound to a user and a session, valid until their expiry."""

    def __init__(self, secret: bytes, ttl_seconds: int) -> None:
        self.secret = secret
        self.ttl_seconds = ttl_seconds

    def _signature(self, session_id: uuid.UUID, user_id: uuid.UUID, expires: int) -> str:
        mac = hmac.new(self.secret, f"{session_id}:{user_id}:{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def sign(self, session_id: uuid.UUID, user_id: uuid.UUID, expires: int | None = None) -> tuple[str, int]:
        """An admission valid until `expires` (epoch seconds; by default the TTL from now)."""
        expires = int(time.time()) + self.ttl_seconds if expires is None else expires
        return f"{expires}.{self._signature(session_id, user_id, expires)}", expires

    def valid(self, token: str | None, session_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        if not token or len(token) > 128 or not token.isascii():  # compare_digest takes ASCII text only
            return False
        expires_text, _, signature = token.partition(".")
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses
        if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12 \
                or int(expires_text) < time.time():
            return False
        return hmac.compare_digest(signature, self._signature(session_id, user_id, int(expires_text)))


class WaitingRoom:
    def __init__(self, pool: asyncpg.Pool, redis: Redis | RedisCluster, admissions: Admissions,
                 grace_seconds: float) -> None:
        self.pool = pool
        self.redis = redis
        self.admissions = admissions
        self.grace_ms = int(grace_seconds * 1000)
        self.inside_ms = admissions.ttl_seconds * 1000  # the capacity inlet: time inside, as long as an admission
        self.script = redis.register_script(LUA.read_text())
        self._inlets: dict[uuid.UUID, tuple[float, Inlet | None]] = {}  # session -> (read at, inlet or None)
        self.on_no_room = lambda session_id: None  # a hold on a session without a room (storage.queue_auto)

    # ---------------------------------------------------------------- the switch (PostgreSQL, cached)

    async def inlet(self, session_id: uuid.UUID) -> Inlet | None:
        """The session's inlet, or None when it has no waiting room (read at most once a second)."""
        now = time.monotonic()
        cached = self._inlets.get(session_id)
        if cached is not None and now - cached[0] < CONFIG_TTL:
            return cached[1]
        row = await self.pool.fetchrow(
            "SELECT rate, capacity, auto FROM waiting_rooms WHERE session_id = $1 AND enabled", session_id)
        inlet = None if row is None else Inlet(row["rate"], row["capacity"], row["auto"])
        if len(self._inlets) > 10_000:
            self._inlets.clear()
        self._inlets[session_id] = (now, inlet)
        return inlet

    async def configure(self, session_id: uuid.UUID, inlet: Inlet | None) -> None:
        """Open the session's waiting room with `inlet` (or change it); None closes it, and keeps it closed:
        an admin's choice is never undone by the automatic turn-on."""
        if inlet is None:
            await self.pool.execute(
                "INSERT INTO waiting_rooms (session_id, enabled) VALUES ($1, false) ON CONFLICT (session_id)"
                " DO UPDATE SET enabled = false, rate = NULL, capacity = NULL, auto = false, updated_at = now()",
                session_id)
            await self.script(keys=queue_keys(session_id), args=["close", self.grace_ms])
        else:
            await self.pool.execute(
                "INSERT INTO waiting_rooms (session_id, enabled, rate, capacity, auto) VALUES ($1, true, $2, $3, $4)"
                " ON CONFLICT (session_id) DO UPDATE SET enabled = true, rate = excluded.rate,"
                " capacity = excluded.capacity, auto = excluded.auto, updated_at = now()",
                session_id, inlet.rate, inlet.capacity, inlet.auto)
            await self._open(session_id, inlet)
        self._inlets[session_id] = (time.monotonic(), inlet)

    async def turn_on_by_itself(self, session_id: uuid.UUID, rate: float) -> bool:
        """Open the session's waiting room at `rate` unless an admin has configured it (on or off); True if this
        call opened it."""
        opened = await self.pool.fetchval(
            # demand is counted for any session id a hold names: one with no session opens nothing
            "INSERT INTO waiting_rooms (session_id, enabled, rate, auto)"
            " SELECT $1, true, $2, true WHERE EXISTS (SELECT 1 FROM sessions WHERE id = $1)"
            " ON CONFLICT (session_id) DO NOTHING RETURNING true", session_id, rate)
        if opened:
            inlet = Inlet(rate, None, auto=True)
            await self._open(session_id, inlet)
            self._inlets[session_id] = (time.monotonic(), inlet)
        return bool(opened)

    async def _open(self, session_id: uuid.UUID, inlet: Inlet) -> list[int]:
        reply: list[int] = await self.script(keys=queue_keys(session_id), args=[
            "open", self.grace_ms, repr(float(inlet.rate or 0)), int(inlet.capacity or 0), self.inside_ms])
        return reply

    # ---------------------------------------------------------------- the line (Redis)

    async def _run(self, session_id: uuid.UUID, inlet: Inlet, *args: str | int) -> list[int]:
        """One call of the script; a line Redis lost (restart, flush) is opened again with the stored inlet."""
        keys = queue_keys(session_id)
        reply: list[int] = await self.script(keys=keys, args=[args[0], self.grace_ms, *args[1:]])
        if not reply:
            await self._open(session_id, inlet)
            reply = await self.script(keys=keys, args=[args[0], self.grace_ms, *args[1:]])
        return reply

    def _place(self, session_id: uuid.UUID, user_id: uuid.UUID, reply: list[int]) -> Place | None:
        """The place as the buyer sees it, with a fresh admission once the line has reached it."""
        position, serving, _, inside_until_ms, rate_milli, line = (int(v) for v in reply[:6])
        if not position:
            return None
        if position > serving:
            return Place(position, serving, rate_milli / 1000, line=line)
        expires = inside_until_ms // 1000 if inside_until_ms else None  # capacity: admitted while inside
        token, expires = self.admissions.sign(session_id, user_id, expires)
        return Place(position, serving, rate_milli / 1000, token, expires, line)

    async def join(self, session_id: uuid.UUID, user_id: uuid.UUID) -> Place | None:
        """The user's place in line (the same one if they have one); None: the session has no waiting room."""
        inlet = await self.inlet(session_id)
        if inlet is None:
            return None
        return self._place(session_id, user_id, await self._run(session_id, inlet, "join", str(user_id)))

    async def place_of(self, session_id: uuid.UUID, user_id: uuid.UUID) -> Place | None:
        """The user's place, kept a grace period longer; None: no place (or no waiting room)."""
        inlet = await self.inlet(session_id)
        if inlet is None:
            return None
        return self._place(session_id, user_id, await self._run(session_id, inlet, "place", str(user_id)))

    async def serving(self, session_id: uuid.UUID, waiting: list[uuid.UUID]) -> Place | None:
        """The line now, as the place of nobody (position 0: `serving`, `rate`, `line`), keeping the places of
        `waiting` (buyers still watching); None: no waiting room."""
        inlet = await self.inlet(session_id)
        if inlet is None:
            return None
        reply = await self._run(session_id, inlet, "touch", *map(str, waiting))
        return Place(0, int(reply[1]), int(reply[4]) / 1000, line=int(reply[5]))

    async def leave(self, session_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """The user gives up their place in line, or (capacity inlet) their place inside."""
        inlet = await self.inlet(session_id)
        if inlet is not None:
            await self._run(session_id, inlet, "leave", str(user_id))

    async def bought(self, session_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """A purchase: with the capacity inlet the buyer's place inside goes to the next buyer. Never raises (the
        purchase is committed; a place not freed now frees itself when its time inside ends)."""
        try:
            inlet = await self.inlet(session_id)
            if inlet is not None and inlet.capacity:
                await self._run(session_id, inlet, "leave", str(user_id))
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("waiting room of %s: the buyer's place inside was not freed: %r", session_id, exc)

    # ---------------------------------------------------------------- the door of a hold

    async def require_admission(self, session_id: uuid.UUID, user_id: uuid.UUID, admission: str | None) -> None:
        """Raise `NotAdmitted` unless the session has no waiting room or `admission` is this user's for it."""
        if await self.inlet(session_id) is None:
            self.on_no_room(session_id)
            return
        if not self.admissions.valid(admission, session_id, user_id):
            raise NotAdmitted()
