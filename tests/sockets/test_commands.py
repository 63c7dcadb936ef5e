"""Seat channels on one node, against the real embedded PostgreSQL, Redis and Kafka: the socket's commands.

Every change a socket sees went the whole way: booking commit -> outbox row -> relay -> Kafka ->
this node's consumer -> hub -> socket. Assertions are what a client sees (messages, codes, close
codes) and what PostgreSQL holds afterwards.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from types import SimpleNamespace
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from core.appkeys import SNAPSHOTS
from core.settings import Settings
from realtime.messages import MAX_COMMANDS_IN_FLIGHT
from server.app import create_app
from tests.conftest import bearer, make_session, make_user, seat_ids, table_counts, with_settings
from tests.sockets.support import converge, hold, rest_seats, watch

# ------------------------------------------------------------------ socket commands

async def test_ws_hold_is_the_rest_hold(client: TestClient, scene: dict[str, Any], pg: asyncpg.Connection) -> None:
    ana, sid, seats = scene["ana"], scene["sid"], scene["seats"]
    watcher = await watch(client, sid, ana["token"])
    reply = await watcher.request({"type": "hold", "sessionSeatIds": seats[3:5]}, ("hold.ok",))
    reservation = reply["reservation"]
    rest = await (await hold(client, scene["bob"], sid, seats[6:7])).json()
    assert set(reservation) == set(rest) and reservation["status"] == "PENDING"
    assert (reservation["userId"], reservation["sessionId"]) == (ana["id"], sid)
    assert [s["id"] for s in reservation["seats"]] == seats[3:5]
    resp = await client.get(f"/reservations/{reservation['id']}", headers=bearer(ana["token"]))
    assert (await resp.json())["status"] == "PENDING"
    assert {k: v[0] for k, v in (await rest_seats(client, sid)).items() if v[0] != "AVAILABLE"} == {
        seats[3]: "RESERVED", seats[4]: "RESERVED", seats[6]: "RESERVED"}
    await converge(client, sid, watcher)

    counts = await table_counts(pg)
    rejected = await watcher.request({"type": "hold", "sessionSeatIds": seats[6:8]}, ("hold.rejected",))
    assert (rejected["code"], rejected["conflicts"]) == ("seats_unavailable", [seats[6]])
    assert await table_counts(pg) == counts  # nothing held, nothing written

    released = await watcher.request({"type": "release", "reservationId": reservation["id"]}, ("release.ok",))
    assert released["reservationId"] == reservation["id"]
    await watcher.until(lambda w: w.seats[seats[3]][0] == w.seats[seats[4]][0] == "AVAILABLE")
    again = await watcher.request({"type": "release", "reservationId": reservation["id"]}, ("error",))
    assert again["code"] == "not_pending"
    theirs = await watcher.request({"type": "release", "reservationId": rest["id"]}, ("error",))
    assert theirs["code"] == "not_owner"


async def test_ping_resync_and_bad_messages_keep_the_socket_open(client: TestClient, scene: dict[str, Any]) -> None:
    watcher = await watch(client, scene["sid"], scene["ana"]["token"])
    pong = await watcher.request({"type": "ping"}, ("pong",))
    assert set(pong) == {"type", "requestId"}
    await watcher.ws.send_json({"type": "resync"})
    assert (await watcher.wait_for("snapshot"))["sessionId"] == scene["sid"]
    assert len(watcher.snapshots) == 2

    cases: list[tuple[Any, str]] = [
        ("not json", "malformed_json"),
        ([1, 2], "malformed_json"),
        ({"requestId": "r"}, "validation_error"),
        ({"type": "teleport", "requestId": "r"}, "unknown_type"),
        ({"type": "hold", "requestId": "r", "sessionSeatIds": ["nope"]}, "validation_error"),
        ({"type": "hold", "requestId": "r", "sessionSeatIds": [scene["seats"][0]], "extra": 1}, "validation_error"),
        ({"type": "hold", "requestId": "r", "sessionSeatIds": []}, "invalid_seat_count"),
        ({"type": "hold", "requestId": "r", "sessionSeatIds": [str(uuid.uuid4())]}, "seats_not_in_session"),
        ({"type": "release", "requestId": "r"}, "validation_error"),
        ({"type": "release", "requestId": "r", "reservationId": str(uuid.uuid4())}, "reservation_not_found"),
        ({"type": "ping", "requestId": {"x": 1}}, "validation_error"),
    ]
    for payload, code in cases:
        await watcher.ws.send_str(payload if isinstance(payload, str) else json.dumps(payload))
        error = await watcher.wait_for("error")
        assert (error["code"], error["type"]) == (code, "error"), (payload, error)
        assert isinstance(error["message"], str) and error["message"]
        assert error["requestId"] == (payload.get("requestId") if isinstance(payload, dict) and
                                      isinstance(payload.get("requestId"), str) else None)
    await watcher.ws.send_bytes(b"\x00\x01")
    assert (await watcher.wait_for("error"))["code"] == "unsupported_frame"
    assert (await watcher.request({"type": "ping"}, ("pong",)))["type"] == "pong"  # still open


async def test_snapshot_reads_are_shared_by_sockets_asking_at_once(client: TestClient,
                                                                   scene: dict[str, Any]) -> None:
    reader, sid = client.app[SNAPSHOTS], scene["sid"]
    before = reader.queries
    reads = await asyncio.gather(*(reader.read(sid) for _ in range(10)))
    assert reader.queries == before + 1 and all(len(read.rows) == 16 for read in reads)
    await reader.read(sid)  # asked after that read: a fresh one
    assert reader.queries == before + 2


async def test_sockets_without_a_user_share_one_rendered_snapshot(client: TestClient,
                                                                  scene: dict[str, Any]) -> None:
    """Watchers that share a read share its frame; a user's socket still gets its own `mine`."""
    ana, sid, seats = scene["ana"], scene["sid"], scene["seats"]
    assert (await hold(client, ana, sid, seats[:1])).status == 201
    reader = client.app[SNAPSHOTS]
    sockets = [SimpleNamespace(session_id=sid, user_id=user) for user in (None, None, None, ana["id"])]
    frames = await asyncio.gather(*(reader.render(sock) for sock in sockets))  # type: ignore[arg-type]
    assert frames[0] is frames[1] is frames[2]
    watcher, mine = json.loads(frames[0]), json.loads(frames[3])
    assert [s["status"] for s in watcher["seats"][:2]] == ["RESERVED", "AVAILABLE"]
    assert [s["mine"] for s in watcher["seats"][:2]] == [False, False]
    assert [s["mine"] for s in mine["seats"][:2]] == [True, False]
    same = ("type", "sessionId", "nodeId", "holdTtlSeconds")
    assert [mine[k] for k in same] == [watcher[k] for k in same]
    assert await reader.render(sockets[0]) is not frames[0]  # a later socket: a fresh read, a fresh frame


