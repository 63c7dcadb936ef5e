"""The waiting room across real node processes: one line shared by every node, one admission rate for the
whole cluster, positions pushed to sockets on every node, and a node killed while people wait."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import aiohttp
import pytest

from server.cluster import LocalCluster
from tests.cluster_support import CLUSTER_ADMIN, make_session, make_user
from tests.conftest import bearer

pytestmark = [pytest.mark.cluster]


async def open_queue(api: aiohttp.ClientSession, session_id: str, rate: float) -> None:
    async with api.put(f"/sessions/{session_id}/queue", json={"enabled": True, "rate": rate},
                       headers=CLUSTER_ADMIN) as resp:
        assert resp.status == 200, await resp.text()


async def queue_call(http: aiohttp.ClientSession, method: str, url: str, user: dict[str, Any]) -> dict[str, Any]:
    async with http.request(method, url, headers=bearer(user["token"])) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()  # type: ignore[no-any-return]


async def users(api: aiohttp.ClientSession, count: int) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(make_user(api, f"buyer {n}") for n in range(count))))


async def test_concurrent_joins_on_three_nodes_get_one_fair_line(api: aiohttp.ClientSession,
                                                                 live_cluster: LocalCluster) -> None:
    nodes = live_cluster.node_urls
    session = await make_session(api)
    url = f"/sessions/{session['id']}/queue"
    buyers = await users(api, 60)
    await open_queue(api, session["id"], 4)
    http = aiohttp.ClientSession()
    try:
        # all at once, spread over the three nodes: every buyer gets a place of their own, no gaps
        places = await asyncio.gather(*(queue_call(http, "POST", nodes[n % 3] + url, b)
                                        for n, b in enumerate(buyers[:45])))
        positions = sorted(p["position"] for p in places)
        assert positions == list(range(positions[0], positions[0] + 45))
        # one after another, turn by turn on each node: places in the order of joining
        later = [(await queue_call(http, "POST", nodes[n % 3] + url, b))["position"]
                 for n, b in enumerate(buyers[45:])]
        assert later == list(range(positions[-1] + 1, positions[-1] + 16))
        # joining again, on another node, keeps the place
        again = await queue_call(http, "POST", nodes[1] + url, buyers[0])
        assert again["position"] == places[0]["position"]
        # admission follows the places: asked on any node, whoever is admitted joined before whoever is not
        position_of = {b["id"]: p["position"] for b, p in zip(buyers[:45], places, strict=True)}
        rounds = 0
        for _ in range(4):
            answers = await asyncio.gather(*(queue_call(http, "GET", nodes[n % 3] + url, b)
                                             for n, b in enumerate(buyers[:45])))
            admitted = sorted((position_of[b["id"]], a["admitted"]) for b, a in zip(buyers[:45], answers, strict=True))
            flags = [flag for _, flag in admitted]
            assert flags == sorted(flags, reverse=True), admitted
            rounds += any(flags) and not all(flags)
            await asyncio.sleep(1.0)
        assert rounds >= 1  # the check saw a line part admitted at least once
    finally:
        await http.close()


async def test_the_cluster_admits_at_the_configured_rate_whatever_node_is_asked(
        api: aiohttp.ClientSession, live_cluster: LocalCluster) -> None:
    rate = 20.0
    session = await make_session(api)
    url = f"/sessions/{session['id']}/queue"
    buyers = await users(api, 40)
    await open_queue(api, session["id"], rate)
    http = aiohttp.ClientSession()
    try:
        await asyncio.gather(*(queue_call(http, "POST", live_cluster.node_urls[n % 3] + url, b)
                               for n, b in enumerate(buyers)))
        # enough of a line that it is never empty during the measurement: 40 + 200 more
        more = await users(api, 200)
        places = await asyncio.gather(*(queue_call(http, "POST", live_cluster.node_urls[n % 3] + url, b)
                                        for n, b in enumerate(more)))
        last = max(places, key=lambda p: p["position"])
        watcher = more[places.index(last)]

        async def serving(node: str) -> tuple[float, int]:
            started = time.monotonic()
            place = await queue_call(http, "GET", node + url, watcher)
            return (started + time.monotonic()) / 2, place["position"] - place["ahead"] - 1

        t0, s0 = await serving(live_cluster.node_urls[0])
        await asyncio.sleep(6.0)
        t1, s1 = await serving(live_cluster.node_urls[2])
        measured = (s1 - s0) / (t1 - t0)
        print(f"\nadmission rate: configured {rate}/s, measured {measured:.2f}/s ({s1 - s0} in {t1 - t0:.2f} s)")
        assert abs(measured - rate) <= 0.05 * rate
    finally:
        await http.close()


async def socket_join(http: aiohttp.ClientSession, url: str, session_id: str,
                      user: dict[str, Any]) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    """A socket on `url` (a node, or HAProxy) that joined the line: (the socket, the join's reply)."""
    ws = await http.ws_connect(f"{url}/ws/sessions/{session_id}", heartbeat=None,
                               protocols=("boxoffice", f"bearer.{user['token']}"))
    await ws.send_json({"type": "queue.join", "requestId": "join"})
    while (msg := await ws.receive_json(timeout=10)).get("requestId") != "join":
        pass
    assert msg["type"] == "queue.position", msg
    return ws, msg


async def queue_messages(ws: aiohttp.ClientWebSocketResponse, until_admitted: float) -> list[dict[str, Any]]:
    """Every queue message the socket gets until it is admitted (or the time runs out)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + until_admitted
    while time.monotonic() < deadline:
        try:
            msg = await ws.receive_json(timeout=max(0.1, deadline - time.monotonic()))
        except (TimeoutError, TypeError):
            break
        if msg["type"].startswith("queue."):
            got.append(msg)
            if msg["type"] == "queue.admitted":
                break
    return got


async def test_positions_reach_sockets_on_every_node_and_survive_a_node_killed(
        api: aiohttp.ClientSession, live_cluster: LocalCluster) -> None:
    session = await make_session(api)
    buyers = await users(api, 7)
    await open_queue(api, session["id"], 1)
    http = aiohttp.ClientSession()
    try:
        # a REST buyer who joined on node 1 first, then a socket on each node, twice over
        rest_place = await queue_call(http, "POST", live_cluster.node_urls[0] + f"/sessions/{session['id']}/queue",
                                      buyers[0])
        joined = [await socket_join(http, live_cluster.node_urls[n % 3], session["id"], b)
                  for n, b in enumerate(buyers[1:])]
        sockets = [ws for ws, _ in joined]
        live_cluster.kill_node(0, signal.SIGKILL)  # the first and fourth sockets lose their node
        # the REST buyer keeps their place, asked through HAProxy (node 1 is gone)
        again = await queue_call(http, "GET", f"{live_cluster.url}/sessions/{session['id']}/queue", buyers[0])
        assert again["position"] == rest_place["position"]
        # the buyers whose node died come back through HAProxy, as the page does, to the same place
        for n in (0, 3):
            ws, reply = await socket_join(http, live_cluster.url, session["id"], buyers[1 + n])
            assert reply["position"] == joined[n][1]["position"], (reply, joined[n][1])
            sockets[n] = ws
        results = await asyncio.gather(*(queue_messages(ws, 25.0) for ws in sockets))
        for (_, first), got in zip(joined, results, strict=True):
            assert got[-1]["type"] == "queue.admitted", got
            assert got[-1]["admission"]
            assert got[-1]["position"] == first["position"]  # the place it joined with, kept while it waited
            aheads = [m["ahead"] for m in got if m["type"] == "queue.position"]
            assert aheads == sorted(aheads, reverse=True) and len(set(aheads)) == len(aheads), aheads
        positions = sorted(first["position"] for _, first in joined)
        assert positions == list(range(rest_place["position"] + 1, rest_place["position"] + 7))
        assert any(len(got) > 2 for got in results)  # positions were pushed while waiting, not only the end
        for ws in sockets:
            await ws.close()
    finally:
        await http.close()
