"""The waiting room through a real Redis restart while people wait, on the 3-node cluster (docs/waiting-room.md,
"When Redis restarts"): the room stays on, admissions already given still hold, sockets take a place again by
themselves in their node's order and are admitted, a REST buyer is told `not_in_queue` and joins again, and
nothing answers 500 meanwhile. A node killed while people wait: tests/test_waiting_room_cluster.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from server.cluster import LocalCluster
from server.embedded import EmbeddedStack
from tests.cluster_support import CLUSTER_ADMIN, make_session, make_user, seat_ids
from tests.conftest import bearer
from tests.test_waiting_room_cluster import queue_messages

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

RATE_BEFORE = 0.1  # one buyer every 10 s: nobody waiting is admitted before the restart
RATE_AFTER = 4.0


async def call(http: aiohttp.ClientSession, method: str, url: str, user: dict[str, Any] | None = None,
               **kw: Any) -> tuple[int, Any]:
    headers = bearer(user["token"]) if user else CLUSTER_ADMIN
    async with http.request(method, url, headers=headers | kw.pop("headers", {}), **kw) as resp:
        return resp.status, await resp.json() if resp.content_type == "application/json" else None


async def test_redis_restarted_while_people_wait(live_cluster: LocalCluster, stack: EmbeddedStack) -> None:
    nodes = live_cluster.node_urls
    async with aiohttp.ClientSession(base_url=live_cluster.url) as api, aiohttp.ClientSession() as http:
        session = await make_session(api)
        sid = session["id"]
        seats = await seat_ids(api, sid)
        early, poller, *socket_users = [await make_user(api, f"Buyer {n}") for n in range(8)]
        opened = await call(http, "PUT", f"{nodes[0]}/sessions/{sid}/queue", json={"enabled": True, "rate": 50})
        assert opened[0] == 200, opened
        status, place = await call(http, "POST", f"{nodes[0]}/sessions/{sid}/queue", early)
        while not place["admitted"]:
            await asyncio.sleep(0.1)
            status, place = await call(http, "GET", f"{nodes[0]}/sessions/{sid}/queue", early)
        admission = place["admission"]
        assert (await call(http, "PUT", f"{nodes[0]}/sessions/{sid}/queue",
                           json={"enabled": True, "rate": RATE_BEFORE}))[0] == 200

        # people wait: six sockets, two on each node, and one buyer over REST
        sockets: list[tuple[int, aiohttp.ClientWebSocketResponse]] = []
        first_places: list[int] = []
        for n, user in enumerate(socket_users):
            ws = await http.ws_connect(f"{nodes[n % 3]}/ws/sessions/{sid}", heartbeat=None,
                                       protocols=("boxoffice", f"bearer.{user['token']}"))
            await ws.send_json({"type": "queue.join", "requestId": "join"})
            while (reply := await ws.receive_json(timeout=10)).get("requestId") != "join":
                pass
            assert reply["type"] == "queue.position", reply
            first_places.append(reply["position"])
            sockets.append((n % 3, ws))
        status, before = await call(http, "POST", f"{nodes[1]}/sessions/{sid}/queue", poller)
        assert status == 200 and not before["admitted"]

        await asyncio.to_thread(stack["redis"].stop)
        try:
            status, body = await call(http, "POST", f"{nodes[2]}/sessions/{sid}/queue", poller)
            assert status == 503 and body["code"] == "redis_unavailable", (status, body)
            await asyncio.sleep(1.5)
        finally:
            await asyncio.to_thread(stack["redis"].start)

        # the room is still on, at the rate PostgreSQL keeps; the poller's place is gone and it joins again
        assert (await call(http, "PUT", f"{nodes[0]}/sessions/{sid}/queue",
                           json={"enabled": True, "rate": RATE_AFTER}))[0] == 200
        deadline = time.monotonic() + 10
        while (status := (await call(http, "GET", f"{nodes[1]}/sessions/{sid}/queue", poller))[0]) == 503:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        assert status == 404
        status, again = await call(http, "POST", f"{nodes[1]}/sessions/{sid}/queue", poller)
        assert status == 200 and again["enabled"]
        # the admission given before the restart still holds; a hold without one is still refused
        status, held = await call(http, "POST", f"{nodes[2]}/reservations", early, headers={"X-Admission": admission},
                                  json={"sessionId": sid, "sessionSeatIds": [seats[0]]})
        assert status == 201, held
        status, body = await call(http, "POST", f"{nodes[2]}/reservations", poller,
                                  json={"sessionId": sid, "sessionSeatIds": [seats[1]]})
        assert (status, body["code"]) == (403, "not_admitted")

        # every socket is admitted, without doing anything, and each node kept its sockets' order
        results = await asyncio.gather(*(queue_messages(ws, 30.0) for _, ws in sockets))
        for got in results:
            assert got and got[-1]["type"] == "queue.admitted" and got[-1]["admission"], got
        for node in range(3):
            mine = sorted((first, got[-1]["position"]) for (n, _), first, got
                          in zip(sockets, first_places, results, strict=True) if n == node)
            assert [after for _, after in mine] == sorted(after for _, after in mine), mine
        for _, ws in sockets:
            await ws.close()
