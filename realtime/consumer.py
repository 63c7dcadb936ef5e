"""The node's seat-event consumer: reads every partition of seat-events and hands each event to the hub.

Every node reads everything (no consumer group: `assign()` of all partitions, starting at the end),
because any node may hold sockets of any session. The consumer also watches the stream's
continuity. The embedded broker keeps its log in memory only, so a restart brings back an empty
topic (maybe with another partition count); the consumer notices (offsets behind its position,
partitions changed, broker unreachable then back, or offsets out of range), re-assigns at the new
end and tells the hub to resync every socket from PostgreSQL, the source of truth; a few seconds
later it resyncs once more, after anything published across the restart has settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from realtime.hub import Hub
from realtime.kafka import stop_quietly
from realtime.relay import PUBLISH_TIMEOUT
from storage import metrics
from storage.aio import owned_task, within
from storage.settings import Settings

if TYPE_CHECKING:
    from realtime.kafka import KafkaLink

log = logging.getLogger("boxoffice.consumer")

WATCH_INTERVAL = 0.5  # how often the broker's metadata is compared with our assignment
REQUEST_TIMEOUT = 3.0
POLL_MS = 200
MAX_BACKOFF = 2.0
# After a break, a second resync once every publish that was in flight across it has settled: a producer
# may still deliver a pre-restart batch into a partition the recreated topic does not have (Tansu takes it).
SETTLE_RESYNC = PUBLISH_TIMEOUT + 1.0


class StreamBroken(Exception):
    """The partitions we read are not the stream any more: re-assign at the end and resync sockets."""


class SeatEventConsumer:
    def __init__(self, settings: Settings, link: KafkaLink, hub: Hub) -> None:
        self.settings = settings
        self.topic = settings.kafka_topic
        self.link = link
        self.hub = hub
        self.assigned = asyncio.Event()  # set once positioned at the end of every partition
        self.assignments = 0  # how many times the stream was (re)assigned
        self.delivered = 0

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=None, enable_auto_commit=False,
            auto_offset_reset="none",  # never skip silently: an out-of-range offset means the stream broke
            fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,  # the hop latency (10 ms; 1 ms lost messages)
            request_timeout_ms=int(REQUEST_TIMEOUT * 1000) + 2000,
            client_id=f"boxoffice-{self.settings.node_id}-fanout",
        )

    async def run(self) -> None:
        """Forever: connect, assign at the end, consume until the stream breaks; back off while the broker is away."""
        failures = 0
        first = True  # any later assignment follows a break: it gets the settle resync too
        while True:
            consumer = self._new_consumer()
            try:
                await consumer.start()
                while True:
                    tps = await self._assign(consumer)
                    failures = 0
                    settle, first = not first, False
                    try:
                        await self._consume(consumer, tps, settle)
                    except StreamBroken as why:
                        log.warning("seat-events stream broke (%s): re-assigning and resyncing sockets", why)
                        await self.link.refresh_metadata()  # this node's events must go where consumers read
            except (TimeoutError, KafkaError, OSError) as exc:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("seat-event consumer: kafka unavailable (%d tries): %r", failures, exc)
            finally:
                self.assigned.clear()
                await stop_quietly(consumer)
            await asyncio.sleep(min(0.1 * 2 ** min(failures, 5), MAX_BACKOFF))

    async def _partitions(self, consumer: AIOKafkaConsumer) -> set[int] | None:
        # a fresh metadata request (not the consumer's cache): fails while the broker is unreachable
        cluster = await within(REQUEST_TIMEOUT, consumer._client.fetch_all_metadata())
        return cluster.partitions_for_topic(self.topic)  # type: ignore[no-any-return]

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        partitions = await self._partitions(consumer)
        if not partitions:  # a fresh (or restarted, memory-only) broker: create the topic
            await self.link.ensure_topic()
            partitions = await self._partitions(consumer)
            if not partitions:
                raise KafkaError(f"topic {self.topic} has no partitions yet")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await within(REQUEST_TIMEOUT, consumer.seek_to_end(*tps))
        for tp in tps:  # resolve the end offsets now, before any snapshot below is read
            await within(REQUEST_TIMEOUT, consumer.position(tp))
        self.assignments += 1
        self.assigned.set()
        # events published before these positions were skipped: every socket takes a fresh snapshot
        self.hub.resync_all()
        return tps

    async def _consume(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], settle: bool) -> None:
        loop = asyncio.get_running_loop()
        next_check = loop.time() + WATCH_INTERVAL
        settle_at = loop.time() + SETTLE_RESYNC if settle else None
        lost = False
        while True:
            try:
                batches = await consumer.getmany(*tps, timeout_ms=POLL_MS)
            except OffsetOutOfRangeError as exc:
                raise StreamBroken(f"offsets out of range: {exc}") from None
            for messages in batches.values():
                for message in messages:
                    self._deliver(message.value)
            await self._check_offsets(consumer, tps)
            if settle_at is not None and loop.time() >= settle_at:
                settle_at = None
                self.hub.resync_all()
            if loop.time() < next_check:
                continue
            next_check = loop.time() + WATCH_INTERVAL
            try:
                partitions = await self._partitions(consumer)
            except (TimeoutError, KafkaError, OSError):
                lost = True  # the broker may come back empty: resync when it answers again
                continue
            if lost:
                raise StreamBroken("the broker was unreachable")
            if partitions != {tp.partition for tp in tps}:
                raise StreamBroken(f"partitions changed to {sorted(partitions or ())}")

    async def _check_offsets(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        """A partition whose end is behind our position was recreated (its history is gone)."""
        lag = 0
        for tp in tps:
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            if highwater < position:
                raise StreamBroken(f"{tp.topic}[{tp.partition}] end {highwater} is behind position {position}")
            lag += highwater - position
        metrics.KAFKA_LAG.set(lag)

    def _deliver(self, value: bytes | None) -> None:
        try:
            event = json.loads(value or b"")
        except ValueError:
            log.warning("skipping a seat event that is not JSON: %.200r", value)
            return
        if isinstance(event, dict):
            self.delivered += 1
            self.hub.publish(event)

    @contextlib.asynccontextmanager
    async def running(self, wait: float = 5.0) -> AsyncIterator[SeatEventConsumer]:
        """Run in the background; wait (bounded) for the first assignment so a new node misses nothing."""
        async with owned_task(self.run(), "seat-event-consumer"):
            with contextlib.suppress(asyncio.TimeoutError):
                await within(wait, self.assigned.wait())
            yield self
