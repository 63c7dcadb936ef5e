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
from asyncpg.exceptions import _base as asyncpg_base  # the driver's own DataError (the top-level one is SQLSTATE 22)

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
# out of connections, memory or disk (class 53); a socket error, or TimeoutError (asyncpg's command_timeout)
DATABASE_FAULTS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError, OSError,
)
# ... but these InterfaceErrors are raised by the driver about our own call, before anything reaches the server: a
# value it cannot encode, a bad connection option, a feature it lacks. They are bugs, not outages (a logged 500).
DATABASE_BUGS: tuple[type[BaseException], ...] = (
    asyncpg_base.DataError, asyncpg_base.ClientConfigurationError, asyncpg.exceptions.UnsupportedClientFeatureError,
    asyncpg.exceptions.UnsupportedServerFeatureError,
)
# What a Redis call raises when Redis is not there, slow or refusing: redis-py's errors (unreachable, timed out,
# and what a reachable Redis refuses: OOM under maxmemory, READONLY after a failover, LOADING, CLUSTERDOWN,
# TRYAGAIN), a socket's OSError, and the TimeoutError of the bound put around a call. Every Redis call site catches
# this one tuple; where the caller cannot go on without Redis, `redis_fault` is its answer.
REDIS_FAULTS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError, TimeoutError)


def redis_fault(exc: BaseException) -> RedisUnavailable:
    """The 503 for a Redis call that failed with one of REDIS_FAULTS (logged once, no traceback)."""
    log.warning("redis unavailable: %r", exc)
    return RedisUnavailable()


def service_fault(exc: BaseException) -> ServiceUnavailable | None:
    """The 503 a backing-service failure answers, or None if `exc` is not one (logged once, no traceback).

    A Redis call maps its own faults where it is made (REDIS_FAULTS), so a bare OSError that gets here came from
    the database driver; a redis-py error that gets here is Redis's."""
    if isinstance(exc, ServiceUnavailable):
        return exc
    if isinstance(exc, redis.exceptions.RedisError):
        return redis_fault(exc)
    if isinstance(exc, DATABASE_FAULTS) and not isinstance(exc, DATABASE_BUGS):
        log.warning("database unavailable: %r", exc)
        return DatabaseUnavailable()
    return None
