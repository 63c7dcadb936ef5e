"""Bearer tokens: generated once, stored as sha256, looked up through a small in-process cache; they expire
`TOKEN_TTL` seconds after they were issued and can be revoked (every node hears of it at once: NOTIFY)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from core.errors import Unauthorized

log = logging.getLogger("boxoffice.auth")
REVOKED_CHANNEL = "bx_token_revoked"  # NOTIFY payload: the revoked token's sha256, hex
# what connecting and listening may raise while PostgreSQL is away or the connection is cut
LISTEN_FAULTS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
UNKNOWN_TTL = 5.0  # seconds an unknown token is remembered as unknown (no database lookup per attempt)


class TokenExpired(Unauthorized):
    code, message = "token_expired", "The bearer token has expired; sign up again for a new one"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, the admin, or nobody (anonymous)."""

    user_id: uuid.UUID | None = None
    is_admin: bool = False

    @property
    def anonymous(self) -> bool:
        return self.user_id is None and not self.is_admin


ANONYMOUS = Principal()
ADMIN = Principal(is_admin=True)


def is_admin_token(token: str, admin_token: str) -> bool:
    return hmac.compare_digest(token.encode("utf-8", "surrogateescape"), admin_token.encode())


MAX_TOKEN = 512  # longer "tokens" are cut, never hashed whole


async def resolve_principal(token: str | None, admin_token: str, tokens: TokenCache) -> Principal | None:
    """Who a bearer token (REST header, WebSocket subprotocol or `?token=`) speaks for: the admin, a user, or
    nobody (no token); None when a token is given but unknown or revoked; TokenExpired past its TTL."""
    if not token:
        return ANONYMOUS
    token = token[:MAX_TOKEN]
    if is_admin_token(token, admin_token):
        return ADMIN
    user_id = await tokens.user_for(token)
    return None if user_id is None else Principal(user_id=user_id)


class TokenCache:
    """token hash -> (user id, expiry), for `ttl` seconds, at most `size` entries; unknown tokens are remembered
    as unknown for UNKNOWN_TTL seconds. A revocation (`forget`, from NOTIFY) drops an entry at once, and a lookup
    that was reading the database meanwhile keeps nothing (`generation`)."""

    def __init__(self, pool: asyncpg.Pool, *, token_ttl: float, ttl: float = 300.0, size: int = 100_000) -> None:
        self.pool = pool
        self.token_ttl = token_ttl
        self.ttl = ttl
        self.size = size
        self.db_lookups = 0
        # bumped by every revocation heard (and every clear): a lookup whose database read began under an older
        # generation may have read a token just before its revocation committed, so it keeps nothing
        self.generation = 0
        # digest -> (cached until, monotonic; user id or None for unknown; token expiry, wall clock)
        self._entries: OrderedDict[bytes, tuple[float, uuid.UUID | None, float]] = OrderedDict()

    async def user_for(self, token: str) -> uuid.UUID | None:
        digest = hash_token(token)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is None or hit[0] <= now:
            self.db_lookups += 1
            generation = self.generation
            row = await self._read(digest)
            user_id, issued = (None, None) if row is None else (row["id"], row["created_at"])
            if generation == self.generation:
                hit = self._store(digest, user_id, issued)
            else:  # a revocation was heard while the read was out: answer it (it began earlier), keep nothing
                hit = self._entry(user_id, issued)
        if hit[1] is not None and hit[2] <= time.time():
            raise TokenExpired()
        return hit[1]

    async def _read(self, digest: bytes) -> asyncpg.Record | None:
        return await self.pool.fetchrow("SELECT id, created_at FROM users WHERE token_hash = $1", digest)

    def _entry(self, user_id: uuid.UUID | None, issued: datetime | None) -> tuple[float, uuid.UUID | None, float]:
        expires = issued.timestamp() + self.token_ttl if issued is not None else 0.0
        return time.monotonic() + (self.ttl if user_id is not None else UNKNOWN_TTL), user_id, expires

    def _store(self, digest: bytes, user_id: uuid.UUID | None, issued: datetime | None
               ) -> tuple[float, uuid.UUID | None, float]:
        entry = self._entry(user_id, issued)
        self._entries[digest] = entry
        self._entries.move_to_end(digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return entry

    def remember(self, token: str, user_id: uuid.UUID, issued: datetime) -> None:
        self._store(hash_token(token), user_id, issued)

    def forget(self, digest: bytes) -> None:
        self.generation += 1
        self._entries.pop(digest, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    async def listen_revocations(self, dsn: str, retry: float = 0.5) -> None:
        """Forget every token revoked on any node, as PostgreSQL announces it (NOTIFY, sent at the commit).
        While the listening connection is down nothing is heard: the cache is emptied when it is back."""
        while True:
            try:
                con = await asyncpg.connect(dsn, timeout=5)
            except LISTEN_FAULTS as exc:
                log.warning("token revocations: cannot listen (%r); retrying", exc)
                await asyncio.sleep(retry)
                continue
            lost = asyncio.Event()
            try:
                con.add_termination_listener(lambda _con, lost=lost: lost.set())  # type: ignore[misc]
                await con.add_listener(REVOKED_CHANNEL, self._heard)
                self.clear()  # anything revoked while nobody listened
                await lost.wait()
                log.warning("token revocations: the listening connection was lost; reconnecting")
            except LISTEN_FAULTS as exc:  # InterfaceError: the connection was cut under add_listener
                log.warning("token revocations: listening failed (%r); retrying", exc)
            finally:
                with contextlib.suppress(*LISTEN_FAULTS):  # closing a connection that is already gone
                    await con.close(timeout=2)
            await asyncio.sleep(retry)

    def _heard(self, _con: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            self.forget(bytes.fromhex(payload))
        except ValueError:
            log.warning("token revocations: ignoring a payload that is not hex")


async def revoke_token(pool: asyncpg.Pool, user_id: uuid.UUID) -> bool:
    """Replace the user's token hash with one nobody holds and tell every node (NOTIFY at the commit);
    False when there is no such user."""
    async with pool.acquire() as con, con.transaction():
        old = await con.fetchval("SELECT token_hash FROM users WHERE id = $1 FOR UPDATE", user_id)
        if old is None:
            return False
        await con.execute("UPDATE users SET token_hash = $2 WHERE id = $1", user_id, hash_token(new_token()))
        await con.execute("SELECT pg_notify($1, $2)", REVOKED_CHANNEL, bytes(old).hex())
    return True
