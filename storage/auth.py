"""Bearer tokens: generated once, stored as sha256, looked up through a small in-process cache."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import asyncpg


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


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
    return hmac.compare_digest(token.encode(), admin_token.encode())


MAX_TOKEN = 512  # longer "tokens" are cut, never hashed whole


async def resolve_principal(token: str | None, admin_token: str, tokens: TokenCache) -> Principal | None:
    """Who a bearer token (REST header or WebSocket `?token=`) speaks for: the admin, a user, or nobody
    (no token); None when a token is given but unknown."""
    if not token:
        return ANONYMOUS
    token = token[:MAX_TOKEN]
    if is_admin_token(token, admin_token):
        return ADMIN
    user_id = await tokens.user_for(token)
    return None if user_id is None else Principal(user_id=user_id)


class TokenCache:
    """token hash -> user id, for `ttl` seconds, at most `size` entries (tokens never change owner)."""

    def __init__(self, pool: asyncpg.Pool, *, ttl: float = 300.0, size: int = 100_000) -> None:
        self.pool = pool
        self.ttl = ttl
        self.size = size
        self._entries: OrderedDict[bytes, tuple[float, uuid.UUID]] = OrderedDict()

    async def user_for(self, token: str) -> uuid.UUID | None:
        digest = hash_token(token)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        user_id = await self.pool.fetchval("SELECT id FROM users WHERE token_hash = $1", digest)
        if user_id is None:
            return None
        self._entries[digest] = (now + self.ttl, user_id)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return user_id

    def remember(self, token: str, user_id: uuid.UUID) -> None:
        self._entries[hash_token(token)] = (time.monotonic() + self.ttl, user_id)
