"""Real-time seat channels: WebSockets per session, the outbox relay to Kafka, the consumer fan-out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from core.appkeys import CONSUMER, HUB, KAFKA, NODE_ID, PG_POOL, QUEUE_PUSH, REDIS, SETTINGS, SNAPSHOTS, WAITING_ROOM
from realtime.channel import session_socket
from realtime.consumer import SeatEventConsumer
from realtime.hub import Hub, WSClose
from realtime.kafka import quiet_repeated_kafka_logs
from realtime.presence import Presence, running
from realtime.queue_push import QueuePush
from realtime.snapshot import SnapshotReader
from realtime.waitlist import extend as _registers_waitlist_commands  # noqa: F401 - the socket's extend, waitlist.*

SHUTDOWN_CLOSE_TIMEOUT = 3.0


async def fanout_ctx(app: web.Application) -> AsyncIterator[None]:
    """The hub (with its flusher), the snapshot reader, the consumer feeding the hub and the presence count."""
    settings = app[SETTINGS]
    hub = Hub(settings.ws_broadcast_tick_ms / 1000, settings.ws_heartbeat, settings.ws_idle_timeout,
              max_frames_per_second=settings.ws_max_frames_per_second)
    presence = Presence(app[REDIS], hub, app[NODE_ID], settings.redis_timeout)
    snapshots = SnapshotReader(app[PG_POOL], app[NODE_ID], settings.hold_ttl_seconds, presence.watchers)
    consumer = SeatEventConsumer(settings, app[KAFKA], hub)
    pushes = QueuePush(app[WAITING_ROOM])
    app[HUB], app[SNAPSHOTS], app[CONSUMER], app[QUEUE_PUSH] = hub, snapshots, consumer, pushes
    async with hub.running(), consumer.running(), pushes.running(), running(presence):
        yield
    await snapshots.close()


async def close_sockets(app: web.Application) -> None:
    """Node shutting down (SIGTERM): every socket is told 1001 and reconnects elsewhere."""
    hub = app.get(HUB)
    if hub is not None:
        await hub.close_all(WSClose.GOING_AWAY, "server shutting down", SHUTDOWN_CLOSE_TIMEOUT)


def setup(app: web.Application) -> None:
    """Register the WebSocket route, the fan-out context and the shutdown hook (the relay runs from jobs/outbox)."""
    quiet_repeated_kafka_logs()
    app.router.add_get("/ws/sessions/{sessionId}", session_socket)
    app.cleanup_ctx.append(fanout_ctx)
    app.on_shutdown.append(close_sockets)
