"""The StarSoft API's integration events on Kafka (SEED_API.md section 4.1), with INTEGRATION_EVENTS on."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from core.settings import Settings
from server.app import create_app
from tests.conftest import with_settings
from tests.seed_compat.support import DATE, RESERVATION, RS, Caller, check, make_show

INTEGRATION_TOPICS = ("reservations-topic", "cinema.reservations", "cinema.sales", "cinema.seats")


async def read_events(consumer: AIOKafkaConsumer, wanted: int, ours: Callable[[dict[str, Any]], bool],
                      within: float = 20.0) -> list[Any]:
    """Records until `wanted` of them are `ours` (other tests' holds expire meanwhile: their events pass by)."""
    got: list[Any] = []
    deadline = time.monotonic() + within
    while len(got) < wanted and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=200)
        got.extend(r for records in batches.values() for r in records if ours(json.loads(r.value)))
    return got


async def test_integration_events_for_a_hold_a_cancel_an_expiry_and_a_confirm(
        aiohttp_client: Any, settings: Settings, fresh_database: str) -> None:
    """A database of its own: the nodes of other tests (a cluster may be up) relay their own database's rows,
    not this one's, so every event here is published by this node, with INTEGRATION_EVENTS on."""
    app_settings = with_settings(settings, database_url=fresh_database, integration_events=True,
                                 hold_ttl_seconds=1, expiry_sweep_interval=0.1)
    client = await aiohttp_client(create_app(app_settings))
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        assert set(INTEGRATION_TOPICS) <= set(await admin.list_topics())  # created on start
    finally:
        await admin.close()

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                fetch_max_wait_ms=50)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in INTEGRATION_TOPICS
                      for p in (consumer.partitions_for_topic(t) or {0})]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)  # fixed now: only what the actions below cause is read

        caller = Caller(client, tokens=True)
        _, session = await make_show(caller, price=35)
        seats = [s["id"] for s in (await caller.call("GET", f"/sessions/{session['id']}/seats", 200))["seats"]]
        user = await caller.create_user("Kafka Reader")
        hold_body = {"sessionId": session["id"]}
        cancelled = await caller.call("POST", "/reservations", 201, as_user=user["id"],
                                      body={**hold_body, "sessionSeatIds": seats[:1]})
        await caller.call("DELETE", f"/reservations/{cancelled['id']}", 204, as_user=user["id"])
        expired = await caller.call("POST", "/reservations", 201, as_user=user["id"],
                                    body={**hold_body, "sessionSeatIds": seats[1:2]})
        confirmed = await caller.call("POST", "/reservations", 201, as_user=user["id"],
                                      body={**hold_body, "sessionSeatIds": seats[2:4]})
        sale = await caller.call("POST", f"/reservations/{confirmed['id']}/confirm", 201, as_user=user["id"])
        mine = {cancelled["id"], expired["id"], confirmed["id"]}

        def ours(value: dict[str, Any]) -> bool:
            return (value.get("reservationId") or value.get("id")) in mine

        # 3 CREATED + 1 RESERVATION_CANCELLED + 1 reservation.expired + payment.confirmed + seat.sold
        records = await read_events(consumer, 7, ours)
    finally:
        await consumer.stop()

    events: dict[tuple[str, str], Any] = {}
    for record in records:
        value = json.loads(record.value)
        reservation_id = value.get("reservationId") or value.get("id")
        kind = value.get("event") or value.get("eventType")
        events[(record.topic, f"{kind}:{reservation_id}")] = record
        assert abs(int(dict(record.headers)["timestamp"]) - time.time() * 1000) < 60_000
    topics_kinds = sorted((topic, kind.split(":")[0]) for topic, kind in events)
    assert topics_kinds == sorted([
        ("reservations-topic", "CREATED"), ("reservations-topic", "CREATED"), ("reservations-topic", "CREATED"),
        ("reservations-topic", "RESERVATION_CANCELLED"), ("cinema.reservations", "reservation.expired"),
        ("cinema.sales", "payment.confirmed"), ("cinema.seats", "seat.sold")]), topics_kinds

    created = json.loads(events[("reservations-topic", f"CREATED:{confirmed['id']}")].value)
    check(created, {**RESERVATION, "reservationSeats": [RS]})
    assert created["status"] == "PENDING" and created["userId"] == user["id"]
    assert [rs["sessionSeatId"] for rs in created["reservationSeats"]] == seats[2:4]
    assert events[("reservations-topic", f"CREATED:{confirmed['id']}")].key is None

    cancel = json.loads(events[("reservations-topic", f"RESERVATION_CANCELLED:{cancelled['id']}")].value)
    assert cancel["sessionSeatIds"] == seats[:1] and cancel["reservationId"] == cancelled["id"]

    expiry_record = events[("cinema.reservations", f"reservation.expired:{expired['id']}")]
    expiry = json.loads(expiry_record.value)
    assert expiry_record.key is None
    assert expiry["sessionSeatIds"] == seats[1:2]
    # the fields that API's own consumer read but never got (8.4)
    assert (expiry["userId"], expiry["sessionId"], expiry["seatIds"]) == (user["id"], session["id"], seats[1:2])
    check(expiry, {"expiredAt": DATE})

    paid_record = events[("cinema.sales", f"payment.confirmed:{confirmed['id']}")]
    assert paid_record.key == sale["id"].encode()
    paid = json.loads(paid_record.value)
    assert (paid["saleId"], paid["totalAmount"], paid["confirmedAt"]) == (sale["id"], 70, sale["confirmedAt"])
    assert (paid["reservationId"], paid["userId"]) == (confirmed["id"], user["id"])

    sold_record = events[("cinema.seats", f"seat.sold:{confirmed['id']}")]
    assert sold_record.key == session["id"].encode()
    sold = json.loads(sold_record.value)
    assert (sold["sessionId"], sold["saleId"]) == (session["id"], sale["id"])
    assert sorted(sold["sessionSeatIds"]) == sorted(sold["seatIds"]) == sorted(seats[2:4])  # in no given order
    check(sold, {"soldAt": DATE})
    # after the sales message, as that API sends them
    assert paid_record.timestamp <= sold_record.timestamp


def test_integration_events_are_a_setting_off_by_default() -> None:
    assert Settings.from_env(env={}).integration_events is False
    assert Settings.from_env(env={"INTEGRATION_EVENTS": "true"}).integration_events is True


def test_integration_acks_are_not_expected_back_by_the_events_consumer() -> None:
    """The relay's acks go to the consumer's read-back check (Echo) only for the topic it reads."""
    from aiokafka.structs import RecordMetadata

    from realtime.kafka import Echo

    echo = Echo("seat-events")
    echo.sent([RecordMetadata("cinema.sales", 0, None, 7, 0, None, 0),
               RecordMetadata("seat-events", 1, None, 3, 0, None, 0)])
    assert set(echo.pending) == {1}
