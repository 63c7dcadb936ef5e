"""Outbox sweeping: runs the node's outbox relay, whose sweep timer republishes rows left behind
(and, with OUTBOX_PUBLISH=direct, the publisher the booking code hands each commit to)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web
from aiokafka.errors import KafkaError

from core.aio import owned_task, within
from realtime.relay import DirectPublisher, OutboxRelay
from server.typedefs import BOOKING, KAFKA, OUTBOX_WAKE, PG_POOL, RELAY, SETTINGS

log = logging.getLogger("boxoffice.jobs")

FINAL_PASS_TIMEOUT = 2.0


async def outbox_ctx(app: web.Application) -> AsyncIterator[None]:
    """One relay per node: publishes right after commits and sweeps on its timer (see realtime.relay)."""
    relay = OutboxRelay(app[PG_POOL], app[KAFKA], app[OUTBOX_WAKE], app[SETTINGS])
    app[RELAY] = relay
    async with contextlib.AsyncExitStack() as tasks:
        await tasks.enter_async_context(owned_task(relay.run(), "outbox-relay"))
        if app[SETTINGS].outbox_publish == "direct":
            direct = DirectPublisher(app[PG_POOL], app[KAFKA], app[SETTINGS])
            await tasks.enter_async_context(owned_task(direct.run(), "outbox-direct"))
            app[BOOKING].on_event = direct.publish
            tasks.callback(setattr, app[BOOKING], "on_event", None)
        yield
    # a graceful stop publishes what its last commits wrote; anything left is swept by the other nodes
    try:
        await within(FINAL_PASS_TIMEOUT, relay.publish_pending(min_age=0.0))  # direct mode's rows too
    except (TimeoutError, KafkaError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.info("outbox: final pass at shutdown left rows for the sweepers: %r", exc)
