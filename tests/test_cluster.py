"""Multi-node tests over REST: real node processes behind the real HAProxy, on the real PostgreSQL, Redis and Kafka;
and `boxoffice cluster`, which starts and stops them."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from server.cluster import ROOT, LocalCluster
from server.embedded import EmbeddedStack, free_port, port_open
from tests.cluster_support import (
    CLUSTER_ADMIN,
    CLUSTER_HOLD_TTL,
    assert_invariants,
    get_json,
    make_session,
    make_user,
    seat_ids,
    wait_until,
)
from tests.conftest import bearer

pytestmark = pytest.mark.cluster



async def test_round_robin_spreads_requests_over_every_node(live_cluster: LocalCluster,
                                                           api: aiohttp.ClientSession) -> None:
    session = await make_session(api)
    served: Counter[str] = Counter()
    for _ in range(4 * live_cluster.nodes):
        status, body, node = await get_json(api, f"/sessions/{session['id']}/seats")
        assert status == 200 and body["session"]["id"] == session["id"]
        served[node] += 1
    assert set(served) == set(live_cluster.node_ids)
    assert max(served.values()) - min(served.values()) <= 1  # round robin, not just "somewhere"


async def test_haproxy_reaches_the_nodes_on_their_private_unix_sockets(live_cluster: LocalCluster,
                                                                      api: aiohttp.ClientSession) -> None:
    """The local cluster's proxy link is a Unix socket per node (40-60 % of loopback TCP's CPU per frame), in a
    folder only this user can enter: a node believes X-Forwarded-For from it, so nobody else may connect."""
    assert live_cluster.socket_dir is not None
    assert stat.S_IMODE(live_cluster.socket_dir.stat().st_mode) == 0o700
    sockets = live_cluster.node_sockets
    assert all(stat.S_ISSOCK(path.stat().st_mode) for path in sockets)
    # HAProxy's own view: every server of the backend is a Unix socket, checked and up
    servers = await asyncio.to_thread(live_cluster.servers)
    assert {node: (row["addr"], row["status"]) for node, row in servers.items()} == {
        node: ("unix", "UP") for node in live_cluster.node_ids}
    # each socket is that node's HTTP server
    for i, path in enumerate(sockets):
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(str(path))) as direct:
            status, _, node = await get_json(direct, "http://node/health")
            assert (status, node) == (200, live_cluster.node_ids[i])


async def test_every_node_serves_the_api_on_the_same_data(live_cluster: LocalCluster,
                                                          api: aiohttp.ClientSession) -> None:
    user = await make_user(api)
    for i, node_url in enumerate(live_cluster.node_urls):
        async with aiohttp.ClientSession(base_url=node_url) as direct:
            # the admin token is shared: any node creates a room
            async with direct.post("/rooms", json={"name": f"Room on {i}", "rows": 2, "seatsPerRow": 8},
                                   headers=CLUSTER_ADMIN) as resp:
                assert resp.status == 201, await resp.text()
                assert resp.headers["X-Node-Id"] == live_cluster.node_ids[i]
            # and sees what another node wrote
            status, body, node = await get_json(direct, f"/users/{user['id']}", headers=bearer(user["token"]))
            assert (status, body["email"], node) == (200, user["email"], live_cluster.node_ids[i])


async def hold(http: aiohttp.ClientSession, user: dict[str, Any], session_id: str,
               seats: list[str]) -> tuple[int, dict[str, Any], str]:
    async with http.post("/reservations", json={"userId": user["id"], "sessionId": session_id,
                                                "sessionSeatIds": seats}, headers=bearer(user["token"])) as resp:
        return resp.status, await resp.json(), resp.headers.get("X-Node-Id", "")


async def test_killed_node_is_routed_around_and_its_holds_still_expire(
        live_cluster: LocalCluster, api: aiohttp.ClientSession, pg: asyncpg.Connection,
        base_settings: Any) -> None:
    session = await make_session(api, rows=4, per_row=8)
    seats = await seat_ids(api, session["id"])
    victim = 1
    buyer, other = await make_user(api, "Victim's buyer"), await make_user(api, "Other buyer")

    # holds made on the node that is about to die
    async with aiohttp.ClientSession(base_url=live_cluster.node_urls[victim]) as direct:
        doomed = []
        for seat in seats[:3]:
            status, body, node = await hold(direct, buyer, session["id"], [seat])
            assert (status, node) == (201, live_cluster.node_ids[victim]), body
            doomed.append(body["id"])

    assert live_cluster.kill_node(victim) == -signal.SIGKILL

    # requests through HAProxy keep succeeding: connection failures are retried on the other nodes
    nodes_seen: Counter[str] = Counter()
    for k in range(12):
        status, body, node = await get_json(api, f"/sessions/{session['id']}/seats")
        assert status == 200, body
        nodes_seen[node] += 1
        status, body, node = await hold(api, other, session["id"], [seats[3 + k]])
        assert status == 201, body
        nodes_seen[node] += 1
    assert live_cluster.node_ids[victim] not in nodes_seen
    live_cluster.wait_server_status(victim, "DOWN")

    # the dead node's holds expire on time: the surviving nodes' sweepers release them
    async def expired() -> bool:
        rows = await pg.fetch("SELECT status FROM reservations WHERE id = ANY($1::uuid[])", doomed)
        return {r["status"] for r in rows} == {"EXPIRED"}

    assert await wait_until(expired, within=CLUSTER_HOLD_TTL + 5)
    freed = await pg.fetch("SELECT status FROM session_seats WHERE id = ANY($1::uuid[])", seats[:3])
    assert {r["status"] for r in freed} == {"AVAILABLE"}

    # restarted, it rejoins the rotation
    await asyncio.to_thread(live_cluster.start_node, victim)
    rejoined: Counter[str] = Counter()
    for _ in range(4 * live_cluster.nodes):
        rejoined[(await get_json(api, f"/sessions/{session['id']}/seats"))[2]] += 1
    assert set(rejoined) == set(live_cluster.node_ids)
    await assert_invariants(base_settings.database_url, [session["id"]])


def test_sigterm_stops_a_node_cleanly_within_ten_seconds(live_cluster: LocalCluster) -> None:
    victim = 2
    started = time.monotonic()
    # kill_node SIGKILLs after the timeout, so exit code 0 also means "within 10 s"
    assert live_cluster.kill_node(victim, signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - started < 10
    live_cluster.wait_server_status(victim, "DOWN")


def wait_all(cluster: LocalCluster, status: str) -> None:
    for i in range(cluster.nodes):
        cluster.wait_server_status(i, status, timeout=30)


async def test_holds_keep_committing_while_kafka_is_down(live_cluster: LocalCluster, api: aiohttp.ClientSession,
                                                         stack: EmbeddedStack, base_settings: Any) -> None:
    """Every node fails /ready without Kafka; HAProxy then falls back to the live nodes instead of a 503."""
    session = await make_session(api, rows=2, per_row=8)
    seats = await seat_ids(api, session["id"])
    buyer = await make_user(api)
    await asyncio.to_thread(stack["kafka"].kill)  # Tansu keeps nothing on disk: a crash is a stop
    try:
        await asyncio.to_thread(wait_all, live_cluster, "DOWN")
        served: Counter[str] = Counter()
        for seat in seats[:6]:
            status, body, node = await hold(api, buyer, session["id"], [seat])
            assert status == 201, body
            served[node] += 1
        assert len(served) > 1  # still spread over the nodes
    finally:
        await asyncio.to_thread(stack["kafka"].start)
    await asyncio.to_thread(wait_all, live_cluster, "UP")
    await assert_invariants(base_settings.database_url, [session["id"]])


# ---- `boxoffice cluster` --------------------------------------------------------------------------------


def test_boxoffice_cluster_command_serves_and_stops_everything_on_ctrl_c(stack: EmbeddedStack,
                                                                        tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("ADMIN_TOKEN",) and not k.startswith("NODE")}
    env.update(stack.urls, BOXOFFICE_STATE_DIR=str(tmp_path / "state"))  # type: ignore[attr-defined]
    out = tmp_path / "cluster.out"
    with open(out, "wb") as outf:
        proc = subprocess.Popen([sys.executable, "-m", "server.cli", "cluster", "--nodes", "2", "--port", str(port)],  # noqa: S603
                                cwd=ROOT, env=env, stdout=outf, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "Ctrl-C" not in out.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text(errors="replace")
            time.sleep(0.1)
        banner = out.read_text(errors="replace")
        token = re.search(r"admin token : (\S+)", banner)
        pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", banner)]
        assert token and len(pids) == 2, banner
        import urllib.request

        nodes = set()
        for k in range(4):  # the generated admin token is the same on both nodes
            req = urllib.request.Request(f"http://127.0.0.1:{port}/rooms", method="POST",
                                         data=f'{{"name": "CLI room {k}", "rows": 2, "seatsPerRow": 8}}'.encode(),
                                         headers={"Authorization": f"Bearer {token.group(1)}",
                                                  "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
                assert resp.status == 201
                nodes.add(resp.headers["X-Node-Id"])
        assert nodes == {"node-1", "node-2"}
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = proc.wait(30)
    assert code == 0, out.read_text(errors="replace")
    for pid in pids:  # no node left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not port_open(port)  # nor HAProxy
