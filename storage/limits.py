"""Limits on what one caller may do, shared by REST and the socket: who the caller is (address behind a trusted
proxy), write rates per user and per address, seats held per address across nodes, open sockets per address.

Answers are domain errors: 429 `rate_limited` / `address_quota_exceeded` / `too_many_sockets`, each with
Retry-After.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from storage.booking import Booking
from storage.errors import RateLimited
from storage.redis_keys import address_seats_key
from storage.settings import Settings

log = logging.getLogger("boxoffice.limits")
LUA = Path(__file__).parent / "lua"


class AddressQuotaExceeded(RateLimited):
    code, message = "address_quota_exceeded", "This address holds as many seats as it may; retry when a hold ends"


class TooManySockets(RateLimited):
    code, message = "too_many_sockets", "This address has as many seat channels open as it may"


def retry_after(error: RateLimited, seconds: float) -> RateLimited:
    wait = max(1, math.ceil(seconds))
    error.details = {"retryAfterSeconds": wait, **error.details}
    error.headers = {"Retry-After": str(wait)}
    return error


class TokenBuckets:
    """rate tokens/s up to `burst`, per key; at most `max_keys` keys (least recently used dropped)."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str | bytes | uuid.UUID, tuple[float, float]] = OrderedDict()

    def take(self, key: str | bytes | uuid.UUID, now: float | None = None) -> float:
        """Take one token; return 0 if allowed, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            self._buckets.move_to_end(key)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def trusted_networks(settings: Settings) -> Networks:
    return tuple(ipaddress.ip_network(n) for n in settings.trusted_proxies)


def from_trusted_proxy(request: web.Request, trusted: Networks) -> bool:
    """A peer in TRUSTED_PROXIES, or a peer on the node's Unix socket (UNIX_SOCKET: only processes of this machine
    allowed to open its file reach it; `boxoffice cluster` keeps it in a folder only its user can enter)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and sock.family == socket.AF_UNIX:
        return True
    try:
        peer = ipaddress.ip_address(request.remote or "")
    except ValueError:
        return False
    return any(peer in network for network in trusted)


class Limits:
    """One node's limits (an app resource): token buckets in memory, the per-address seat quota in Redis."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.trusted = trusted_networks(settings)
        self.users = TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst)
        self.addresses = TokenBuckets(settings.rate_limit_anon_per_second, settings.rate_limit_anon_burst)
        self.sockets: dict[str, int] = {}
        self.redis = redis
        self._seats = redis.register_script((LUA / "address_seats.lua").read_text())

    def client_ip(self, request: web.Request) -> str:
        """The caller's address: the last X-Forwarded-For entry (the one the proxy saw) from a trusted proxy,
        else the peer's own address."""
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded and from_trusted_proxy(request, self.trusted):
            return forwarded.split(",")[-1].strip()[:64]
        return request.remote or ""

    def take_user(self, user_id: uuid.UUID) -> None:
        """One write of a user (a REST write, a socket hold or release); RateLimited when over its rate."""
        wait = self.users.take(user_id)
        if wait:
            raise retry_after(RateLimited("Too many requests; slow down"), wait)

    def take_address(self, address: str) -> None:
        """One write from an address without a valid user token (a guest sign-up, a made-up token)."""
        wait = self.addresses.take(address)
        if wait:
            raise retry_after(RateLimited("Too many requests; slow down"), wait)

    async def take_seats(self, address: str, count: int) -> str | None:
        """Count `count` seats against the address's quota (across nodes); the ref to give back, None if there
        is no quota. Redis down: allowed (the per-node rates still apply; PostgreSQL stays the arbiter)."""
        cap = self.settings.max_seats_per_address
        if cap <= 0 or not address:
            return None
        ref = uuid.uuid4().hex
        try:
            wait_ms = int(await self._seats(keys=[address_seats_key(address)],
                                            args=[ref, count, cap, self.settings.hold_ttl_seconds * 1000]))
        except (RedisError, OSError) as exc:
            log.warning("per-address seat quota not checked (Redis: %r)", exc)
            return None
        if wait_ms:
            raise retry_after(AddressQuotaExceeded(details={"maxSeatsPerAddress": cap}), wait_ms / 1000)
        return f"{ref}:{count}"

    async def give_back_seats(self, address: str, ref: str | None) -> None:
        """A hold that failed holds nothing: its seats leave the address's count."""
        if ref is None:
            return
        try:
            await self.redis.zrem(address_seats_key(address), ref)
        except (RedisError, OSError) as exc:
            log.warning("could not give back a per-address seat share (it ends with the hold TTL): %r", exc)

    def open_socket(self, address: str) -> None:
        """Count one more open socket of `address`; TooManySockets over the cap. Pair with `close_socket`."""
        cap = self.settings.ws_max_sockets_per_address
        count = self.sockets.get(address, 0)
        if cap > 0 and count >= cap:
            raise retry_after(TooManySockets(details={"maxSocketsPerAddress": cap}), 5)
        self.sockets[address] = count + 1

    def close_socket(self, address: str) -> None:
        count = self.sockets.get(address, 0) - 1
        if count > 0:
            self.sockets[address] = count
        else:
            self.sockets.pop(address, None)


async def hold_within_limits(limits: Limits, booking: Booking, address: str, user_id: uuid.UUID,
                             session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID],
                             idempotency_key: str | None) -> dict[str, Any]:
    """`Booking.hold` behind the address's seat quota: the one door of a hold for REST and the socket."""
    share = await limits.take_seats(address, len(seat_ids))
    try:
        return await booking.hold(user_id, session_id, seat_ids, idempotency_key)
    except Exception:
        await limits.give_back_seats(address, share)
        raise
