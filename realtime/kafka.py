"""The node's Kafka producer: started in the background and retried, so a broker outage never stops a node."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import RecordMetadata

from core.aio import internal_cancel_as, stop_if_cancelled, stop_task, within
from core.settings import Settings

log = logging.getLogger("boxoffice.kafka")
REFRESH_TIMEOUT = 5.0
ECHO_GRAIN = 0.1  # seconds: the acknowledgements of one such span are tracked as one
ECHO_MAX = 100  # spans kept per partition (10 s of them): the newest, when the consumer has not looked
# aiokafka's stop() of a client cancelled while it was still bootstrapping against an absent broker can
# wait on its own internals: a node's shutdown must not (seen once: a test app's teardown stuck 600 s)
STOP_TIMEOUT = 3.0


async def stop_quietly(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    """Stop an aiokafka producer or consumer, giving up after STOP_TIMEOUT; raises only if the caller's own
    task is cancelled (aiokafka's stop() can let out the cancellation of one of its internal tasks)."""
    with contextlib.suppress(Exception), internal_cancel_as(KafkaError):  # best effort: the client is dropped
        await within(STOP_TIMEOUT, client.stop())

# aiokafka logs every failed reconnect (~20 a second per client while a broker is down)
AIOKAFKA_LOGGERS = ("aiokafka", "aiokafka.conn", "aiokafka.cluster", "aiokafka.consumer.fetcher",
                    "aiokafka.producer.sender", "aiokafka.producer.producer", "aiokafka.admin.client")


class RepeatFilter(logging.Filter):
    """Lets each distinct message template through once per `interval` seconds (an outage, not a flood)."""

    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = time.monotonic()
        if now - self._last.get(key, -self.interval) < self.interval:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


def quiet_repeated_kafka_logs() -> None:
    """Install the repeat filter on aiokafka's loggers (once per process)."""
    for name in AIOKAFKA_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(RepeatFilter())


class Echo:
    """This node's acknowledged publishes, until its own consumer reads them back.

    Every node reads every partition, so a record this node's producer got acknowledged at (partition,
    offset) must reach this node's consumer within moments. One that does not shows a consumer that
    stopped reading (its fetch task can end without a word), reads the wrong partitions, or stands past
    the records (the embedded broker's ListOffsets can disagree with its fetch high watermark): an
    end-to-end check that needs no trust in the broker's offsets. Per partition it keeps the newest
    acknowledged offsets, oldest first, with when they were acknowledged.
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        # partition -> [offset, acked at] oldest first; acks within ECHO_GRAIN seconds share an entry
        self.pending: dict[int, collections.deque[list[float]]] = {}

    def sent(self, records: list[RecordMetadata]) -> None:
        now = time.monotonic()
        for record in records:
            entries = self.pending.get(record.partition)
            if entries is None:
                # bounded: a consumer that never gets to check must not make this grow with traffic
                entries = self.pending[record.partition] = collections.deque(maxlen=ECHO_MAX)
            if entries and now - entries[-1][1] < ECHO_GRAIN:
                entries[-1][0] = max(entries[-1][0], record.offset)
            else:
                entries.append([record.offset, now])

    def seen(self, partition: int, offset: int) -> None:
        """The consumer read `partition` up to `offset`."""
        entries = self.pending.get(partition)
        if entries is None:
            return
        while entries and entries[0][0] <= offset:
            entries.popleft()
        if not entries:
            del self.pending[partition]

    def overdue(self, starts: dict[int, int], older_than: float) -> tuple[int, int, float] | None:
        """(partition, offset, age) of an acknowledgement unread for `older_than` seconds, if any.

        `starts`: where the consumer's client started reading each partition; a record before that was
        written before it was positioned (it is not expected back). A partition missing from it is one the
        consumer does not read at all.
        """
        now = time.monotonic()
        for partition, entries in list(self.pending.items()):
            start = starts.get(partition, -1)
            while entries and entries[0][0] < start:
                entries.popleft()
            if not entries:
                del self.pending[partition]
            elif now - entries[0][1] >= older_than:
                return partition, int(entries[0][0]), now - entries[0][1]
        return None

    def reset(self) -> None:
        """A new assignment starts at the end: what was acknowledged before it is not expected back."""
        self.pending.clear()


class KafkaLink:
    """Owns the producer. `producer` is None while the broker cannot be reached."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer | None = None
        self.connected = asyncio.Event()
        self.echo = Echo()  # publishers note their acks, the consumer checks it reads them back
        self._task: asyncio.Task[None] | None = None
        # the start-up loop and the relay may both (re)connect: one producer at a time, never a leaked one
        self._connect_lock = asyncio.Lock()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            acks="all",
            enable_idempotence=self.settings.kafka_idempotence,
            linger_ms=0,
            request_timeout_ms=5000,
            # a backstop for refresh_metadata(): partitions are re-read at least this often
            metadata_max_age_ms=30_000,
            client_id=f"boxoffice-{self.settings.node_id}",
        )

    async def ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap_servers, request_timeout_ms=5000)
        await admin.start()
        try:
            topics = await admin.list_topics()
            if self.settings.kafka_topic not in topics:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [NewTopic(self.settings.kafka_topic, self.settings.kafka_partitions, 1)]
                    )
                log.info("created topic %s", self.settings.kafka_topic)
        finally:
            with contextlib.suppress(Exception):
                await within(STOP_TIMEOUT, admin.close())

    async def connect(self) -> AIOKafkaProducer:
        """Connect (or reconnect) the producer and make sure the topic exists."""
        async with self._connect_lock:
            await self.close_producer()
            producer = self._new_producer()
            try:
                with internal_cancel_as(KafkaError):
                    await producer.start()
                    await self.ensure_topic()
            except BaseException:
                await stop_quietly(producer)
                raise
            self.producer = producer
            self.connected.set()
            return producer

    async def reconnect(self, wait: float = 2.0) -> None:
        """After a failed publish: a fresh producer (fresh metadata) and the topic recreated if the broker lost it.

        While the start-up loop is still trying, wait for it instead of racing it.
        """
        if self._task is not None and not self._task.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await within(wait, asyncio.shield(self._task))
            return
        await self.connect()

    async def refresh_metadata(self) -> None:
        """Re-read the topic's partitions now. A memory-only broker that restarted may bring the topic back
        with another partition count, and it accepts a produce to a partition it no longer has: a producer
        left with the old count would key some sessions' events to partitions no consumer reads."""
        producer = self.producer
        if producer is None:
            return
        try:
            with internal_cancel_as(KafkaError):
                await within(REFRESH_TIMEOUT, producer.client.force_metadata_update())
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning("could not refresh the producer's metadata: %r", exc)

    async def close_producer(self) -> None:
        producer, self.producer = self.producer, None
        self.connected.clear()
        if producer is not None:
            await stop_quietly(producer)

    async def _connect_forever(self) -> None:
        delay = 0.2
        while True:
            stop_if_cancelled()
            try:
                await self.connect()
                return
            except (KafkaError, OSError) as exc:
                log.warning("kafka not reachable (%r); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def start(self, wait: float = 5.0) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name="kafka-connect")
        with contextlib.suppress(asyncio.TimeoutError):
            await within(wait, asyncio.shield(self._task))

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task, "kafka-connect")
        await self.close_producer()

    async def ping(self) -> None:
        """Readiness: the broker answers a metadata request now."""
        if self.producer is None:
            raise ConnectionError("kafka producer not connected")
        with internal_cancel_as(KafkaError):
            await self.producer.client.fetch_all_metadata()
