"""Load shedding: a node works on a bounded number of requests at once and answers the rest at once.

A request beyond the bound is refused before anything else runs (no token lookup, no Redis, no PostgreSQL)
with 503 `overloaded` and `Retry-After`, so a rush makes some buyers wait a second instead of every buyer
waiting in an unbounded line inside the node. The probes (`/health`, `/ready`, `/metrics`) are never counted
nor refused: a busy node must not look like a dead one to HAProxy. A WebSocket upgrade is refused when the
node is full but not counted once open (a socket lives for minutes; its commands are bounded where they queue).
"""

from __future__ import annotations

from aiohttp import hdrs, web

from core.errors import Overloaded
from core.metrics import SHED

PROBES = frozenset({"/health", "/ready", "/metrics"})


SOCKET_ROUTES = "/ws/"  # the seat channels (realtime/channel.py); an Upgrade header elsewhere counts


class InflightGate:
    """The count of requests a node is working on, against its bound (`limit` 0: no bound)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.inflight = 0

    def enter(self, request: web.Request) -> bool:
        """Admit `request` or raise `Overloaded`; True when it is counted (the caller then calls `leave`)."""
        if not self.limit or request.path in PROBES:
            return False
        if self.inflight >= self.limit:
            SHED.labels("request").inc()
            raise Overloaded()
        if request.path.startswith(SOCKET_ROUTES) and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
            return False  # an open seat channel is not work in flight (its own bound: WS_MAX_SOCKETS_PER_ADDRESS)
        self.inflight += 1
        return True

    def leave(self) -> None:
        self.inflight -= 1
