"""The waiting room on one node: the switch, places in line, admissions over REST and the socket, the grace
period, a line Redis lost. Several nodes: tests/test_waiting_room_cluster.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core.appkeys import WAITING_ROOM
from core.settings import Settings
from server.app import create_app
from storage.redis_keys import queue_keys
from storage.waiting_room import Admissions
from tests.conftest import ADMIN, bearer, make_session, make_user, seat_ids, table_counts, with_settings


async def open_queue(client: TestClient, session_id: str, rate: float) -> None:
    resp = await client.put(f"/sessions/{session_id}/queue", json={"enabled": True, "rate": rate}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"sessionId": session_id, "enabled": True, "inlet": "rate", "rate": rate,
                                 "capacity": None, "auto": False}


async def join(client: TestClient, user: dict[str, Any], session_id: str) -> dict[str, Any]:
    resp = await client.post(f"/sessions/{session_id}/queue", headers=bearer(user["token"]))
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def place(client: TestClient, user: dict[str, Any], session_id: str) -> tuple[int, dict[str, Any]]:
    resp = await client.get(f"/sessions/{session_id}/queue", headers=bearer(user["token"]))
    return resp.status, await resp.json()


async def hold(client: TestClient, user: dict[str, Any], session_id: str, seat: str,
               admission: str | None) -> tuple[int, dict[str, Any]]:
    headers = bearer(user["token"]) | ({"X-Admission": admission} if admission is not None else {})
    resp = await client.post("/reservations", headers=headers,
                             json={"sessionId": session_id, "sessionSeatIds": [seat]})
    return resp.status, await resp.json()


async def admitted(client: TestClient, user: dict[str, Any], session_id: str, within: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        status, body = await place(client, user, session_id)
        assert status == 200, body
        if body["admitted"]:
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)


async def test_a_session_without_a_waiting_room_behaves_as_today(client: TestClient) -> None:
    session = await make_session(client)
    user = await make_user(client)
    seats = await seat_ids(client, session["id"])

    body = await join(client, user, session["id"])
    assert body == {"sessionId": session["id"], "enabled": False, "position": None, "ahead": 0,
                    "estimatedWaitSeconds": 0, "admitted": True, "admission": None, "admissionExpiresAt": None}
    assert (await place(client, user, session["id"]))[1] == body
    assert (await hold(client, user, session["id"], seats[0], None))[0] == 201
    # an admission header on such a session is simply not needed
    assert (await hold(client, user, session["id"], seats[1], "anything"))[0] == 201


async def test_only_the_admin_opens_a_waiting_room_and_the_rate_is_bounded(client: TestClient) -> None:
    session = await make_session(client)
    user = await make_user(client)
    url = f"/sessions/{session['id']}/queue"
    assert (await client.put(url, json={"enabled": True, "rate": 5})).status == 401
    resp = await client.put(url, json={"enabled": True, "rate": 5}, headers=bearer(user["token"]))
    assert (resp.status, (await resp.json())["code"]) == (403, "admin_required")
    for bad in ({"enabled": True}, {"enabled": True, "rate": 0}, {"enabled": True, "rate": 1e9},
                {"enabled": "x", "rate": 5}, {"enabled": 0, "rate": 0.1}, {"enabled": "true", "rate": 1},
                {"enabled": True, "rate": 5, "extra": 1}):
        resp = await client.put(url, json=bad, headers=ADMIN)
        assert (resp.status, (await resp.json())["code"]) == (400, "validation_error"), bad
    resp = await client.put(f"/sessions/{uuid.uuid4()}/queue", json={"enabled": True, "rate": 5}, headers=ADMIN)
    assert (resp.status, (await resp.json())["code"]) == (404, "session_not_found")
    resp = await client.put(url, json={"enabled": False}, headers=ADMIN)
    assert await resp.json() == {"sessionId": session["id"], "enabled": False, "inlet": None, "rate": None,
                                 "capacity": None, "auto": False}


async def test_holds_need_the_users_own_valid_admission_to_this_session(
        client: TestClient, pg: asyncpg.Connection) -> None:
    session, other_session = await make_session(client), await make_session(client)
    ana, bea = await make_user(client, "Ana"), await make_user(client, "Bea")
    seats = await seat_ids(client, session["id"])
    await open_queue(client, session["id"], 50)
    await open_queue(client, other_session["id"], 50)
    await join(client, ana, session["id"])
    await join(client, bea, session["id"])
    ana_admission = (await admitted(client, ana, session["id"]))["admission"]
    bea_admission = (await admitted(client, bea, session["id"]))["admission"]
    await join(client, ana, other_session["id"])
    other_admission = (await admitted(client, ana, other_session["id"]))["admission"]
    admissions = client.app[WAITING_ROOM].admissions
    expired, _ = Admissions(admissions.secret, -5).sign(uuid.UUID(session["id"]), uuid.UUID(ana["id"]))
    forged_expiry = str(int(time.time()) + 3600) + "." + ana_admission.partition(".")[2]
    other_secret, _ = Admissions(b"x" * 32, 600).sign(uuid.UUID(session["id"]), uuid.UUID(ana["id"]))

    before = await table_counts(pg)
    for refused in (None, "garbage", ana_admission[:-2] + "AA", forged_expiry, expired, other_secret,
                    bea_admission, other_admission,
                    "²²².x", "9999999999.é"):  # digits to str.isdigit() but not to int(); not ASCII
        status, body = await hold(client, ana, session["id"], seats[0], refused)
        assert (status, body["code"]) == (403, "not_admitted"), (refused, body)
    assert await table_counts(pg) == before

    assert (await hold(client, ana, session["id"], seats[0], ana_admission))[0] == 201
    assert (await hold(client, bea, session["id"], seats[1], bea_admission))[0] == 201


async def test_one_place_per_user_and_admission_in_join_order(client: TestClient) -> None:
    session = await make_session(client)
    users = [await make_user(client) for _ in range(6)]
    await open_queue(client, session["id"], 2)
    places = [await join(client, u, session["id"]) for u in users]
    first = places[0]["position"]
    assert [p["position"] for p in places] == list(range(first, first + 6))
    assert all(p["enabled"] for p in places)
    assert places[5]["ahead"] >= 4 and places[5]["estimatedWaitSeconds"] >= 2
    # joining again keeps the place
    assert (await join(client, users[3], session["id"]))["position"] == places[3]["position"]
    # whenever anyone is admitted, everyone who joined before is too
    seen: list[list[bool]] = []
    deadline = time.monotonic() + 10
    while not all(seen[-1] if seen else [False]):
        assert time.monotonic() < deadline
        seen.append([(await place(client, u, session["id"]))[1]["admitted"] for u in users])
        await asyncio.sleep(0.2)
    for row in seen:
        assert row == sorted(row, reverse=True), row


async def test_the_socket_waits_in_line_then_holds_with_its_admission(client: TestClient) -> None:
    session = await make_session(client)
    first, second = await make_user(client), await make_user(client)
    seats = await seat_ids(client, session["id"])
    await open_queue(client, session["id"], 1)
    await join(client, first, session["id"])

    async with client.ws_connect(f"/ws/sessions/{session['id']}",
                                 protocols=("boxoffice", f"bearer.{second['token']}")) as ws:
        await ws.send_json({"type": "hold", "requestId": "early", "sessionSeatIds": [seats[0]]})
        await ws.send_json({"type": "queue.join", "requestId": "j"})
        replies: dict[str, dict[str, Any]] = {}
        pushes: list[dict[str, Any]] = []
        received: list[float] = []
        while "queue.admitted" not in [p["type"] for p in pushes]:
            msg = await ws.receive_json(timeout=10)
            if msg.get("requestId") in ("early", "j"):
                replies[msg["requestId"]] = msg
            elif msg["type"].startswith("queue."):
                pushes.append(msg)
                received.append(time.monotonic())
        assert (replies["early"]["type"], replies["early"]["code"]) == ("error", "not_admitted")
        assert replies["j"]["type"] == "queue.position" and replies["j"]["ahead"] >= 1
        assert pushes[-1]["admitted"] and pushes[-1]["admission"]
        assert all(b - a >= 0.9 for a, b in zip(received, received[1:], strict=False))  # at most 1 push/s
        # the socket holds with the admission it was given
        await ws.send_json({"type": "hold", "requestId": "h", "sessionSeatIds": [seats[1]]})
        msg = await ws.receive_json(timeout=10)
        while msg.get("requestId") != "h":
            msg = await ws.receive_json(timeout=10)
        assert msg["type"] == "hold.ok", msg


async def test_a_buyer_who_leaves_gives_up_their_place_after_the_grace_period(
        aiohttp_client: Any, base_settings: Settings) -> None:
    client = await aiohttp_client(create_app(with_settings(base_settings, queue_grace_seconds=0.5)))
    session = await make_session(client)
    leaver, stayer = await make_user(client), await make_user(client)
    await open_queue(client, session["id"], 0.1)  # nobody is admitted during the test
    first = (await join(client, leaver, session["id"]))["position"]
    await join(client, stayer, session["id"])
    for _ in range(4):  # the stayer keeps asking; the leaver is gone
        await asyncio.sleep(0.3)
        assert (await place(client, stayer, session["id"]))[0] == 200
    status, body = await place(client, leaver, session["id"])
    assert (status, body["code"]) == (404, "not_in_queue")
    assert (await join(client, leaver, session["id"]))["position"] > first + 1  # back of the line


async def test_a_line_redis_lost_is_opened_again_and_admissions_stay_valid(
        client: TestClient, redis_client: Redis) -> None:
    session = await make_session(client)
    early, waiting, late = await make_user(client), await make_user(client), await make_user(client)
    seats = await seat_ids(client, session["id"])
    await open_queue(client, session["id"], 5)
    await join(client, early, session["id"])
    admission = (await admitted(client, early, session["id"]))["admission"]
    await open_queue(client, session["id"], 0.1)
    await join(client, waiting, session["id"])

    await redis_client.delete(*queue_keys(session["id"]))  # what a Redis restart leaves of the line: nothing

    status, body = await place(client, waiting, session["id"])
    assert (status, body["code"]) == (404, "not_in_queue")  # the place is gone ...
    assert (await join(client, late, session["id"]))["enabled"]  # ... the line is not: same rate, from 1
    assert (await join(client, waiting, session["id"]))["position"] == 2
    status, _ = await hold(client, waiting, session["id"], seats[1], None)
    assert status == 403
    assert (await hold(client, early, session["id"], seats[0], admission))[0] == 201


async def test_a_faster_rate_admits_no_burst_of_buyers_at_once(client: TestClient) -> None:
    session = await make_session(client)
    users = [await make_user(client) for _ in range(4)]
    await open_queue(client, session["id"], 0.1)
    places = [await join(client, u, session["id"]) for u in users]
    await asyncio.sleep(2.0)  # 2 s of the 10 s towards the next admission
    await open_queue(client, session["id"], 1)  # ... are 20 % of the way at the new rate: 0.8 s to go
    answers = [(await place(client, u, session["id"]))[1] for u in users]
    assert sum(a["admitted"] for a in answers) <= 1, answers
    assert [a["position"] for a in answers] == [p["position"] for p in places]
