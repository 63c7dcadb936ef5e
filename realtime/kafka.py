"""The node's Kafka producer: started in the background and retried, so a broker outage never stops a node."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from storage.aio import within
from storage.settings import Settings

log = logging.getLogger("boxoffice.kafka")
REFRESH_TIMEOUT = 5.0
# aiokafka's stop() of a client cancelled while it was still bootstrapping against an absent broker can
# wait on its own internals: a node's shutdown must not (seen once: a test app's teardown stuck 600 s)
STOP_TIMEOUT = 3.0


async def stop_quietly(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    """Stop an aiokafka producer or consumer, giving up after STOP_TIMEOUT; never raises but cancellation."""
    with contextlib.suppress(Exception):
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


class KafkaLink:
    """Owns the producer. `producer` is None while the broker cannot be reached."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer | None = None
        self.connected = asyncio.Event()
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
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.close_producer()

    async def ping(self) -> None:
        """Readiness: the broker answers a metadata request now."""
        if self.producer is None:
            raise ConnectionError("kafka producer not connected")
        await self.producer.client.fetch_all_metadata()
