"""Backing-service faults as domain errors: 503 with a stable code and `Retry-After`, never a 500.

One mapping for REST (server.middlewares), the socket (realtime.messages) and the booking code: whatever
PostgreSQL or Redis answers that is not about the request itself -- unreachable, shut down, out of memory,
read-only, a query cancelled, a pool with no free connection -- tells the client to retry shortly. These are
logged as one warning line, without a traceback: they are the service's state, not a bug.
"""

from __future__ import annotations

import logging

import asyncpg
import redis.exceptions

from core.errors import ServiceUnavailable

log = logging.getLogger("boxoffice.faults")

RETRY_AFTER = {"Retry-After": "1"}


class RedisUnavailable(ServiceUnavailable):
    code, message = "redis_unavailable", "The seat gate (Redis) is unavailable; retry shortly"

    def __init__(self) -> None:
        super().__init__(headers=dict(RETRY_AFTER))


class DatabaseUnavailable(ServiceUnavailable):
    code, message = "database_unavailable", "The database is unavailable; retry shortly"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers=dict(RETRY_AFTER))


class PoolExhausted(DatabaseUnavailable):
    """No connection of the node's pool came free within DB_POOL_TIMEOUT."""

    def __init__(self) -> None:
        super().__init__("The database is busy; retry shortly")


# PostgreSQL answers about its own state, not about the request: connection lost or refused, the server
# shutting down or restarting (57P01-57P03), a query cancelled (57014: pg_cancel_backend, statement_timeout),
# out of connections, memory or disk (class 53)
DATABASE_FAULTS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


def service_fault(exc: BaseException) -> ServiceUnavailable | None:
    """The 503 a backing-service failure answers, or None if `exc` is not one (logged once, no traceback)."""
    if isinstance(exc, ServiceUnavailable):
        return exc
    if isinstance(exc, redis.exceptions.RedisError):
        # unreachable, timed out, and also what a reachable Redis refuses: OOM (maxmemory), READONLY (a
        # replica after a failover), LOADING, CLUSTERDOWN, TRYAGAIN
        log.warning("redis unavailable: %r", exc)
        return RedisUnavailable()
    # OSError: a socket error, or TimeoutError (asyncpg's command_timeout; Redis's own timeouts are RedisErrors
    # and the gate's are mapped by the booking code)
    if isinstance(exc, (*DATABASE_FAULTS, OSError)):
        log.warning("database unavailable: %r", exc)
        return DatabaseUnavailable()
    return None
