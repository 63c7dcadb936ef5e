"""The waiting room's second inlet (at most N buyers inside at once), the room that turns itself on, the socket's
door, the admission rate on one node, and a session without a waiting room over the socket. One node, real
PostgreSQL and Redis; several nodes: tests/test_waiting_room_cluster.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from core.appkeys import QUEUE_AUTO, WAITING_ROOM
from core.settings import Settings
from server.app import create_app
from storage.redis_keys import queue_keys
from storage.waiting_room import Admissions
from tests.conftest import ADMIN, bearer, make_session, make_user, seat_ids, table_counts, with_settings
from tests.test_waiting_room import hold, join, place


async def configure(client: TestClient, session_id: str, **body: Any) -> dict[str, Any]:
    resp = await client.put(f"/sessions/{session_id}/queue", json=body, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def admitted_flags(client: TestClient, users: list[dict[str, Any]], session_id: str) -> list[bool]:
    return [(await place(client, u, session_id))[1].get("admitted", False) for u in users]


async def until(check: Any, within: float = 10.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(interval)


async def test_the_capacity_inlet_lets_n_in_and_the_next_as_one_buys_leaves_or_runs_out_of_time(
        aiohttp_client: Any, base_settings: Settings, pg: asyncpg.Connection) -> None:
    client = await aiohttp_client(create_app(with_settings(base_settings, queue_admission_ttl_seconds=3)))
    session = await make_session(client)
    users = [await make_user(client, f"Buyer {n}") for n in range(6)]
    seats = await seat_ids(client, session["id"])
    state = await configure(client, session["id"], enabled=True, capacity=2)
    assert (state["inlet"], state["capacity"], state["rate"]) == ("capacity", 2, None)

    places = [await join(client, u, session["id"]) for u in users]
    assert [p["admitted"] for p in places] == [True, True, False, False, False, False]
    assert places[2]["ahead"] == 0 and places[5]["ahead"] == 3 and places[5]["estimatedWaitSeconds"] >= 1
    # an admission lasts as long as the time inside: the TTL, not more
    expires = places[0]["admissionExpiresAt"]
    assert expires is not None and expires.endswith("Z")
    assert await admitted_flags(client, users, session["id"]) == [True, True, False, False, False, False]

    # buyer 0 buys: buyer 2 goes in
    status, reservation = await hold(client, users[0], session["id"], seats[0], places[0]["admission"])
    assert status == 201, reservation
    resp = await client.post(f"/reservations/{reservation['id']}/confirm", headers=bearer(users[0]["token"]))
    assert resp.status in (200, 201), await resp.text()
    assert (await place(client, users[2], session["id"]))[1]["admitted"]
    # buyer 1 gives up: buyer 3 goes in; buyer 1 has no place any more
    resp = await client.delete(f"/sessions/{session['id']}/queue", headers=bearer(users[1]["token"]))
    assert resp.status == 204
    status, body = await place(client, users[1], session["id"])
    assert (status, body["code"]) == (404, "not_in_queue")
    flags = await admitted_flags(client, users[2:], session["id"])
    assert flags == [True, True, False, False]
    admission_3 = (await place(client, users[3], session["id"]))[1]["admission"]

    # nobody buys or leaves: once the time inside runs out (3 s), buyers 4 and 5 go in
    async def both_in() -> bool:
        return all(await admitted_flags(client, users[4:], session["id"]))

    started = time.monotonic()
    await until(both_in, within=8.0)
    assert time.monotonic() - started > 1.0  # not before their time was up
    # buyer 3's time is over: their admission no longer holds, and their place is gone
    status, body = await hold(client, users[3], session["id"], seats[3], admission_3)
    assert (status, body["code"]) == (403, "not_admitted")
    assert (await place(client, users[3], session["id"]))[0] == 404


async def test_the_inside_never_holds_more_than_its_capacity_under_concurrent_joins(client: TestClient) -> None:
    session = await make_session(client)
    users = list(await asyncio.gather(*(make_user(client, f"B{n}") for n in range(30))))
    await configure(client, session["id"], enabled=True, capacity=5)
    places = await asyncio.gather(*(join(client, u, session["id"]) for u in users))
    positions = sorted(p["position"] for p in places)
    assert positions == list(range(positions[0], positions[0] + 30))
    admitted = sorted(p["position"] for p in places if p["admitted"])
    assert admitted == positions[:5]  # the first five in join order, and no more


async def test_the_room_turns_itself_on_past_the_demand_threshold_and_never_over_an_admins_choice(
        aiohttp_client: Any, base_settings: Settings, pg: asyncpg.Connection) -> None:
    settings = with_settings(base_settings, queue_auto_holds_per_second=4, queue_auto_window_seconds=2,
                             queue_auto_rate=3)
    client = await aiohttp_client(create_app(settings))
    busy_session, quiet_session, closed_session = [await make_session(client) for _ in range(3)]
    user = await make_user(client)
    await configure(client, closed_session["id"], enabled=False)  # an admin said no waiting room here
    taken = {s["id"]: await seat_ids(client, s["id"]) for s in (busy_session, quiet_session, closed_session)}

    async def attempts(session_id: str, count: int) -> list[int]:
        seat = taken[session_id][0]  # the same seat: one wins, the rest are refused, all of them count
        return [(await hold(client, user, session_id, seat, None))[0] for _ in range(count)]

    assert (await join(client, user, busy_session["id"]))["enabled"] is False
    await attempts(quiet_session["id"], 2)  # 1 a second over 2 s: under the threshold of 4
    statuses = await attempts(busy_session["id"], 12) + await attempts(closed_session["id"], 12)
    assert set(statuses) <= {201, 409}

    async def turned_on() -> bool:
        return bool((await join(client, user, busy_session["id"]))["enabled"])

    await until(turned_on, within=6.0, interval=0.3)
    state = await pg.fetchrow("SELECT enabled, rate, capacity, auto FROM waiting_rooms WHERE session_id = $1",
                              uuid.UUID(busy_session["id"]))
    assert dict(state) == {"enabled": True, "rate": 3.0, "capacity": None, "auto": True}
    assert client.app[QUEUE_AUTO].turned_on == 1
    # holds on it now need an admission; the others are as before
    other = await make_user(client)
    status, body = await hold(client, other, busy_session["id"], taken[busy_session["id"]][5], None)
    assert (status, body["code"]) == (403, "not_admitted")
    await asyncio.sleep(1.5)  # another flush: the quiet and the closed sessions stayed as they were
    assert (await join(client, other, quiet_session["id"]))["enabled"] is False
    assert (await join(client, other, closed_session["id"]))["enabled"] is False
    assert (await hold(client, other, quiet_session["id"], taken[quiet_session["id"]][5], None))[0] == 201


async def test_the_socket_refuses_forged_expired_and_someone_elses_admissions(
        client: TestClient, pg: asyncpg.Connection) -> None:
    session = await make_session(client)
    ana, bea = await make_user(client, "Ana"), await make_user(client, "Bea")
    seats = await seat_ids(client, session["id"])
    await configure(client, session["id"], enabled=True, rate=50)
    bea_admission = (await until(lambda: _admitted(client, bea, session["id"])))["admission"]
    admissions = client.app[WAITING_ROOM].admissions
    sid, ana_id = uuid.UUID(session["id"]), uuid.UUID(ana["id"])
    expired, _ = Admissions(admissions.secret, -5).sign(sid, ana_id)
    other_secret, _ = Admissions(b"y" * 32, 600).sign(sid, ana_id)
    forged = f"{int(time.time()) + 600}.{bea_admission.partition('.')[2]}"

    before = await table_counts(pg)
    async with client.ws_connect(f"/ws/sessions/{session['id']}",
                                 protocols=("boxoffice", f"bearer.{ana['token']}")) as ws:
        for n, refused in enumerate([None, "garbage", expired, other_secret, forged, bea_admission, "9" * 300]):
            body = {"type": "hold", "requestId": n, "sessionSeatIds": [seats[0]]}
            if refused is not None:
                body["admission"] = refused
            await ws.send_json(body)
            reply = await ws.receive_json(timeout=5)
            while reply.get("requestId") != n:
                reply = await ws.receive_json(timeout=5)
            expected = "validation_error" if refused and len(refused) > 256 else "not_admitted"
            assert (reply["type"], reply["code"]) == ("error", expected), (refused, reply)
    assert await table_counts(pg) == before


async def _admitted(client: TestClient, user: dict[str, Any], session_id: str) -> dict[str, Any] | None:
    body = await join(client, user, session_id)
    return body if body["admitted"] else None


async def test_one_node_admits_at_the_configured_rate(client: TestClient) -> None:
    rate = 20.0
    session = await make_session(client)
    users = list(await asyncio.gather(*(make_user(client, f"B{n}") for n in range(200))))
    await configure(client, session["id"], enabled=True, rate=rate)
    places = await asyncio.gather(*(join(client, u, session["id"]) for u in users))
    last = max(places, key=lambda p: p["position"])
    watcher = users[places.index(last)]

    async def serving() -> tuple[float, int]:
        started = time.monotonic()
        body = (await place(client, watcher, session["id"]))[1]
        return (started + time.monotonic()) / 2, body["position"] - body["ahead"] - 1

    t0, s0 = await serving()
    await asyncio.sleep(5.0)
    t1, s1 = await serving()
    measured = (s1 - s0) / (t1 - t0)
    print(f"\none node: configured {rate}/s, measured {measured:.2f}/s ({s1 - s0} in {t1 - t0:.2f} s)")
    assert abs(measured - rate) <= 0.05 * rate


async def test_a_session_without_a_waiting_room_holds_over_the_socket_as_today(client: TestClient) -> None:
    session = await make_session(client)
    ana = await make_user(client)
    seats = await seat_ids(client, session["id"])
    async with client.ws_connect(f"/ws/sessions/{session['id']}",
                                 protocols=("boxoffice", f"bearer.{ana['token']}")) as ws:
        await ws.send_json({"type": "hold", "requestId": "h", "sessionSeatIds": [seats[0]]})
        await ws.send_json({"type": "queue.join", "requestId": "j"})
        replies: dict[str, dict[str, Any]] = {}
        others: list[str] = []
        quiet_until = None
        while quiet_until is None or time.monotonic() < quiet_until:  # then 2 s more: no queue push may follow
            try:
                msg = await ws.receive_json(timeout=5 if quiet_until is None else quiet_until - time.monotonic())
            except TimeoutError:
                assert quiet_until is not None, replies
                break
            if msg.get("requestId") in ("h", "j"):
                replies[msg["requestId"]] = msg
                if len(replies) == 2:
                    quiet_until = time.monotonic() + 2.0
            else:
                others.append(msg["type"])
    assert replies["h"]["type"] == "hold.ok"
    assert (replies["j"]["type"], replies["j"]["enabled"], replies["j"]["admitted"]) == ("queue.admitted", False, True)
    assert not [t for t in others if t.startswith("queue.")]


async def test_a_lines_keys_expire_a_day_after_it_last_grew(client: TestClient, redis_client: Any) -> None:
    session = await make_session(client)
    users = [await make_user(client, f"B{n}") for n in range(3)]
    await configure(client, session["id"], enabled=True, capacity=1)
    for user in users:
        await join(client, user, session["id"])
    ttls = [await redis_client.pttl(key) for key in queue_keys(session["id"])]
    assert all(0 < ttl <= 86_400_000 for ttl in ttls), ttls  # the line, the order, last seen, who is inside
