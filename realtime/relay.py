"""The outbox relay: publishes committed outbox rows to Kafka, then marks them published.

One loop per node does both jobs the design names. Woken by `OUTBOX_WAKE` right after a booking
commit it publishes that commit's event within milliseconds; on its timer (`outbox_sweep_interval`)
it is the sweeper that republishes whatever another node left behind (killed mid-publish) or a
broker outage held back. Rows are claimed with `FOR UPDATE SKIP LOCKED`, so any number of nodes
relay at once without publishing a row twice in the normal case; after a failure a row may be
published again (at least once), which consumers absorb through seat versions.

`OUTBOX_PUBLISH=direct` measures (and offers) the other way: the node that committed a hold or release
produces its event itself right after the commit (`DirectPublisher`: one read of the committed row, no
claim transaction held across the broker's ack) and marks the row published once acknowledged. The row
is still written in the booking transaction, so nothing is lost: the relay then only sweeps, on its
timer, rows still unpublished `DIRECT_GRACE` seconds after their commit (the node died before the ack,
the broker was down, or events no direct publish covers: confirms and expiries).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from realtime import integration
from storage import metrics
from storage.aio import internal_cancel_as, stop_if_cancelled, within
from storage.settings import Settings

if TYPE_CHECKING:
    from realtime.kafka import KafkaLink

log = logging.getLogger("boxoffice.relay")

BATCH_SIZE = 500
# a pass that cannot get its acks in this time gives its rows back (rollback) and retries later
PUBLISH_TIMEOUT = 2.0
MAX_BACKOFF = 2.0

# direct mode: how long a row is left to the node that committed it before a sweeper publishes it
DIRECT_GRACE = 1.0

CLAIM_SQL = """
SELECT id, session_id, payload::text AS payload FROM outbox
WHERE published_at IS NULL AND created_at <= clock_timestamp() - $2 * interval '1 second'
ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
"""
MARK_SQL = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])"
# The unpublished events of given reservations: one per noted commit, so the scan of the partial index
# walks back from its newest entries and stops once it has them all (a forward or bitmap scan would
# also visit the entries of every row marked since the last vacuum, which grow with traffic).
DIRECT_SQL = """
SELECT id, session_id, payload::text AS payload FROM outbox
WHERE published_at IS NULL AND payload->>'reservationId' = ANY($1::text[]) ORDER BY id DESC LIMIT $2
"""
DIRECT_MARK_SQL = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[]) AND published_at IS NULL"
BACKLOG_SQL = "SELECT count(*) FROM outbox WHERE published_at IS NULL"


async def send_rows(con: asyncpg.Connection | asyncpg.Pool, producer: AIOKafkaProducer, topic: str,
                    rows: Sequence[asyncpg.Record], integration_events: bool) -> list[asyncio.Future[RecordMetadata]]:
    """Produce outbox rows to `topic` (key: the session) and, when INTEGRATION_EVENTS is on, the integration
    messages derived from them (realtime.integration); the acks, in produce order. On a failure the acks
    already produced are cancelled and the error raised: the rows stay unpublished."""
    acks: list[asyncio.Future[RecordMetadata]] = []
    try:
        for row in rows:
            acks.append(await producer.send(topic, value=row["payload"].encode(), key=str(row["session_id"]).encode()))
        if integration_events:
            for message in await integration.messages(con, [row["payload"] for row in rows]):
                acks.append(await producer.send(message.topic, value=message.value, key=message.key,
                                                headers=message.headers))
    except BaseException:
        for ack in acks:
            ack.cancel()
        raise
    return acks


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
        self.integration_events = settings.integration_events
        self.sweep_interval = settings.outbox_sweep_interval
        # direct mode: commits publish their own events; the relay only sweeps what they left behind
        self.sweep_only = settings.outbox_publish == "direct"
        self.min_age = DIRECT_GRACE if self.sweep_only else 0.0
        self.published = 0  # rows this node published (tests and logs read it)

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
        if self.sweep_only:
            await asyncio.sleep(self.sweep_interval)
            return True
        try:
            await within(self.sweep_interval, self.wake.wait())
            swept = False
        except TimeoutError:
            swept = True
        # cleared before the pass: a commit landing during the pass wakes the next one
        self.wake.clear()
        return swept

    async def publish_pending(self, min_age: float | None = None) -> int:
        """Publish batches until nothing unpublished (older than `min_age`) is left; the number of rows published."""
        total = 0
        while True:
            count = await self.publish_batch(min_age=min_age)
            total += count
            if count < BATCH_SIZE:
                return total

    async def publish_batch(self, limit: int = BATCH_SIZE, min_age: float | None = None) -> int:
        """Claim up to `limit` rows, produce them, wait for every ack, mark them published, commit."""
        async with self.pool.acquire() as con, con.transaction():
            rows = await con.fetch(CLAIM_SQL, limit, self.min_age if min_age is None else min_age)
            if not rows:
                return 0
            producer = self.link.producer
            if producer is None:
                raise BrokerUnavailable("kafka producer not connected")
            started = time.perf_counter()
            acks: list[asyncio.Future[RecordMetadata]] = []
            try:
                with internal_cancel_as(KafkaError):  # a producer replaced meanwhile cancels its acks
                    acks = await send_rows(con, producer, self.topic, rows, self.integration_events)
                    self.link.echo.sent(await within(PUBLISH_TIMEOUT, asyncio.gather(*acks)))
            except (KafkaError, TimeoutError) as exc:
                for ack in acks:
                    ack.cancel()
                raise PublishFailed(repr(exc)) from exc
            await con.execute(MARK_SQL, [row["id"] for row in rows])
        self.published += len(rows)
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


class DirectPublisher:
    """OUTBOX_PUBLISH=direct: produce the events of this node's holds and releases right after their commit.

    `publish` (called by the booking code after a commit) only notes the reservation; the loop reads the
    unpublished outbox rows of every reservation noted since its last pass (one query, no lock held),
    produces them in id order and hands their acks to a marker task, so the next pass does not wait for
    them. A row whose ack does not come stays unpublished and the relay's sweeper publishes it.
    """

    def __init__(self, pool: asyncpg.Pool, link: KafkaLink, settings: Settings) -> None:
        self.pool = pool
        self.link = link
        self.topic = settings.kafka_topic
        self.integration_events = settings.integration_events
        self.published = 0
        self._noted: list[str] = []
        self._ready = asyncio.Event()
        self._in_flight: set[int] = set()  # row ids produced, not yet acknowledged
        self._markers: set[asyncio.Task[None]] = set()
        self._failures = 0

    def publish(self, reservation_id: uuid.UUID) -> None:
        self._noted.append(str(reservation_id))
        self._ready.set()

    async def run(self) -> None:
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                noted, self._noted = self._noted, []
                try:
                    with internal_cancel_as(KafkaError):
                        await self._publish(noted)
                except (KafkaError, OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    self._failed(exc)  # the rows stay unpublished: the sweeper takes them
                except Exception:  # noqa: BLE001 - one bad pass must not end direct publishing
                    log.exception("outbox direct publish failed unexpectedly; left to the sweeper")
        finally:
            for task in self._markers:
                task.cancel()
            await asyncio.gather(*self._markers, return_exceptions=True)

    async def _publish(self, reservations: list[str]) -> None:
        producer = self.link.producer
        if producer is None:
            raise BrokerUnavailable("kafka producer not connected")
        found = await self.pool.fetch(DIRECT_SQL, list(set(reservations)), len(reservations))
        rows = [r for r in reversed(found) if r["id"] not in self._in_flight]  # in id order
        if not rows:
            return
        ids = [row["id"] for row in rows]
        self._in_flight.update(ids)
        try:
            acks = await send_rows(self.pool, producer, self.topic, rows, self.integration_events)
        except BaseException:
            self._in_flight.difference_update(ids)
            raise
        marker = asyncio.create_task(self._mark_when_acked(ids, acks), name="outbox-direct-mark")
        self._markers.add(marker)
        marker.add_done_callback(self._markers.discard)

    async def _mark_when_acked(self, ids: list[int], acks: list[asyncio.Future[RecordMetadata]]) -> None:
        try:
            with internal_cancel_as(KafkaError):  # a producer replaced meanwhile cancels its acks
                self.link.echo.sent(await within(PUBLISH_TIMEOUT, asyncio.gather(*acks)))
            await self.pool.execute(DIRECT_MARK_SQL, ids)
            self.published += len(ids)
            self._failures = 0
        except (KafkaError, OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            for ack in acks:
                ack.cancel()
            self._failed(exc)
        finally:
            self._in_flight.difference_update(ids)

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        if self._failures in (1, 10) or self._failures % 100 == 0:
            log.warning("outbox direct publish failed (%d in a row), left to the sweeper: %r", self._failures, exc)
