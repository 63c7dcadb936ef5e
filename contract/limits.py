"""Limits on what one caller may do, the same for REST and the socket: who the caller is (its address, behind a
trusted proxy), write rates per user and per address, seats held per address over every node, open sockets
per address.

Refusals are domain errors with Retry-After: 429 `rate_limited`, `address_quota_exceeded`, `too_many_sockets`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from core.errors import RateLimited, ValidationFailed
from core.ratelimit import TokenBuckets
from core.settings import Settings
from storage.auth import Principal
from storage.best_hold import best_seats_of, check_best_request, same_best
from storage.booking import Booking, same_seats
from storage.limits import AddressSeats
from storage.rows import Reservation

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


class AddressQuotaExceeded(RateLimited):
    code, message = "address_quota_exceeded", "This address holds as many seats as it may; retry when a hold ends"


class TooManySockets(RateLimited):
    code, message = "too_many_sockets", "This address has as many seat channels open as it may"


def retry_after(error: RateLimited, seconds: float) -> RateLimited:
    wait = max(1, math.ceil(seconds))
    error.details = {"retryAfterSeconds": wait, **error.details}
    error.headers = {"Retry-After": str(wait)}
    return error


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

    def __init__(self, settings: Settings, redis: Redis | RedisCluster) -> None:
        self.settings = settings
        self.trusted: Networks = tuple(ipaddress.ip_network(n) for n in settings.trusted_proxies)
        self.users = TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst)
        self.addresses = TokenBuckets(settings.rate_limit_anon_per_second, settings.rate_limit_anon_burst)
        self.sockets: dict[str, int] = {}
        self.seats = AddressSeats(redis)

    def client_ip(self, request: web.Request) -> str:
        """The caller's address: the last X-Forwarded-For entry (the one the proxy saw) from a trusted proxy,
        else the peer's own address."""
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded and from_trusted_proxy(request, self.trusted):
            return forwarded.split(",")[-1].strip()[:64]
        return request.remote or ""

    def take_write(self, principal: Principal | None, address: str) -> None:
        """One write (a REST POST/PUT/PATCH/DELETE, a socket hold or release): a user's valid token draws on its
        user's bucket, the admin on none, anything else (no valid token, or AUTH_REQUIRED=false: `principal` None)
        on its address's bucket, so inventing tokens buys nothing. RateLimited when over the rate."""
        if principal is not None and principal.is_admin:
            return
        if principal is not None and principal.user_id is not None:
            self.take_user(principal.user_id)
        else:
            self.take_address(address)

    def take_user(self, user_id: uuid.UUID) -> None:
        """One write of a user (a REST write, a socket hold or release); RateLimited when over its rate."""
        if self.settings.rate_limit_per_second > 0:
            self._take(self.users, user_id.bytes)

    def take_address(self, address: str) -> None:
        """One write from an address without a valid user token (a guest sign-up, a made-up token)."""
        if self.settings.rate_limit_anon_per_second > 0:
            self._take(self.addresses, address)

    @staticmethod
    def _take(buckets: TokenBuckets, key: str | bytes) -> None:
        wait = buckets.take(key)
        if wait:
            raise retry_after(RateLimited("Too many requests; slow down"), wait)

    def counts_seats(self, address: str) -> bool:
        """Whether the holds of `address` count against a seat quota (MAX_SEATS_PER_ADDRESS on, the address known)."""
        return self.settings.max_seats_per_address > 0 and bool(address)

    async def take_seats(self, address: str, count: int) -> str | None:
        """Count `count` seats against the address's quota (over every node); the share to give back if the hold
        fails, None when there is none to give back."""
        if not self.counts_seats(address):
            return None
        cap = self.settings.max_seats_per_address
        share, wait_ms = await self.seats.take(address, count, cap, self.settings.hold_ttl_seconds * 1000)
        if wait_ms:
            raise retry_after(AddressQuotaExceeded(details={"maxSeatsPerAddress": cap}), wait_ms / 1000)
        return share

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


@dataclass(frozen=True, slots=True)
class Held:
    """A hold's answer: the reservation, and the free seats it leaves alone (the no-orphan rule's warning)."""

    reservation: Reservation
    stranded: list[uuid.UUID]


async def hold_within_limits(limits: Limits, booking: Booking, address: str, user_id: uuid.UUID,
                             session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID] | None,
                             idempotency_key: str | None, *, quantity: int | None = None,
                             rows: Sequence[str] | None = None, admission: str | None = None) -> Held:
    """A hold behind the node's bound on pending holds, the session's waiting room (`admission`) and the address's
    seat quota: the one door of a hold for REST and the socket. Named seats (`seat_ids`) or the `quantity` best
    available ones (`rows` optionally), never both. A shed hold touches neither Redis nor PostgreSQL; one not
    admitted writes nothing. The answer says which free seats the hold leaves alone (a warning: the hold is made
    all the same; docs/beyond.md). A retry of an earlier hold (the same idempotency key and request) answers that
    hold's reservation and is not counted again."""
    if (seat_ids is None) == (quantity is None) or (rows is not None and quantity is None):
        raise ValidationFailed("Give either sessionSeatIds, or quantity (with rows optionally)",
                               code="invalid_hold_request")
    if quantity is not None:
        check_best_request(quantity, booking.max_seats_per_hold)  # before any share of the quota is taken
    async with booking.hold_slot(session_id, user_id, admission):
        if idempotency_key and limits.counts_seats(address):
            same = (same_best(quantity, rows) if quantity is not None
                    else same_seats(booking.check_seat_list(seat_ids or ())))
            prior = await booking.prior_hold(user_id, session_id, same, idempotency_key)
            if prior is not None:
                return Held(prior, [])
        count = quantity if quantity is not None else len(seat_ids or ())
        best = best_seats_of(booking)
        # named seats: the gate looks at their neighbours in the hold's own script (the no-orphan rule's warning)
        watch = await best.watch_for(session_id, seat_ids) if seat_ids else None
        share = await limits.take_seats(address, count)
        try:
            if quantity is not None:
                reservation = await best.hold(user_id, session_id, quantity, rows, idempotency_key)
            else:
                assert seat_ids is not None
                reservation = await booking.hold(user_id, session_id, seat_ids, idempotency_key, watch)
        except BaseException:  # a cancelled hold (a closing socket, a stopping node) holds nothing either
            await asyncio.shield(limits.seats.give_back(address, share))
            raise
    return Held(reservation, await best.stranded_by(session_id, [s.id for s in reservation.seats], watch))
