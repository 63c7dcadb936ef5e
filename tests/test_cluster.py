"""Multi-node tests over REST: real node processes behind the real HAProxy, on the real PostgreSQL, Redis and Kafka.

Also checks the two deployment files every cluster uses: haproxy.cfg and docker-compose.yml.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from core.settings import WS_FRAMES_PER_MACHINE
from server.cluster import ROOT, SERVICE_URLS, LocalCluster, haproxy_config_path
from server.embedded import EmbeddedStack, free_port, port_open
from tests.cluster_support import (
    CLUSTER_ADMIN,
    CLUSTER_HOLD_TTL,
    assert_invariants,
    docker_compose_binary,
    get_json,
    haproxy_binary,
    make_session,
    make_user,
    seat_ids,
    wait_until,
)
from tests.conftest import bearer

pytestmark = pytest.mark.cluster


# ---- the deployment files ---------------------------------------------------------------------------


def haproxy_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not re.fullmatch(r"NODE\d+_ADDR|HAPROXY_.*", k)}
    return subprocess.run([haproxy_binary(), "-c", "-f", str(haproxy_config_path())],  # noqa: S603
                          env={**clean, **env}, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("nodes", [1, 3, 8])
def test_haproxy_cfg_is_valid_for_one_to_eight_nodes(nodes: int) -> None:
    env = {f"NODE{i}_ADDR": f"127.0.0.1:{18080 + i}" for i in range(1, nodes + 1)}
    env["HAPROXY_STATS_BIND"] = "127.0.0.1:18404"
    result = haproxy_check(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ALERT" not in result.stdout + result.stderr


def test_haproxy_cfg_refuses_to_run_without_a_node() -> None:
    result = haproxy_check({})
    assert result.returncode != 0


def test_nodes_on_one_machine_share_its_broadcast_frame_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """`boxoffice cluster` runs its nodes on one machine: each gets its share of what the machine carries,
    unless WS_MAX_FRAMES_PER_SECOND says otherwise."""
    monkeypatch.delenv("WS_MAX_FRAMES_PER_SECOND", raising=False)
    urls = {key: "set-but-unused" for key in SERVICE_URLS}  # nothing is started here

    def budgets(nodes: int, **env: str) -> set[str]:
        cluster = LocalCluster(nodes, env={**urls, **env})
        return {cluster.node_env(i)["WS_MAX_FRAMES_PER_SECOND"] for i in range(nodes)}

    assert budgets(1) == {str(WS_FRAMES_PER_MACHINE)}
    assert budgets(3) == {str(WS_FRAMES_PER_MACHINE // 3)}
    assert budgets(3, WS_MAX_FRAMES_PER_SECOND="9000") == {"9000"}


def test_the_local_cluster_links_haproxy_to_its_nodes_by_unix_socket_or_tcp() -> None:
    """The environment each process gets: HAProxy's NODEn_ADDR and the node's UNIX_SOCKET agree (nothing started)."""
    urls = {key: "set-but-unused" for key in SERVICE_URLS}
    tcp = LocalCluster(2, env={**urls, "UNIX_SOCKET": "/tmp/inherited.sock"}, link="tcp")  # noqa: S108
    assert [tcp.haproxy_env()[f"NODE{i + 1}_ADDR"] for i in range(2)] == [
        f"127.0.0.1:{port}" for port in tcp.node_ports]
    assert all("UNIX_SOCKET" not in tcp.node_env(i) for i in range(2))  # never one the caller's env had

    unix = LocalCluster(2, env=urls)
    folder = unix.socket_dir = unix._make_socket_dir()  # what start() does first
    try:
        assert folder is not None and stat.S_IMODE(folder.stat().st_mode) == 0o700
        for i in range(2):
            path = unix.node_env(i)["UNIX_SOCKET"]
            assert unix.haproxy_env()[f"NODE{i + 1}_ADDR"] == f"unix@{path}"
            assert Path(path).parent == unix.socket_dir and len(path) <= 100  # fits sockaddr_un
            assert unix.node_env(i)["PORT"] == str(unix.node_ports[i])  # the TCP port stays
    finally:
        unix.stop()
    assert unix.socket_dir is None and not folder.exists()  # stop() removes the folder
    with pytest.raises(ValueError, match="link"):
        LocalCluster(1, env=urls, link="carrier-pigeon")


def test_docker_compose_config_is_valid() -> None:
    result = subprocess.run([docker_compose_binary(), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],  # noqa: S603
                            capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
                            env={**os.environ, "ADMIN_TOKEN": "a-secret-of-32-characters-or-more!",
                                 "POSTGRES_PASSWORD": "compose-test-password"})
    assert result.returncode == 0, result.stderr


def test_docker_compose_runs_three_nodes_behind_the_same_haproxy_cfg() -> None:
    result = subprocess.run([docker_compose_binary(), "-f", str(ROOT / "docker-compose.yml"), "config"],  # noqa: S603
                            capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
                            env={**os.environ, "ADMIN_TOKEN": "compose-test-token",
                                 "POSTGRES_PASSWORD": "compose-test-password"})
    services: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    apps = {name: svc for name, svc in services.items() if name.startswith("app")}
    assert sorted(apps) == ["app1", "app2", "app3"]
    for name, svc in apps.items():
        env = svc["environment"]
        assert env["NODE_ID"] == name
        assert env["ADMIN_TOKEN"] == "compose-test-token"
        assert env["KAFKA_IDEMPOTENCE"] == "true"
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"].startswith("redis://redis:6379")
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert Path(svc["build"]["context"]).resolve() == ROOT
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    proxy = services["haproxy"]
    assert {f"NODE{i}_ADDR": f"app{i}:8080" for i in (1, 2, 3)}.items() <= proxy["environment"].items()
    # docker-compose 1.x prints short syntax ("src:dst:ro", "8080:8080/tcp"), 2.x long syntax (mappings)
    volumes = [v if isinstance(v, dict) else dict(zip(("source", "target"), v.split(":"), strict=False))
               for v in proxy["volumes"]]
    mounted = [Path(v["source"]).resolve() for v in volumes if v["target"].endswith("haproxy.cfg")]
    assert mounted == [ROOT / "haproxy.cfg"]
    published = [str(p["published"]) if isinstance(p, dict) else str(p).split(":")[-2] for p in proxy["ports"]]
    assert "8080" in published


# ---- HAProxy in front of a stand-in node: its own answers ------------------------------------------


@contextlib.contextmanager
def standalone_haproxy(tmp_path: Path, **env: str) -> Iterator[tuple[str, str]]:
    """HAProxy alone on haproxy.cfg with the given environment; yields (url, stats csv url)."""
    port, stats = free_port(), free_port()
    full = {k: v for k, v in os.environ.items() if not re.fullmatch(r"NODE\d+_ADDR|HAPROXY_.*", k)}
    full.update(HAPROXY_BIND=f"127.0.0.1:{port}", HAPROXY_STATS_BIND=f"127.0.0.1:{stats}", **env)
    with open(tmp_path / "haproxy.log", "ab") as logf:
        proc = subprocess.Popen([haproxy_binary(), "-db", "-f", str(haproxy_config_path())],  # noqa: S603
                                env=full, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not port_open(port):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{stats}/stats;csv"
    finally:
        proc.terminate()
        proc.wait(10)


async def stand_in_node() -> TestServer:
    async def anything(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, headers={"X-Node-Id": "stand-in"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_haproxy_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    node = await stand_in_node()
    try:
        with standalone_haproxy(tmp_path, NODE1_ADDR=f"127.0.0.1:{node.port}", HAPROXY_RATE_LIMIT="5") as (url, _):
            async with aiohttp.ClientSession() as http:
                answers = []
                for _ in range(12):
                    async with http.get(url + "/sessions") as resp:
                        answers.append((resp.status, resp.headers.get("Retry-After"), await resp.json()))
    finally:
        await node.close()
    assert [a[0] for a in answers] == [200] * 5 + [429] * 7
    for _status, retry_after, body in answers[5:]:
        assert retry_after is not None and int(retry_after) > 0
        assert body["statusCode"] == 429 and body["code"] == "rate_limited"


async def test_haproxy_passes_the_nodes_only_the_forwarded_headers_they_read(tmp_path: Path) -> None:
    """X-Forwarded-For (the caller's address, never the client's own claim) on writes, where the per-address
    rate limit reads it; nothing on reads and WebSocket upgrades, whose headers a node keeps per open socket."""
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        if request.host != "boxoffice-haproxy-check":  # HAProxy's health checks
            seen.append({k: v for k, v in request.headers.items() if k.lower().startswith("x-forwarded")})
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    node = TestServer(app, host="127.0.0.1")
    await node.start_server()
    try:
        with standalone_haproxy(tmp_path, NODE1_ADDR=f"127.0.0.1:{node.port}") as (url, _):
            async with aiohttp.ClientSession() as http:
                spoofed = {"X-Forwarded-For": "203.0.113.9"}
                for method in ("POST", "PUT", "PATCH", "DELETE", "GET"):
                    async with http.request(method, url + "/users", json={}, headers=spoofed) as resp:
                        assert resp.status == 200
                upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", **spoofed}
                async with http.get(url + "/ws/sessions/x", headers=upgrade) as resp:
                    assert resp.status == 200  # the stand-in answers the upgrade request like any GET
    finally:
        await node.close()
    assert seen == [{"X-Forwarded-For": "127.0.0.1"}] * 4 + [{}, {"X-Forwarded-For": "127.0.0.1"}]


async def test_haproxy_without_a_live_node_answers_json_503(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    with standalone_haproxy(tmp_path, NODE1_ADDR=dead) as (url, stats):
        async with aiohttp.ClientSession() as http:

            async def marked_down() -> bool:
                async with http.get(stats) as resp:
                    return all(",DOWN," in line for line in (await resp.text()).splitlines()
                               if line.startswith(("nodes,node1,", "nodes_alive,node1,")))

            assert await wait_until(marked_down, within=10)
            async with http.get(url + "/sessions") as resp:
                assert resp.status == 503
                assert resp.headers.get("Retry-After") == "1"
                body = await resp.json()
    assert body["code"] == "service_unavailable" and body["statusCode"] == 503


# ---- the cluster ------------------------------------------------------------------------------------


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