async def test_auth_off_socket_holds_for_the_user_it_names(aiohttp_client: Any, base_settings: Settings) -> None:
    client = await aiohttp_client(create_app(with_settings(base_settings, auth_required=False)))
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    user = await make_user(client)
    watcher = await watch(client, session["id"])
    missing = await watcher.request({"type": "hold", "sessionSeatIds": seats[:1]}, ("error",))
    assert missing["code"] == "user_required"
    held = await watcher.request({"type": "hold", "sessionSeatIds": seats[:1], "userId": user["id"]}, ("hold.ok",))
    assert held["reservation"]["userId"] == user["id"]
    released = await watcher.request({"type": "release", "reservationId": held["reservation"]["id"]},
                                     ("release.ok",))
    assert released["reservationId"] == held["reservation"]["id"]


async def test_watch_without_a_valid_token_but_never_act(client: TestClient, scene: dict[str, Any],
                                                        pg: asyncpg.Connection) -> None:
    sid, seats = scene["sid"], scene["seats"]
    counts = await table_counts(pg)
    for token in (None, "not-a-real-token"):
        watcher = await watch(client, sid, token)
        assert not any(s["mine"] for s in watcher.snapshots[0]["seats"])
        refused = await watcher.request({"type": "hold", "sessionSeatIds": seats[:1]}, ("error",))
        assert refused["code"] == "unauthorized"
        refused = await watcher.request({"type": "release", "reservationId": str(uuid.uuid4())}, ("error",))
        assert refused["code"] == "unauthorized"
    assert await table_counts(pg) == counts
    assert all(status == "AVAILABLE" for status, _ in (await rest_seats(client, sid)).values())


