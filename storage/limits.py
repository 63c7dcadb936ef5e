"""The per-address seat quota in Redis: the seats one client address holds within a hold's lifetime, over every
node (storage/lua/address_seats.lua). The policy around it lives in contract.limits."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from storage.faults import REDIS_FAULTS
from storage.redis_keys import address_seats_key

log = logging.getLogger("boxoffice.limits")
LUA = Path(__file__).parent / "lua"


class AddressSeats:
    def __init__(self, redis: Redis | RedisCluster) -> None:
        self.redis = redis
        self._take = redis.register_script((LUA / "address_seats.lua").read_text())

    async def take(self, address: str, count: int, cap: int, ttl_ms: int) -> tuple[str | None, int]:
        """Count `count` seats against the address's `cap`: (the share to give back, 0) when taken, (None, ms
        until enough earlier shares end) when not. Redis down: allowed, (None, 0) (the per-node rates still
        apply; PostgreSQL stays the arbiter of every seat)."""
        ref = uuid.uuid4().hex
        try:
            wait_ms = int(await self._take(keys=[address_seats_key(address)], args=[ref, count, cap, ttl_ms]))
        except REDIS_FAULTS as exc:
            log.warning("per-address seat quota not checked (Redis: %r)", exc)
            return None, 0
        return (None, wait_ms) if wait_ms else (f"{ref}:{count}", 0)

    async def give_back(self, address: str, share: str | None) -> None:
        """A hold that failed holds nothing: its seats leave the address's count."""
        if share is None:
            return
        try:
            await self.redis.zrem(address_seats_key(address), share)
        except REDIS_FAULTS as exc:
            log.warning("could not give back a per-address seat share (it ends with the hold TTL): %r", exc)
