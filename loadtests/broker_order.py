"""Does a Kafka-protocol broker deliver every acknowledged record to every consumer? Not a test.

Three producers (acks=all, no linger) write concurrently into the partitions of a fresh topic, keys
spread over two partitions, while three consumers read every partition from the end, as the nodes'
seat-event consumers do. Afterwards each consumer's records are compared with every acknowledged
(partition, offset). `--in-order` makes the consumers do what `realtime.consumer` does: a record past
the next expected offset sends the client back to the hole until the missing records come.

The embedded Tansu broker was measured with this (see docs/performance.md, "The embedded broker"): plain consumers
missed acknowledged records (4 of 7,231 in one run, in whole batches); in-order consumers missed none.

Run:  .venv/bin/python -m loadtests.broker_order [--seconds 15] [--rate 200] [--wait-ms 10] [--in-order]
It starts its own Tansu unless KAFKA_BOOTSTRAP_SERVERS is set (then it creates a topic there).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from server.embedded import EmbeddedKafka

PARTITIONS = 6
CLIENTS = 3


async def run(boot: str, args: argparse.Namespace) -> dict[str, Any]:
    topic = f"broker-order-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=boot)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumers: list[AIOKafkaConsumer] = []
    got: list[dict[str, tuple[int, int]]] = [{} for _ in range(CLIENTS)]
    holes = [0] * CLIENTS
    for _ in range(CLIENTS):
        consumer = AIOKafkaConsumer(bootstrap_servers=boot, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="none", fetch_max_wait_ms=args.wait_ms)
        await consumer.start()
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        consumers.append(consumer)

    async def consume(i: int) -> None:
        consumer = consumers[i]
        expected = {tp: await consumer.position(tp) for tp in tps}
        while True:
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                for record in records:
                    if record.offset < expected[tp]:
                        continue
                    if args.in_order and record.offset > expected[tp]:
                        holes[i] += 1
                        consumer.seek(tp, expected[tp])
                        break
                    expected[tp] = record.offset + 1
                    got[i][record.value.decode()] = (tp.partition, record.offset)

    readers = [asyncio.create_task(consume(i)) for i in range(CLIENTS)]
    producers = [AIOKafkaProducer(bootstrap_servers=boot, acks="all", linger_ms=0) for _ in range(CLIENTS)]
    for producer in producers:
        await producer.start()
    acked: dict[str, tuple[int, int]] = {}

    async def produce(j: int, producer: AIOKafkaProducer) -> None:
        end, n = time.monotonic() + args.seconds, 0
        while time.monotonic() < end:
            sent = []
            for _ in range(1 + n % 3):  # 1 to 3 records in flight at once, like a relay pass
                value = f"{j}-{n}"
                n += 1
                sent.append((value, await producer.send(topic, value=value.encode(), key=b"k%d" % (n % 2))))
            for value, future in sent:
                meta = await future
                acked[value] = (meta.partition, meta.offset)
            await asyncio.sleep(1 / args.rate)

    await asyncio.gather(*(produce(j, p) for j, p in enumerate(producers)))
    await asyncio.sleep(3)  # let every consumer catch up
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for producer in producers:
        await producer.stop()
    for consumer in consumers:
        await consumer.stop()
    missing = [sorted(acked[v] for v in acked if v not in mine) for mine in got]
    return {"acknowledged": len(acked), "missing": missing, "holes_seen": holes,
            "duplicate_offsets": len(acked) - len(set(acked.values()))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=200.0, help="sends per second per producer")
    parser.add_argument("--wait-ms", type=int, default=10, help="consumers' fetch_max_wait_ms")
    parser.add_argument("--in-order", action="store_true", help="consumers read holes again (as the nodes do)")
    args = parser.parse_args()
    boot = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    with tempfile.TemporaryDirectory(prefix="broker-order-") as state:
        broker = None
        if not boot:
            broker = EmbeddedKafka(Path(state))
            broker.start()
            boot = broker.url
        try:
            result = asyncio.run(run(boot, args))
        finally:
            if broker is not None:
                broker.stop()
    print(f"command            : python -m loadtests.broker_order {' '.join(sys.argv[1:])}")
    print(f"acknowledged       : {result['acknowledged']} records, {result['duplicate_offsets']} offsets given twice")
    for i, missing in enumerate(result["missing"]):
        print(f"consumer {i + 1}         : missed {len(missing)} {missing[:6]}, holes seen "
              f"{result['holes_seen'][i]}")
    return 1 if any(result["missing"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