async def test_a_slow_hold_does_not_stall_the_reader(client: TestClient, scene: dict[str, Any],
                                                     pg: asyncpg.Connection) -> None:
    """Holds run as tasks of their socket: while PostgreSQL keeps them waiting (the test holds the seats' row
    locks), a ping is answered; a hold beyond the socket's limit of commands in flight is refused at once
    with `too_many_requests` and writes nothing; the waiting holds land once the locks go."""
    ana, sid, seats = scene["ana"], scene["sid"], scene["seats"]
    watcher = await watch(client, sid, ana["token"])
    wanted = seats[:MAX_COMMANDS_IN_FLIGHT]
    lock = pg.transaction()
    await lock.start()
    try:
        await pg.execute("SELECT 1 FROM session_seats WHERE id = ANY($1::uuid[]) FOR UPDATE",
                         [uuid.UUID(s) for s in wanted])
        sent = []
        for seat in wanted:
            sent.append(request_id := uuid.uuid4().hex)
            await watcher.ws.send_json({"type": "hold", "requestId": request_id, "sessionSeatIds": [seat]})
        one_more = await watcher.request({"type": "hold", "sessionSeatIds": [seats[-1]]}, ("error",))
        assert one_more["code"] == "too_many_requests" and one_more["message"]
        async with asyncio.timeout(2):  # answered while every hold still waits on PostgreSQL
            pong = await watcher.request({"type": "ping"}, ("pong",))
        assert pong["type"] == "pong"
        assert await pg.fetchval("SELECT count(*) FROM reservations WHERE session_id = $1", uuid.UUID(sid)) == 0
    finally:
        await lock.rollback()
    replies: dict[str, dict[str, Any]] = {}
    while len(replies) < len(sent):
        msg = await watcher.receive()
        if msg.get("requestId") in sent:
            replies[msg["requestId"]] = msg
    assert {r["type"] for r in replies.values()} == {"hold.ok"}
    assert {s["id"] for r in replies.values() for s in r["reservation"]["seats"]} == set(wanted)
    assert (await rest_seats(client, sid))[seats[-1]][0] == "AVAILABLE"  # the refused hold took nothing


async def test_socket_idempotency_keys_take_what_rest_takes(client: TestClient, scene: dict[str, Any]) -> None:
    """The socket accepts an idempotency key of up to 255 characters, as REST does; a retry with it is the
    same reservation, and a longer key is refused."""
    ana, sid, seats = scene["ana"], scene["sid"], scene["seats"]
    watcher = await watch(client, sid, ana["token"])
    key = "k" * 255
    first = await watcher.request({"type": "hold", "sessionSeatIds": seats[:1], "idempotencyKey": key}, ("hold.ok",))
    again = await watcher.request({"type": "hold", "sessionSeatIds": seats[:1], "idempotencyKey": key}, ("hold.ok",))
    assert again["reservation"]["id"] == first["reservation"]["id"]
    too_long = await watcher.request({"type": "hold", "sessionSeatIds": seats[1:2], "idempotencyKey": key + "k"},
                                     ("error",))
    assert too_long["code"] == "validation_error" and "idempotencyKey" in too_long["details"]["fields"]
    assert (await rest_seats(client, sid))[seats[1]][0] == "AVAILABLE"
