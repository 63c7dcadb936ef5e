"""The app factory: one aiohttp application per node, every resource in its own cleanup context."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis.exceptions
from aiohttp import web
from aiohttp_apigami import setup_aiohttp_apispec
from aiohttp_apigami.constants import APISPEC_PARSER, SWAGGER_DICT
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from contract.limits import Limits
from core.aio import owned_task
from core.appkeys import (
    ADMISSION,
    BOOKING,
    EXTENDER,
    GATE,
    INFLIGHT,
    KAFKA,
    LIMITS,
    NODE_ID,
    OUTBOX_WAKE,
    PG_POOL,
    QUEUE_AUTO,
    READY_CHECKS,
    REDIS,
    SETTINGS,
    TOKENS,
    WAITING_ROOM,
    WAITLIST,
)
from core.settings import Settings, plain_redis_url
from core.shedding import InflightGate
from handlers import setup_routes
from handlers.openapi import add_common_errors
from handlers.ops import readiness_ctx
from handlers.parsing import ContractParser
from handlers.validation import admit
from jobs import setup as setup_jobs
from realtime import setup as setup_realtime
from realtime.kafka import KafkaLink
from server.middlewares import http_middleware
from server.ratelimit import rate_limiter
from storage import db
from storage.auth import TokenCache
from storage.booking import Booking
from storage.extension import HoldExtender
from storage.queue_auto import AutoTurnOn
from storage.redis_gate import NoGate, RedisGate
from storage.waiting_room import Admissions, WaitingRoom, shared_secret
from storage.waitlist import Waitlist

log = logging.getLogger("boxoffice.app")
STATIC = Path(__file__).parent / "static"


async def pg_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await db.create_pool(settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max,
                                acquire_timeout=settings.db_pool_timeout)
    app[PG_POOL] = pool
    tokens = app[TOKENS] = TokenCache(pool, token_ttl=settings.token_ttl)
    try:
        async with owned_task(tokens.listen_revocations(settings.database_url), "token-revocations"):
            yield
    finally:
        await pool.close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = redis_client(settings)
    app[REDIS] = client
    app[GATE] = RedisGate(client, timeout=settings.redis_timeout)
    app[LIMITS] = Limits(settings, client)
    yield
    await app[GATE].close()
    await client.aclose()


def redis_client(settings: Settings) -> Redis | RedisCluster:
    """The single-node client, or the Redis Cluster client (REDIS_CLUSTER=true or a redis+cluster:// URL): the
    gate's keys of one session share a hash slot, so its scripts run unchanged on a cluster."""
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout, "socket_connect_timeout": settings.redis_timeout,
        "health_check_interval": 10, "driver_info": None,  # no CLIENT SETINFO (Redis 6.2 lacks it)
        # one immediate retry on a fresh connection: after a Redis restart the pooled sockets are dead,
        # while a Redis that is really down still fails fast (refused at once, or one socket_timeout)
        "retry": Retry(NoBackoff(), 1), "retry_on_error": [redis.exceptions.ConnectionError],
    }
    if settings.uses_redis_cluster:  # max_connections is per master there
        return RedisCluster.from_url(plain_redis_url(settings.redis_url), max_connections=100, **options)
    return Redis.from_url(settings.redis_url, max_connections=200, **options)


async def waiting_room_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    secret = await shared_secret(app[PG_POOL], settings.queue_secret)
    room = app[WAITING_ROOM] = WaitingRoom(app[PG_POOL], app[REDIS],
                                           Admissions(secret, settings.queue_admission_ttl_seconds),
                                           settings.queue_grace_seconds)
    auto = app[QUEUE_AUTO] = AutoTurnOn(room, app[REDIS], threshold_per_second=settings.queue_auto_holds_per_second,
                                        window_seconds=settings.queue_auto_window_seconds,
                                        rate=settings.queue_auto_rate)
    async with auto.running():
        yield


async def booking_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    wake = app[OUTBOX_WAKE]
    app[BOOKING] = Booking(
        app[PG_POOL], app[GATE] if settings.redis_gate else NoGate(), hold_ttl_seconds=settings.hold_ttl_seconds,
        max_seats_per_hold=settings.max_seats_per_hold, max_seats_per_user=settings.max_seats_per_user,
        gate_timeout=settings.redis_timeout, on_commit=wake.set,
        hold_batch_max=settings.hold_batch_max, hold_writers=settings.hold_writers,
        max_pending_holds=settings.max_pending_holds, waiting_room=app[WAITING_ROOM],
    )
    app[EXTENDER] = HoldExtender(app[BOOKING], settings.hold_extension_seconds)
    app[WAITLIST] = Waitlist(app[BOOKING], settings.max_seats_per_hold, settings.max_seats_per_address)
    yield


async def kafka_ctx(app: web.Application) -> AsyncIterator[None]:
    link = KafkaLink(app[SETTINGS])
    app[KAFKA] = link
    app[READY_CHECKS]["kafka"] = link.ping
    await link.start()
    yield
    await link.stop()


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def api_docs_json(request: web.Request) -> web.Response:
    """The OpenAPI document where NestJS serves it (the StarSoft API's clients read it there)."""
    return web.json_response(request.app[SWAGGER_DICT])


def create_app(settings: Settings) -> web.Application:
    """Build a node. No I/O here: connections open in the cleanup contexts when the app starts."""
    settings = settings.with_node_id()
    if not settings.auth_required:
        log.warning("AUTH_REQUIRED=false: no token is checked and userId in bodies is trusted (demo mode only)")
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[http_middleware],
    )
    app[SETTINGS] = settings
    limited = settings.rate_limit_per_second > 0 or settings.rate_limit_anon_per_second > 0
    # no rate check at all on the hot path when both limits are off
    app[ADMISSION] = (rate_limiter, admit) if limited else (admit,)
    app[NODE_ID] = settings.node_id
    app[INFLIGHT] = InflightGate(settings.max_inflight_requests)
    app[READY_CHECKS] = {}
    app[OUTBOX_WAKE] = asyncio.Event()
    app.cleanup_ctx.extend([pg_ctx, redis_ctx, waiting_room_ctx, booking_ctx, kafka_ctx, readiness_ctx])
    setup_jobs(app)
    setup_realtime(app)

    setup_routes(app)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC, name="static")
    setup_aiohttp_apispec(
        app, title="boxoffice", version="1.0.0", url="/api-docs/swagger.json", swagger_path="/api-docs",
        static_path="/api-docs/static", in_place=True,
        info={"description": "Real-time ticketing: rooms, sessions, seat holds, purchases."},
        securityDefinitions={"bearer": {"type": "apiKey", "name": "Authorization", "in": "header"}},
    )
    add_common_errors(app[SWAGGER_DICT])
    app.router.add_get("/api-docs-json", api_docs_json)
    app[APISPEC_PARSER] = ContractParser()
    return app

