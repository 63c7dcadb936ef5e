"""Typed application keys: every shared resource of a node, declared once (server.app sets them).

They live in `core`, below every package that reads them (handlers, realtime, contract, jobs), so none of those
imports `server`; the names of the other layers are imported for the annotations only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from core.settings import Settings

if TYPE_CHECKING:  # names for the annotations only: this module imports no layer of ours at run time
    from contract.limits import Limits
    from core.shedding import InflightGate
    from handlers.ops import Readiness
    from realtime.consumer import SeatEventConsumer
    from realtime.hub import Hub
    from realtime.kafka import KafkaLink
    from realtime.queue_push import QueuePush
    from realtime.relay import OutboxRelay
    from realtime.snapshot import SnapshotReader
    from storage.auth import TokenCache
    from storage.booking import Booking
    from storage.extension import HoldExtender
    from storage.queue_auto import AutoTurnOn
    from storage.redis_gate import RedisGate
    from storage.waiting_room import WaitingRoom
    from storage.waitlist import Waitlist

SETTINGS = web.AppKey("settings", Settings)
NODE_ID = web.AppKey("node_id", str)
PG_POOL = web.AppKey("pg_pool", asyncpg.Pool)
REDIS: web.AppKey[Redis | RedisCluster] = web.AppKey("redis")
GATE: web.AppKey[RedisGate] = web.AppKey("redis_gate")
TOKENS: web.AppKey[TokenCache] = web.AppKey("token_cache")
KAFKA: web.AppKey[KafkaLink] = web.AppKey("kafka")
# Readiness checks beyond PostgreSQL and Redis (Kafka registers itself): name -> coroutine function.
READY_CHECKS = web.AppKey("ready_checks", dict[str, Callable[[], Awaitable[object]]])
# The readiness checks' latest round, refreshed in the background (handlers.ops): /ready answers from it
READINESS: web.AppKey[Readiness] = web.AppKey("readiness")
BOOKING: web.AppKey[Booking] = web.AppKey("booking")
# hold extension and the waiting lists of sold-out sessions (docs/waiting-list.md)
EXTENDER: web.AppKey[HoldExtender] = web.AppKey("hold_extender")
WAITLIST: web.AppKey[Waitlist] = web.AppKey("waitlist")
LIMITS: web.AppKey[Limits] = web.AppKey("limits")
# The sessions' waiting rooms (storage.waiting_room): the line in Redis, the switch in PostgreSQL
WAITING_ROOM: web.AppKey[WaitingRoom] = web.AppKey("waiting_room")
# The waiting room that turns itself on past a demand threshold (storage.queue_auto)
QUEUE_AUTO: web.AppKey[AutoTurnOn] = web.AppKey("queue_auto")
# The checks every request passes before its handler, in order (server.middlewares.http_middleware runs them):
# each answers early with a response (a 429) or raises (401/403/400), or returns None to go on.
ADMISSION = web.AppKey("admission", tuple[Callable[[web.Request], Awaitable[web.StreamResponse | None]], ...])
# The node's bound on requests in flight (core.shedding): checked first by server.middlewares.http_middleware
INFLIGHT: web.AppKey[InflightGate] = web.AppKey("inflight_gate")
# Set after every booking commit: wakes the outbox relay so events leave right after the commit.
OUTBOX_WAKE = web.AppKey("outbox_wake", asyncio.Event)
# The socket fan-out (realtime): the hub of the node's sockets, its snapshot reader, the Kafka consumer feeding it
HUB: web.AppKey[Hub] = web.AppKey("realtime_hub")
SNAPSHOTS: web.AppKey[SnapshotReader] = web.AppKey("realtime_snapshots")
CONSUMER: web.AppKey[SeatEventConsumer] = web.AppKey("seat_event_consumer")
# Live places in line for the sockets waiting in a session's waiting room
QUEUE_PUSH: web.AppKey[QueuePush] = web.AppKey("queue_push")
RELAY: web.AppKey[OutboxRelay] = web.AppKey("outbox_relay")
