"""Outbox sweeping: runs the node's outbox relay, whose sweep timer republishes rows left behind."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web
from aiokafka.errors import KafkaError

from core.aio import owned_task, within
from core.appkeys import KAFKA, OUTBOX_WAKE, PG_POOL, RELAY, SETTINGS
from realtime.relay import OutboxRelay

log = logging.getLogger("boxoffice.jobs")

FINAL_PASS_TIMEOUT = 2.0


async def outbox_ctx(app: web.Application) -> AsyncIterator[None]:
    """One relay per node: publishes right after commits and sweeps on its timer (see realtime.relay)."""
    relay = OutboxRelay(app[PG_POOL], app[KAFKA], app[OUTBOX_WAKE], app[SETTINGS])
    app[RELAY] = relay
    async with owned_task(relay.run(), "outbox-relay"):
        yield
    # a graceful stop publishes what its last commits wrote; anything left is swept by the other nodes
    try:
        await within(FINAL_PASS_TIMEOUT, relay.publish_pending())
    except (TimeoutError, KafkaError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.info("outbox: final pass at shutdown left rows for the sweepers: %r", exc)
