"""Seat channels on one node, against the real embedded services: snapshots, changes, the outbox, the consumer.

Every change a socket sees went the whole way: booking commit -> outbox row -> relay -> Kafka ->
this node's consumer -> hub -> socket. Assertions are what a client sees (messages, codes, close
codes) and what PostgreSQL holds afterwards.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from aiokafka.structs import RecordMetadata, TopicPartition

from core.appkeys import CONSUMER, KAFKA, SETTINGS
from core.settings import Settings
from loadtests.invariants import broken, wait_for_invariants
from realtime.consumer import STALL_SECONDS
from realtime.hub import Hub
from realtime.kafka import Echo
from server.app import create_app
from server.embedded import EmbeddedStack
from tests.cluster_support import wait_until
from tests.conftest import ADMIN, bearer, make_session, make_user, seat_ids, with_settings
from tests.sockets.support import WAIT, SeatWatcher, converge, hold, rest_seats, watch

# ------------------------------------------------------------------ snapshot and changes

async def test_snapshot_shape_and_mine(client: TestClient, scene: dict[str, Any]) -> None:
    ana, sid, seats = scene["ana"], scene["sid"], scene["seats"]
    assert (await hold(client, ana, sid, seats[:2])).status == 201
    ws = await client.ws_connect(f"/ws/sessions/{sid}?token={ana['token']}")
    assert ws._response.headers["X-Node-Id"] == "test-node"
    watcher = SeatWatcher(ws)
    snap = await watcher.wait_for("snapshot")
    assert set(snap) == {"type", "sessionId", "nodeId", "serverTime", "holdTtlSeconds", "seats"}
    assert (snap["sessionId"], snap["nodeId"], snap["holdTtlSeconds"]) == (sid, "test-node", 30)
    assert abs(snap["serverTime"] - time.time() * 1000) < 60_000
    assert [s["id"] for s in snap["seats"]] == seats
    assert set(snap["seats"][0]) == {"id", "status", "version", "rowLabel", "seatNumber", "mine"}
    assert [(s["status"], s["mine"]) for s in snap["seats"][:3]] == [("RESERVED", True)] * 2 + [("AVAILABLE", False)]
    assert (snap["seats"][0]["rowLabel"], snap["seats"][0]["seatNumber"]) == ("A", 1)
    assert watcher.seats == await rest_seats(client, sid)
    other = await watch(client, sid, scene["bob"]["token"])  # someone else's hold is not "mine"
    assert not any(s["mine"] for s in other.snapshots[0]["seats"])


async def test_rest_hold_confirm_cancel_reach_the_socket(client: TestClient, scene: dict[str, Any]) -> None:
    ana, sid, seats = scene["ana"], scene["sid"], scene["seats"]
    watcher = await watch(client, sid)
    before = dict(watcher.seats)

    resp = await hold(client, ana, sid, seats[:2])
    reservation = await resp.json()
    msg = await watcher.wait_for("seats")
    assert isinstance(msg["committedAt"], int)
    assert {c["id"]: c["status"] for c in msg["changes"]} == {seats[0]: "RESERVED", seats[1]: "RESERVED"}
    assert all(c["reservationId"] == reservation["id"] for c in msg["changes"])
    assert all(c["version"] > before[c["id"]][1] for c in msg["changes"])

    resp = await client.post(f"/reservations/{reservation['id']}/confirm", headers=bearer(ana["token"]))
    assert resp.status == 201
    await watcher.until(lambda w: w.seats[seats[0]][0] == w.seats[seats[1]][0] == "SOLD")

    second = await (await hold(client, ana, sid, [seats[2]])).json()
    await watcher.until(lambda w: w.seats[seats[2]][0] == "RESERVED")
    resp = await client.delete(f"/reservations/{second['id']}", headers=bearer(ana["token"]))
    assert resp.status == 204
    await watcher.until(lambda w: w.seats[seats[2]][0] == "AVAILABLE")
    assert watcher.seats[seats[2]][1] == before[seats[2]][1] + 2
    assert watcher.seats == await rest_seats(client, sid)


async def test_hold_expiry_reaches_the_socket(aiohttp_client: Any, base_settings: Settings) -> None:
    client = await aiohttp_client(create_app(with_settings(base_settings, hold_ttl_seconds=1)))
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    watcher = await watch(client, session["id"])
    assert watcher.snapshots[0]["holdTtlSeconds"] == 1
    ana = await make_user(client)
    assert (await hold(client, ana, session["id"], seats[:1])).status == 201
    await watcher.until(lambda w: w.seats[seats[0]][0] == "RESERVED")
    await watcher.until(lambda w: w.seats[seats[0]][0] == "AVAILABLE", within=8)
    assert watcher.seats == await rest_seats(client, session["id"])


async def test_sweeper_publishes_a_commit_nobody_announced(client: TestClient, scene: dict[str, Any],
                                                          pg: asyncpg.Connection) -> None:
    """A hold committed without waking any relay (its node died before publishing) still reaches sockets."""
    sid, seats = scene["sid"], scene["seats"]
    watcher = await watch(client, sid)
    await pg.fetchrow("SELECT * FROM bx_hold($1, $2, $3, $4, $5, $6, $7)", uuid.uuid4(),
                      uuid.UUID(scene["ana"]["id"]), uuid.UUID(sid), [uuid.UUID(seats[5])], 30_000, 0, None)
    await watcher.until(lambda w: w.seats[seats[5]][0] == "RESERVED", within=5)
    report = await wait_for_invariants(pg, [sid], timeout=5)
    assert not report["outbox_published"]


# ------------------------------------------------------------------ convergence and the outbox

def test_the_tick_lengthens_with_the_frames_a_flush_writes() -> None:
    class Socket:  # what the hub reads of a connection and calls on it
        def __init__(self, session_id: str) -> None:
            self.session_id, self.frames = session_id, 0

        def send_shared(self, frame: bytes, wire: bytes) -> None:
            self.frames += 1

    def change(session_id: str) -> dict[str, Any]:
        return {"sessionId": session_id, "committedAt": 0, "changes": [{"id": "s1", "version": 2}]}

    hub = Hub(0.02, max_frames_per_second=1000)
    busy = [Socket("busy") for _ in range(20)]
    quiet = [Socket("quiet") for _ in range(500)]
    for sock in busy + quiet:
        hub.add(sock)  # type: ignore[arg-type]
    assert hub.current_tick() == 0.02  # nothing written yet
    hub.publish(change("busy"))
    hub.flush()
    # 20 frames written: within 1,000 frames/s at the 20 ms tick; the 500 quiet sockets cost nothing
    assert [s.frames for s in busy] == [1] * 20 and hub.current_tick() == 0.02
    hub.publish(change("busy"))
    hub.publish(change("quiet"))
    hub.flush()
    assert hub.last_frames == 520 and hub.current_tick() == pytest.approx(0.52)  # 520 frames: 0.52 s to the next
    assert Hub(0.02).current_tick() == 0.02  # no budget: the fixed tick


async def test_a_long_tick_puts_changes_that_come_together_in_one_frame(aiohttp_client: Any,
                                                                         base_settings: Settings) -> None:
    # one socket and a budget of 1 frame/s: a 1 s tick. The first change after a quiet spell goes at
    # once; the next ones, 0.15 s apart and so within the tick, wait for it and go as one frame (at the
    # fixed 20 ms tick, each would be a frame of its own).
    client = await aiohttp_client(create_app(with_settings(base_settings, ws_max_frames_per_second=1)))
    session = await make_session(client)
    sid, seats, ana = session["id"], await seat_ids(client, session["id"]), await make_user(client, "Ana")
    watcher = await watch(client, sid)
    for seat in seats[:3]:
        assert (await hold(client, ana, sid, [seat])).status == 201
        await asyncio.sleep(0.15)
    await watcher.until(lambda w: all(w.seats[seat][0] == "RESERVED" for seat in seats[:3]))
    assert len(watcher.changes) == 3
    assert watcher.frames <= 2, watcher.frames


async def test_two_sockets_converge_after_random_operations(client: TestClient, scene: dict[str, Any],
                                                           pg: asyncpg.Connection) -> None:
    sid, seats = scene["sid"], scene["seats"]
    users = [scene["ana"], scene["bob"], await make_user(client, "Cy")]
    watchers = [await watch(client, sid, users[0]["token"]), await watch(client, sid)]
    rng = random.Random(4)
    pending: list[tuple[dict[str, Any], str]] = []
    for _ in range(60):
        op = rng.random()
        if op < 0.5 or not pending:
            user = rng.choice(users)
            resp = await hold(client, user, sid, rng.sample(seats, rng.randint(1, 3)))
            assert resp.status in (201, 409, 429), await resp.text()
            if resp.status == 201:
                pending.append((user, (await resp.json())["id"]))
        elif op < 0.75:
            user, rid = pending.pop(rng.randrange(len(pending)))
            resp = await client.post(f"/reservations/{rid}/confirm", headers=bearer(user["token"]))
            assert resp.status == 201
        else:
            user, rid = pending.pop(rng.randrange(len(pending)))
            assert (await client.delete(f"/reservations/{rid}", headers=bearer(user["token"]))).status == 204
    await converge(client, sid, *watchers)
    assert sum(len(w.changes) for w in watchers) > 0
    report = await wait_for_invariants(pg, [sid])
    assert not any(report.values()), broken(report)
    metrics_text = await (await client.get("/metrics", headers=ADMIN)).text()
    assert "boxoffice_broadcast_latency_seconds_count" in metrics_text
    assert "boxoffice_websockets_open 2.0" in metrics_text.splitlines()


def test_echo_flags_only_acknowledgements_the_consumer_should_have_read() -> None:
    echo = Echo()
    echo.sent([RecordMetadata("seat-events", 0, None, 7, 0, None, 0),
               RecordMetadata("seat-events", 1, None, 3, 0, None, 0),
               RecordMetadata("seat-events", 2, None, 40, 0, None, 0)])
    echo.seen(0, 6)  # read up to 6: 7 is still out
    assert echo.overdue({0: 0, 1: 0, 2: 41}, older_than=0) == (0, 7, pytest.approx(0, abs=1))
    echo.seen(0, 9)
    # partition 2's record came before where the client started: not expected back; partition 1's is
    assert echo.overdue({0: 0, 1: 0, 2: 41}, older_than=0)[:2] == (1, 3)
    assert echo.overdue({0: 0, 1: 0, 2: 41}, older_than=60) is None  # not overdue yet
    assert echo.overdue({0: 0}, older_than=0)[:2] == (1, 3)  # a partition the consumer does not read at all
    echo.seen(1, 3)
    assert echo.overdue({0: 0, 1: 0, 2: 41}, older_than=0) is None and echo.pending == {}
    echo.sent([RecordMetadata("seat-events", 5, None, 1, 0, None, 0)])
    echo.reset()  # a new assignment: nothing acknowledged before it is expected
    assert echo.overdue({}, older_than=0) is None


async def test_a_consumer_that_stops_fetching_is_replaced_and_sockets_resync(client: TestClient,
                                                                            scene: dict[str, Any]) -> None:
    sid, seats, ana = scene["sid"], scene["seats"], scene["ana"]
    consumer = client.app[CONSUMER]
    watcher = await watch(client, sid)
    first = await hold(client, ana, sid, seats[:1])
    assert first.status == 201
    await watcher.until(lambda w: w.seats[seats[0]][0] == "RESERVED")
    assignments, snapshots = consumer.assignments, len(watcher.snapshots)
    # aiokafka's fetch task can end while the client lives on (an internal error, or a cancellation); its
    # getmany() then returns nothing forever and reports nothing: this node's seat maps would freeze
    stalled_client = consumer.client
    assert stalled_client is not None and stalled_client._fetcher is not None
    stalled_client._fetcher._fetch_task.cancel()
    await asyncio.sleep(0.5)  # a fetch already in flight ends with the long poll (KAFKA_FETCH_MAX_WAIT_MS)
    assert stalled_client._fetcher._fetch_task.done()
    stopped = time.monotonic()
    second = await hold(client, ana, sid, seats[1:2])
    assert second.status == 201
    # the consumer sees its client's fetch task has ended: it starts over with a new client and every
    # socket resyncs from PostgreSQL
    await watcher.until(lambda w: w.seats[seats[1]][0] == "RESERVED", within=WAIT)
    print(f"the change reached the socket {time.monotonic() - stopped:.1f}s after the fetch task stopped")
    assert consumer.client is not stalled_client
    assert consumer.assignments == assignments + 1
    assert len(watcher.snapshots) > snapshots
    metrics_text = await (await client.get("/metrics", headers=ADMIN)).text()
    assert 'boxoffice_kafka_consumer_restarts_total{reason="stalled"}' in metrics_text
    # and the new client carries later changes as changes
    third = await hold(client, ana, sid, seats[2:3])
    assert third.status == 201
    await watcher.until(lambda w: w.seats[seats[2]][0] == "RESERVED")
    await converge(client, sid, watcher)


async def test_a_client_that_stops_reading_with_its_fetch_task_alive_is_replaced(client: TestClient) -> None:
    consumer, link = client.app[CONSUMER], client.app[KAFKA]
    stalled_client = consumer.client
    assert stalled_client is not None and link.producer is not None
    assignments = consumer.assignments
    # the client stops reading every partition while its fetch task lives on ...
    stalled_client.pause(*stalled_client.assignment())
    # ... and this node publishes an event and gets it acknowledged, as its relay does for each commit:
    # the broker's end moves past a position that stands still (and the event is not read back)
    record = await link.producer.send_and_wait(client.app[SETTINGS].kafka_topic, value=b'{"type":"probe"}')
    link.echo.sent([record])
    started = time.monotonic()

    async def replaced() -> bool:
        return consumer.assignments > assignments

    assert await wait_until(replaced, within=STALL_SECONDS + 5)
    print(f"replaced {time.monotonic() - started:.1f}s after the unread acknowledgement")
    assert time.monotonic() - started >= STALL_SECONDS - 1
    assert consumer.client is not stalled_client
    metrics_text = await (await client.get("/metrics", headers=ADMIN)).text()
    assert 'boxoffice_kafka_consumer_restarts_total{reason="stalled"}' in metrics_text


async def test_a_record_served_past_an_unread_one_is_read_again_not_skipped(client: TestClient,
                                                                           scene: dict[str, Any]) -> None:
    """The embedded broker can serve a record past one it acknowledged but has not yet made readable
    (concurrent producers on one partition); aiokafka would move past the hole and that change would never
    reach this node's sockets. Here the client is moved past a record behind the consumer's back: the
    consumer sees the hole in the offsets, reads again from it, and delivers both changes in order."""
    sid, seats, ana = scene["sid"], scene["seats"], scene["ana"]
    consumer, link = client.app[CONSUMER], client.app[KAFKA]
    watcher = await watch(client, sid)
    kafka_client = consumer.client
    assert kafka_client is not None
    tps = sorted(kafka_client.assignment())
    kafka_client.pause(*tps)
    before = {tp: await kafka_client.position(tp) for tp in tps}
    assignments, snapshots = consumer.assignments, len(watcher.snapshots)
    for seat in seats[:2]:
        assert (await hold(client, ana, sid, [seat])).status == 201

    def published() -> TopicPartition | None:  # the relay's two acknowledgements, read from the echo
        return next((tp for tp in tps for entry in link.echo.pending.get(tp.partition, ())
                     if entry[0] >= before[tp] + 1), None)

    async def acknowledged() -> bool:
        return published() is not None

    assert await wait_until(acknowledged, within=WAIT)
    tp = published()
    assert tp is not None
    kafka_client.seek(tp, before[tp] + 1)  # the first hold's record is skipped over
    kafka_client.resume(*tps)
    await watcher.until(lambda w: all(w.seats[seat][0] == "RESERVED" for seat in seats[:2]), within=2.0)
    # both arrived as changes, well before any stall check could have replaced the client and resynced
    assert consumer.client is kafka_client and consumer.assignments == assignments
    assert len(watcher.snapshots) == snapshots
    assert {c["id"] for c in watcher.changes} >= set(seats[:2])
    metrics_text = await (await client.get("/metrics", headers=ADMIN)).text()
    assert 'boxoffice_kafka_consumer_gaps_total{outcome="filled"}' in metrics_text
    await converge(client, sid, watcher)


async def test_a_kafka_call_cancelled_under_the_consumer_does_not_end_it(client: TestClient, scene: dict[str, Any],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    sid, seats, ana = scene["sid"], scene["seats"], scene["ana"]
    consumer = client.app[CONSUMER]
    watcher = await watch(client, sid)
    assignments = consumer.assignments
    checks = consumer._check_positions
    injected = asyncio.Event()

    async def cancelled_under_it(*args: Any) -> None:
        # what a Kafka client stopped or replaced meanwhile does to a caller: its future is cancelled
        if not injected.is_set():
            injected.set()
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            await future
        await checks(*args)

    monkeypatch.setattr(consumer, "_check_positions", cancelled_under_it)
    await asyncio.wait_for(injected.wait(), WAIT)
    # the consumer starts over with a new client (and a resync) instead of ending without a word
    resp = await hold(client, ana, sid, seats[:1])
    assert resp.status == 201
    await watcher.until(lambda w: w.seats[seats[0]][0] == "RESERVED")
    assert consumer.assignments == assignments + 1
    metrics_text = await (await client.get("/metrics", headers=ADMIN)).text()
    assert 'boxoffice_kafka_consumer_restarts_total{reason="unexpected"}' in metrics_text


async def test_kafka_outage_holds_commit_and_sockets_converge(client: TestClient, scene: dict[str, Any],
                                                             stack: EmbeddedStack, pg: asyncpg.Connection) -> None:
    sid, seats, ana = scene["sid"], scene["seats"], scene["ana"]
    watchers = [await watch(client, sid, ana["token"]), await watch(client, sid)]
    kafka = stack["kafka"]
    kafka.kill()  # a crash; stop() is the same outage but Tansu takes ~5 s to exit on SIGTERM
    try:
        for i in range(4):
            resp = await hold(client, ana, sid, seats[2 * i:2 * i + 2])
            assert resp.status == 201, await resp.text()
        await asyncio.sleep(1.5)  # the relay has tried and failed: the rows wait in the outbox
        assert await pg.fetchval("SELECT count(*) FROM outbox WHERE session_id = $1 AND published_at IS NULL",
                                 uuid.UUID(sid)) == 4
    finally:
        kafka.start()
    restarted = time.monotonic()
    await converge(client, sid, *watchers, within=20)
    # the consumer saw the broker go away: every socket was resynced from PostgreSQL
    await asyncio.gather(*(w.until(lambda w: len(w.snapshots) >= 2) for w in watchers))
    report = await wait_for_invariants(pg, [sid], timeout=20)
    assert not any(report.values()), broken(report)
    # after the restart the stream flows again: a new change arrives as a change
    resp = await hold(client, ana, sid, seats[10:11])
    assert resp.status == 201
    await watchers[1].until(lambda w: w.seats[seats[10]][0] == "RESERVED", within=WAIT)
    print(f"converged {time.monotonic() - restarted:.1f}s after the broker restart")
    # and once what was in flight across the restart has settled, one more resync (see SETTLE_RESYNC)
    await watchers[0].until(lambda w: len(w.snapshots) >= 3, within=WAIT)
    await converge(client, sid, *watchers)
