"""The node's seat-event consumer: reads every partition of seat-events and hands each event to the hub.

Every node reads everything (no consumer group: `assign()` of all partitions, starting at the end),
because any node may hold sockets of any session. The consumer also watches the stream's
continuity. The embedded broker keeps its log in memory only, so a restart brings back an empty
topic (maybe with another partition count); the consumer notices (offsets behind its position,
partitions changed, broker unreachable then back, or offsets out of range), starts a new client at
the new end and tells the hub to resync every socket from PostgreSQL, the source of truth; a few
seconds later it resyncs once more, after anything published across the restart has settled. It
also watches its client: an ended fetch task, a position that stands still for STALL_SECONDS while
fetches report more past it, or an event this node published and got acknowledged that does not come
back through its own consumer within STALL_SECONDS, means the client stopped reading (or reads the
wrong place), and it is replaced the same way. It delivers each partition's records without a hole:
the embedded broker can serve a record past one it has acknowledged but not yet made readable
(concurrent producers on one partition; `loadtests/broker_order.py` measures it: plain consumers miss
a few acknowledged records in thousands), so a record past the next expected offset sends the client
back to read again until the missing ones come (GAP_PATIENCE; after that, sockets resync). Every step is
bounded in time and no error ends the loop: a node whose consumer died would show frozen seat maps
while answering everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from core import metrics
from core.aio import internal_cancel_as, owned_task, stop_if_cancelled, within
from core.settings import Settings
from realtime.hub import Hub
from realtime.kafka import stop_quietly
from realtime.relay import PUBLISH_TIMEOUT

if TYPE_CHECKING:
    from realtime.kafka import KafkaLink

log = logging.getLogger("boxoffice.consumer")

WATCH_INTERVAL = 0.5  # how often the broker's metadata is compared with our assignment
REQUEST_TIMEOUT = 3.0
START_TIMEOUT = 10.0  # a client's start (bootstrap) and the topic check: bounded like every other step
POLL_MS = 200
POLL_BOUND = POLL_MS / 1000 + REQUEST_TIMEOUT  # getmany waits POLL_MS; more than this is a stuck client
# messages past our position for this long without it moving, or an event this node published (and got
# acknowledged) not read back for this long: the client stalled
STALL_SECONDS = 5.0
QUICK_BREAK = 2.0  # a break this soon after an assignment counts as quick: several in a row back off
MAX_BACKOFF = 2.0
# After a break, a second resync once every publish that was in flight across it has settled: a producer
# may still deliver a pre-restart batch into a partition the recreated topic does not have (Tansu takes it).
SETTLE_RESYNC = PUBLISH_TIMEOUT + 1.0
# A hole in a partition's offsets (a record past the next one expected): read again from the hole for up
# to this long, GAP_RETRY apart, before giving up on the missing records and resyncing every socket.
# Offsets of seat-events are dense: it is neither compacted nor written in transactions.
GAP_PATIENCE = 2.0
GAP_RETRY = 0.005


class StreamBroken(Exception):
    """The partitions we read are not the stream any more, or the client stopped reading them: start over
    with a new client at the end and resync sockets. `reason` is "broke" or "stalled" (a metric label)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class SeatEventConsumer:
    def __init__(self, settings: Settings, link: KafkaLink, hub: Hub) -> None:
        self.settings = settings
        self.topic = settings.kafka_topic
        self.link = link
        self.hub = hub
        self.assigned = asyncio.Event()  # set once positioned at the end of every partition
        self.assignments = 0  # how many times the stream was (re)assigned
        self.client: AIOKafkaConsumer | None = None  # the current Kafka client (a new one after every break)

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
        """Forever: a fresh client, assigned at the end, consumed until the stream breaks or stalls.

        Never returns and never dies: a broker outage backs off and retries, a break or a stall starts over
        with a new client (no state of the old one survives), and anything unexpected is logged and retried.
        """
        failures = 0
        quick_breaks = 0  # breaks right after an assignment, in a row: the broker is unsettled, slow down
        first = True  # any later assignment follows a break: it gets the settle resync too
        while True:
            stop_if_cancelled()
            consumer = self.client = self._new_consumer()
            assigned_at: float | None = None
            try:
                # aiokafka can let an internal cancellation out of a call: a failure, never the end of the loop
                # (before, a frozen node's task dump showed this task gone without a word)
                with internal_cancel_as(RuntimeError):
                    await within(START_TIMEOUT, consumer.start())
                    starts = await self._assign(consumer)
                    assigned_at = time.monotonic()
                    failures = 0
                    settle, first = not first, False
                    await self._consume(consumer, starts, settle)
            except StreamBroken as why:
                metrics.CONSUMER_RESTARTS.labels(why.reason).inc()
                log.warning("seat-events stream %s (%s): starting over at the end and resyncing sockets",
                            why.reason, why)
                quick = assigned_at is not None and time.monotonic() - assigned_at < QUICK_BREAK
                quick_breaks = quick_breaks + 1 if quick else 0
                await self.link.refresh_metadata()  # this node's events must go where consumers read
            except (TimeoutError, KafkaError, OSError) as exc:
                failures += 1
                metrics.CONSUMER_RESTARTS.labels("unavailable").inc()
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("seat-event consumer: kafka unavailable (%d tries): %r", failures, exc)
            except Exception:  # noqa: BLE001 - a dead consumer would silently freeze every seat map on this node
                failures += 1
                metrics.CONSUMER_RESTARTS.labels("unexpected").inc()
                log.exception("seat-event consumer failed unexpectedly (%d in a row); starting over", failures)
            finally:
                self.assigned.clear()
                await stop_quietly(consumer)
            if failures or quick_breaks:
                await asyncio.sleep(min(0.1 * 2 ** min(max(failures, quick_breaks), 5), MAX_BACKOFF))

    async def _partitions(self, consumer: AIOKafkaConsumer) -> set[int] | None:
        # a fresh metadata request (not the consumer's cache): fails while the broker is unreachable
        cluster = await within(REQUEST_TIMEOUT, consumer._client.fetch_all_metadata())
        return cluster.partitions_for_topic(self.topic)  # type: ignore[no-any-return]

    async def _assign(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
        """Assign every partition at its end; the positions (resolved now, before any snapshot is read)."""
        partitions = await self._partitions(consumer)
        if not partitions:  # a fresh (or restarted, memory-only) broker: create the topic
            await within(START_TIMEOUT, self.link.ensure_topic())
            partitions = await self._partitions(consumer)
            if not partitions:
                raise KafkaError(f"topic {self.topic} has no partitions yet")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await within(REQUEST_TIMEOUT, consumer.seek_to_end(*tps))
        starts = {tp: await within(REQUEST_TIMEOUT, consumer.position(tp)) for tp in tps}
        self.assignments += 1
        log.info("seat-event consumer positioned at the end of %s: %s", self.topic,
                 {tp.partition: offset for tp, offset in starts.items()})
        self.link.echo.reset()
        self.assigned.set()
        # events published before these positions were skipped: every socket takes a fresh snapshot
        self.hub.resync_all()
        return starts

    async def _consume(self, consumer: AIOKafkaConsumer, starts: dict[TopicPartition, int], settle: bool) -> None:
        """Deliver until the stream breaks or stalls (StreamBroken) or the broker goes (its error).

        `starts`: where the client started reading each partition (moved back if the broker's end was behind).
        """
        loop = asyncio.get_running_loop()
        next_check = loop.time() + WATCH_INTERVAL
        settle_at = loop.time() + SETTLE_RESYNC if settle else None
        lost = False
        tps = list(starts)
        unread = set(tps)  # partitions nothing has been read from yet
        standing: dict[TopicPartition, tuple[int, float]] = {}  # position behind the end, and since when
        expected = dict(starts)  # per partition, the offset of the next record to deliver
        holes: dict[TopicPartition, tuple[int, float]] = {}  # a hole being read again: its offset, since when
        while True:
            try:
                batches = await within(POLL_BOUND, consumer.getmany(*tps, timeout_ms=POLL_MS))
            except OffsetOutOfRangeError as exc:
                raise StreamBroken("broke", f"offsets out of range: {exc}") from None
            for tp, messages in batches.items():
                if messages:
                    unread.discard(tp)
                    self._deliver_in_order(consumer, tp, messages, expected, holes, loop.time())
            if holes:
                await asyncio.sleep(GAP_RETRY)  # the missing records are written in moments: no busy loop
            await within(REQUEST_TIMEOUT, self._check_positions(consumer, starts, expected, unread, standing,
                                                                loop.time()))
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
                raise StreamBroken("broke", "the broker was unreachable")
            if partitions != {tp.partition for tp in tps}:
                raise StreamBroken("broke", f"partitions changed to {sorted(partitions or ())}")
            fetch_task = getattr(consumer._fetcher, "_fetch_task", None)  # aiokafka's, private: checked defensively
            if fetch_task is not None and fetch_task.done():
                # its getmany() then returns nothing forever and says nothing
                raise StreamBroken("stalled", "the client's fetch task has ended")
            overdue = self.link.echo.overdue({tp.partition: start for tp, start in starts.items()}, STALL_SECONDS)
            if overdue is not None:
                partition, offset, age = overdue
                raise StreamBroken("stalled", f"this node's own event at {self.topic}[{partition}]@{offset}, "
                                              f"acknowledged {age:.1f}s ago, has not been read back")

    def _deliver_in_order(self, consumer: AIOKafkaConsumer, tp: TopicPartition, messages: list[ConsumerRecord],
                          expected: dict[TopicPartition, int], holes: dict[TopicPartition, tuple[int, float]],
                          now: float) -> None:
        """Deliver `tp`'s records from `expected[tp]` on, in offset order, stopping at a hole.

        A record past the one expected: the broker served it before an earlier one (the embedded broker
        does, with concurrent producers on a partition). The client goes back to the hole and reads again;
        records before it were delivered (one read again is skipped). A hole still open after GAP_PATIENCE
        is given up: its records are lost to this node, so every socket resyncs from PostgreSQL.
        """
        for message in messages:
            want = expected[tp]
            if message.offset < want:
                continue
            if message.offset > want:
                hole = holes.get(tp)
                if hole is None or hole[0] != want:
                    hole = holes[tp] = (want, now)
                if now - hole[1] < GAP_PATIENCE:
                    consumer.seek(tp, want)
                    break
                del holes[tp]
                metrics.CONSUMER_GAPS.labels("skipped").inc()
                log.warning("%s[%d]: records %d..%d never came (%.1fs); resyncing sockets", tp.topic,
                            tp.partition, want, message.offset - 1, now - hole[1])
                self.hub.resync_all()
            elif tp in holes:
                opened = holes.pop(tp)[1]
                metrics.CONSUMER_GAPS.labels("filled").inc()
                metrics.CONSUMER_GAP_SECONDS.observe(now - opened)
                log.info("%s[%d]: the records from %d came %.3fs after the hole was seen", tp.topic, tp.partition,
                         want, now - opened)
            self._deliver(message.value)
            expected[tp] = message.offset + 1
        self.link.echo.seen(tp.partition, expected[tp] - 1)

    async def _check_positions(self, consumer: AIOKafkaConsumer, starts: dict[TopicPartition, int],
                               expected: dict[TopicPartition, int], unread: set[TopicPartition],
                               standing: dict[TopicPartition, tuple[int, float]], now: float) -> None:
        """Each position against the end the broker's fetches report (the high watermark):

        - an end behind the position: the partition was recreated, its history gone (a break). Except where
          nothing was read since the client was positioned: the embedded broker's ListOffsets (which
          `seek_to_end` asks) can answer past the end its fetches report, and that end is the one that counts,
          so the client moves back to it instead of breaking the stream again and again;
        - an end past a position that has not moved for STALL_SECONDS: the client is stuck on that partition
          (seen with the embedded broker after a restart: position 5, end 9, nothing returned).
        """
        lag = 0
        for tp in starts:
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            if highwater < position:
                if tp not in unread:
                    raise StreamBroken("broke", f"{tp.topic}[{tp.partition}] end {highwater} "
                                                f"is behind position {position}")
                log.info("%s[%d]: the broker's end %d is behind the offset it listed (%d); reading from %d",
                         tp.topic, tp.partition, highwater, position, highwater)
                consumer.seek(tp, highwater)
                starts[tp] = expected[tp] = position = highwater
            lag += highwater - position
            since = standing.get(tp)
            if highwater == position:
                standing.pop(tp, None)
            elif since is None or since[0] != position:
                standing[tp] = (position, now)
            elif now - since[1] >= STALL_SECONDS:
                raise StreamBroken("stalled", f"{tp.topic}[{tp.partition}] stands at {position} for "
                                              f"{now - since[1]:.1f}s while the broker's end is {highwater}")
        metrics.KAFKA_LAG.set(lag)

    def _deliver(self, value: bytes | None) -> None:
        try:
            event = json.loads(value or b"")
        except ValueError:
            log.warning("skipping a seat event that is not JSON: %.200r", value)
            return
        if isinstance(event, dict):
            self.hub.publish(event)

    @contextlib.asynccontextmanager
    async def running(self, wait: float = 5.0) -> AsyncIterator[SeatEventConsumer]:
        """Run in the background; wait (bounded) for the first assignment so a new node misses nothing."""
        async with owned_task(self.run(), "seat-event-consumer"):
            with contextlib.suppress(asyncio.TimeoutError):
                await within(wait, self.assigned.wait())
            yield self
