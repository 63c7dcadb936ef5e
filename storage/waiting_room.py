"""The waiting room of a session: a fair line kept in Redis, admissions signed with a shared secret.

After aws-solutions/virtual-waiting-room-on-aws: a place in line is one counter increment (`lua/queue.lua`),
and buyers are admitted by a second, "serving" counter that moves at the admission rate; a buyer is admitted
once it reaches their place, so the order is join order, whichever node each buyer joined on. The serving
counter is a function of Redis's clock, moved by whichever node asks first: no node is the advancer, and the
rate holds for 1 node or 10.

An admission is `<expiry>.<signature>`: an HMAC-SHA256 of the session, the user and the expiry, with a secret
every node shares (`QUEUE_SECRET`, or a random one each node reads from PostgreSQL, made once by the first).
Checking one needs no Redis and no database.

Which sessions have a line open (and at what rate) is kept in PostgreSQL, so a Redis restart loses the
places in line but not the line: the next join reopens it at the same rate, admissions already given stay
valid, and buyers still waiting take a place again (sockets do it on their own).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
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
CONFIG_TTL = 1.0  # seconds a node trusts what it read of a session's line (on, rate) before reading again


class NotAdmitted(DomainError):
    status, code = 403, "not_admitted"
    message = "This session has a waiting room: join it and hold with the admission it gives"


class NotInQueue(DomainError):
    status, code, message = 404, "not_in_queue", "You have no place in this session's waiting room"


@dataclass(frozen=True, slots=True)
class Place:
    """A buyer's place: `position` in join order; admitted once `serving` reaches it."""

    position: int
    serving: int
    rate: float
    admission: str | None = None  # set once admitted
    admission_expires_at: float | None = None  # epoch seconds

    @property
    def ahead(self) -> int:
        return max(0, self.position - self.serving - 1)

    @property
    def admitted(self) -> bool:
        return self.position <= self.serving

    @property
    def wait_seconds(self) -> int:
        return 0 if self.admitted else int((self.position - self.serving) / self.rate + 0.999)


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

    def sign(self, session_id: uuid.UUID, user_id: uuid.UUID) -> tuple[str, int]:
        expires = int(time.time()) + self.ttl_seconds
        return f"{expires}.{self._signature(session_id, user_id, expires)}", expires

    def valid(self, token: str | None, session_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        if not token or len(token) > 128:
            return False
        expires_text, _, signature = token.partition(".")
        if not expires_text.isdigit() or int(expires_text) < time.time():
            return False
        return hmac.compare_digest(signature, self._signature(session_id, user_id, int(expires_text)))


class WaitingRoom:
    def __init__(self, pool: asyncpg.Pool, redis: Redis | RedisCluster, admissions: Admissions, grace_seconds: float) -> None:
        self.pool = pool
        self.redis = redis
        self.admissions = admissions
        self.grace_ms = int(grace_seconds * 1000)
        self.script = redis.register_script(LUA.read_text())
        self._rates: dict[uuid.UUID, tuple[float, float | None]] = {}  # session -> (read at, rate or None)

    # ---------------------------------------------------------------- the switch (PostgreSQL, cached)

    async def rate(self, session_id: uuid.UUID) -> float | None:
        """The session's admission rate, or None when it has no waiting room (read at most once a second)."""
        now = time.monotonic()
        cached = self._rates.get(session_id)
        if cached is not None and now - cached[0] < CONFIG_TTL:
            return cached[1]
        rate: float | None = await self.pool.fetchval(
            "SELECT rate FROM waiting_rooms WHERE session_id = $1", session_id)
        if len(self._rates) > 10_000:
            self._rates.clear()
        self._rates[session_id] = (now, rate)
        return rate

    async def configure(self, session_id: uuid.UUID, rate: float | None) -> None:
        """Open the session's waiting room at `rate` buyers per second (or change it); None closes it."""
        if rate is None:
            await self.pool.execute("DELETE FROM waiting_rooms WHERE session_id = $1", session_id)
            await self.script(keys=queue_keys(session_id), args=["close"])
        else:
            await self.pool.execute(
                "INSERT INTO waiting_rooms (session_id, rate) VALUES ($1, $2) ON CONFLICT (session_id)"
                " DO UPDATE SET rate = excluded.rate, updated_at = now()", session_id, rate)
            await self.script(keys=queue_keys(session_id), args=["open", repr(float(rate))])
        self._rates[session_id] = (time.monotonic(), rate)

    # ---------------------------------------------------------------- the line (Redis)

    async def _run(self, session_id: uuid.UUID, rate: float, *args: str | int) -> list[int]:
        """One call of the script; a line Redis lost (restart, flush) is opened again at the stored rate."""
        keys = queue_keys(session_id)
        reply: list[int] = await self.script(keys=keys, args=list(args))
        if not reply:
            await self.script(keys=keys, args=["open", repr(float(rate))])
            reply = await self.script(keys=keys, args=list(args))
        return reply

    def place(self, session_id: uuid.UUID, user_id: uuid.UUID, rate: float, position: int,
              serving: int) -> Place:
        """The place as the buyer sees it: with a fresh admission once the line has reached it."""
        if position > serving:
            return Place(position, serving, rate)
        token, expires = self.admissions.sign(session_id, user_id)
        return Place(position, serving, rate, token, expires)

    async def join(self, session_id: uuid.UUID, user_id: uuid.UUID) -> Place | None:
        """The user's place in line (the same one if they have one); None: the session has no waiting room."""
        rate = await self.rate(session_id)
        if rate is None:
            return None
        position, serving, _ = await self._run(session_id, rate, "join", str(user_id), self.grace_ms)
        return self.place(session_id, user_id, rate, position, serving)

    async def place_of(self, session_id: uuid.UUID, user_id: uuid.UUID) -> Place | None:
        """The user's place, kept a grace period longer; None: no place (or no waiting room)."""
        rate = await self.rate(session_id)
        if rate is None:
            return None
        position, serving, _ = await self._run(session_id, rate, "place", str(user_id), self.grace_ms)
        return self.place(session_id, user_id, rate, position, serving) if position else None

    async def serving(self, session_id: uuid.UUID, waiting: list[uuid.UUID]) -> tuple[float, int, int] | None:
        """(rate, serving, last place given) now, keeping the places of `waiting` (buyers still watching);
        None: no waiting room."""
        rate = await self.rate(session_id)
        if rate is None:
            return None
        _, serving, last = await self._run(session_id, rate, "touch", self.grace_ms, *map(str, waiting))
        return rate, serving, last

    # ---------------------------------------------------------------- the door of a hold

    async def require_admission(self, session_id: uuid.UUID, user_id: uuid.UUID, admission: str | None) -> None:
        """Raise `NotAdmitted` unless the session has no waiting room or `admission` is this user's for it."""
        if await self.rate(session_id) is None:
            return
        if not self.admissions.valid(admission, session_id, user_id):
            raise NotAdmitted()
