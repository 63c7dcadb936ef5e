"""The outbox relay: publishes committed outbox rows to Kafka, then marks them published.

One loop per node does both jobs the design names. Woken by `OUTBOX_WAKE` right after a booking
commit it publishes that commit's event within milliseconds; on its timer (`outbox_sweep_interval`)
it is the sweeper that republishes whatever another node left behind (killed mid-publish) or a
broker outage held back. Rows are claimed with `FOR UPDATE SKIP LOCKED`, so any number of nodes
relay at once without publishing a row twice in the normal case; after a failure a row may be
published again (at least once), which consumers absorb through seat versions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import asyncpg
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from core import metrics
from core.aio import internal_cancel_as, stop_if_cancelled, within
from core.settings import Settings

if TYPE_CHECKING:
    from realtime.kafka import KafkaLink

log = logging.getLogger("boxoffice.relay")

BATCH_SIZE = 500
# a pass that cannot get its acks in this time gives its rows back (rollback) and retries later
PUBLISH_TIMEOUT = 2.0
MAX_BACKOFF = 2.0

CLAIM_SQL = """
SELECT id, session_id, payload::text AS payload FROM outbox
WHERE published_at IS NULL
ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
"""
MARK_SQL = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])"
BACKLOG_SQL = "SELECT count(*) FROM outbox WHERE published_at IS NULL"


class BrokerUnavailable(KafkaError):
    """The producer is not connected (yet, or any more)."""


class PublishFailed(KafkaError):
    """Kafka refused or did not acknowledge a batch in time: its rows stay unpublished."""


class OutboxRelay:
    """Publishes outbox rows in id order, right after commits and on a sweep timer."""

    def __init__(self, pool: asyncpg.Pool, link: KafkaLink, wake: asyncio.Event, settings: Settings) -> None:
        self.pool = pool
        self.link = link
        self.wake = wake
        self.topic = settings.kafka_topic
        self.sweep_interval = settings.outbox_sweep_interval

    async def run(self) -> None:
        """Forever: wait for a commit or the sweep timer, then publish everything unpublished."""
        failures = 0
        while True:
            stop_if_cancelled()
            swept = await self._wait(failures)
            try:
                with internal_cancel_as(RuntimeError):  # a client call cancelled under the pass: a failed pass
                    await self.publish_pending()
                    if swept or failures:
                        await self.update_backlog()
                if failures:
                    log.info("outbox relay recovered after %d failed passes", failures)
                failures = 0
            except KafkaError as exc:
                failures += 1
                self._log_failure("kafka", exc, failures)
                await self._reconnect()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                failures += 1
                self._log_failure("postgres", exc, failures)
            except Exception:  # noqa: BLE001 - the relay must outlive any one bad pass, or events stop leaving
                failures += 1
                log.exception("outbox relay: unexpected failure (%d failed passes); retrying", failures)

    async def _wait(self, failures: int) -> bool:
        """Sleep until the next pass; True when the sweep timer (not a commit) started it."""
        if failures:  # back off: a wake per commit must not turn an outage into a busy loop
            await asyncio.sleep(min(0.1 * 2 ** min(failures, 5), MAX_BACKOFF))
            self.wake.clear()
            return True
        try:
            await within(self.sweep_interval, self.wake.wait())
            swept = False
        except TimeoutError:
            swept = True
        # cleared before the pass: a commit landing during the pass wakes the next one
        self.wake.clear()
        return swept

    async def publish_pending(self) -> int:
        """Publish batches until nothing unpublished is left; the number of rows published."""
        total = 0
        while True:
            count = await self.publish_batch()
            total += count
            if count < BATCH_SIZE:
                return total

    async def publish_batch(self, limit: int = BATCH_SIZE) -> int:
        """Claim up to `limit` rows, produce them, wait for every ack, mark them published, commit."""
        async with self.pool.acquire() as con, con.transaction():
            rows = await con.fetch(CLAIM_SQL, limit)
            if not rows:
                return 0
            producer = self.link.producer
            if producer is None:
                raise BrokerUnavailable("kafka producer not connected")
            started = time.perf_counter()
            acks: list[asyncio.Future[RecordMetadata]] = []
            try:
                with internal_cancel_as(KafkaError):  # a producer replaced meanwhile cancels its acks
                    for row in rows:
                        acks.append(await producer.send(self.topic, value=row["payload"].encode(),
                                                        key=str(row["session_id"]).encode()))
                    self.link.echo.sent(await within(PUBLISH_TIMEOUT, asyncio.gather(*acks)))
            except (KafkaError, TimeoutError) as exc:
                for ack in acks:
                    ack.cancel()
                raise PublishFailed(repr(exc)) from exc
            await con.execute(MARK_SQL, [row["id"] for row in rows])
        log.debug("published %d outbox rows in %.1f ms", len(rows), (time.perf_counter() - started) * 1000)
        return len(rows)

    async def update_backlog(self) -> int:
        backlog: int = await self.pool.fetchval(BACKLOG_SQL)
        metrics.OUTBOX_BACKLOG.set(backlog)
        return backlog

    async def _reconnect(self) -> None:
        try:
            await self.link.reconnect()
        except (TimeoutError, KafkaError, OSError) as exc:
            log.debug("kafka reconnect failed: %r", exc)
        try:
            await self.update_backlog()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            pass

    @staticmethod
    def _log_failure(service: str, exc: BaseException, failures: int) -> None:
        if failures in (1, 10) or failures % 100 == 0:
            log.warning("outbox relay: %s unavailable (%d failed passes): %r", service, failures, exc)

