"""Per-node request rate limits: a token bucket per user (or per client IP when anonymous) on writes.

HAProxy enforces a per-IP limit across the cluster (haproxy.cfg); this one keeps a single user or bot
from flooding the booking path of a node. Answers 429 `rate_limited` with Retry-After.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

from core.ratelimit import TokenBuckets
from server.middlewares import error_response
from server.typedefs import SETTINGS
from storage.auth import hash_token

LIMITED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def from_local_proxy(request: web.Request) -> bool:
    """A loopback peer, or a peer on the node's Unix socket (UNIX_SOCKET: only processes of this machine
    allowed to open its file reach it; `boxoffice cluster` keeps it in a folder only its user can enter)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and sock.family == socket.AF_UNIX:
        return True
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


def client_ip(request: web.Request) -> str:
    """The caller's address; X-Forwarded-For is believed only from a local proxy (HAProxy)."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded and from_local_proxy(request):
        return forwarded.split(",")[-1].strip()[:64]
    return request.remote or ""


def rate_limiter(app: web.Application) -> Callable[[web.Request], Awaitable[web.Response | None]]:
    """An admission check (`server.typedefs.ADMISSION`): a 429 for a caller over its rate, else None."""
    settings = app[SETTINGS]
    users = TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst)
    anonymous = TokenBuckets(settings.rate_limit_anon_per_second, settings.rate_limit_anon_burst)

    async def limit(request: web.Request) -> web.Response | None:
        if request.method in LIMITED_METHODS:
            header = request.headers.get("Authorization", "")
            if header[:7].lower() == "bearer " and settings.rate_limit_per_second > 0:
                wait = users.take(hash_token(header[7:].strip()))
            elif settings.rate_limit_anon_per_second > 0:
                wait = anonymous.take(client_ip(request))
            else:
                wait = 0.0
            if wait:
                return error_response(429, "rate_limited", "Too many requests; slow down",
                                      {"retryAfterSeconds": math.ceil(wait)},
                                      headers={"Retry-After": str(math.ceil(wait))})
        return None

    return limit
