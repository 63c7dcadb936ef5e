"""HAProxy in front of real nodes: a per-address socket cap, no token in its log, no retry of a request that
reached a node (a slow database is not asked again by every other node)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import aiohttp
import asyncpg
import pytest

from server.cluster import LocalCluster
from server.embedded import EmbeddedStack
from tests.cluster_support import CLUSTER_ADMIN, cluster_env, haproxy_binary
from tests.conftest import bearer, make_session, make_user

UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
SOCKETS_PER_ADDRESS = 3
SERVER_TIMEOUT = 1.0  # HAProxy's `timeout server` here: a slow node answers 504 after it


@pytest.fixture(scope="module")
def proxied(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Two nodes behind HAProxy with a low per-address socket cap and a short server timeout."""
    haproxy_binary()
    env = cluster_env(stack, HAPROXY_MAX_SOCKETS_PER_ADDRESS=str(SOCKETS_PER_ADDRESS),
                      HAPROXY_TIMEOUT_SERVER=f"{int(SERVER_TIMEOUT * 1000)}ms", WS_MAX_SOCKETS_PER_ADDRESS="1000")
    with LocalCluster(2, env=env, state_dir=tmp_path_factory.mktemp("proxied")) as running:
        yield running


@pytest.fixture
async def api(proxied: LocalCluster) -> AsyncIterator[aiohttp.ClientSession]:
    """Set-up traffic straight to node 1 (HAProxy's per-address counts stay the test's own)."""
    async with aiohttp.ClientSession(base_url=proxied.node_urls[0]) as session:
        yield session


def from_address(source: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))


async def test_haproxy_caps_open_sockets_per_address(proxied: LocalCluster, api: aiohttp.ClientSession) -> None:
    session = await make_session(api)  # type: ignore[arg-type]
    url = f"{proxied.url}/ws/sessions/{session['id']}"
    async with contextlib.AsyncExitStack() as stack:
        mine = await stack.enter_async_context(from_address("127.0.0.1"))
        others = await stack.enter_async_context(from_address("127.0.0.2"))
        for _ in range(SOCKETS_PER_ADDRESS):
            ws = await stack.enter_async_context(mine.ws_connect(url))
            assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
        async with mine.get(url, headers=UPGRADE) as refused:
            assert refused.status == 429
            body = await refused.json()
            assert body["code"] == "too_many_sockets" and int(refused.headers["Retry-After"]) >= 1
        theirs = await stack.enter_async_context(others.ws_connect(url))
        assert (await theirs.receive_json(timeout=5))["type"] == "snapshot"


async def test_no_log_line_carries_a_token(proxied: LocalCluster, api: aiohttp.ClientSession) -> None:
    session = await make_session(api)  # type: ignore[arg-type]
    ana = await make_user(api)  # type: ignore[arg-type]
    marker = uuid.uuid4().hex
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{proxied.url}/ws/sessions/{session['id']}?token={ana['token']}&m={marker}")
        assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
        await ws.close()
        async with http.get(f"{proxied.url}/users/{ana['id']}/purchases?token={ana['token']}&m={marker}",
                            headers=bearer(ana["token"])) as resp:
            assert resp.status == 200
    logs = [proxied.haproxy_log, *(proxied.log_path(i) for i in range(proxied.nodes))]
    for _ in range(50):  # HAProxy logs a request when it ends
        if f"/users/{ana['id']}/purchases" in proxied.haproxy_log.read_text():
            break
        await asyncio.sleep(0.1)
    text = proxied.haproxy_log.read_text()
    assert f"/ws/sessions/{session['id']}" in text  # the requests are logged ...
    assert f"/users/{ana['id']}/purchases" in text
    for path in logs:
        assert ana["token"] not in path.read_text(), path  # ... without the token


async def session_reads(proxied: LocalCluster) -> float:
    """GET /sessions/{id} requests the nodes have answered (their own counters, summed)."""
    total = 0.0
    async with aiohttp.ClientSession() as http:
        for url in proxied.node_urls:
            async with http.get(f"{url}/metrics", headers=CLUSTER_ADMIN) as resp:
                for line in (await resp.text()).splitlines():
                    if line.startswith('boxoffice_http_requests_total{method="GET",route="/sessions/{id}"'):
                        total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_request_that_timed_out_on_one_node_is_not_sent_to_another(
        proxied: LocalCluster, api: aiohttp.ClientSession) -> None:
    """A database slowdown: every read of `sessions` waits on a lock. Each GET that times out at HAProxy must
    have reached one node (one query on the slow database), not every node it could be retried on."""
    session = await make_session(api)  # type: ignore[arg-type]
    locker = await asyncpg.connect(proxied.env["DATABASE_URL"])
    requests = 4
    before = await session_reads(proxied)
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        async with aiohttp.ClientSession() as http:

            async def get() -> int:
                async with http.get(f"{proxied.url}/sessions/{session['id']}") as resp:
                    await resp.read()
                    return resp.status

            statuses = await asyncio.gather(*(get() for _ in range(requests)))
        took = time.monotonic() - started
        await tx.rollback()
    finally:
        await locker.close()
    reached = 0.0
    for _ in range(50):  # the nodes finish the requests the lock held, then count them
        await asyncio.sleep(0.1)
        if (reached := await session_reads(proxied) - before) >= requests and \
                await session_reads(proxied) - before == reached:
            break
    assert statuses == [504] * requests
    # one node per request, answered after one timeout (not after one per node it was retried on)
    assert (reached, took < SERVER_TIMEOUT * 2.5) == (requests, True), \
        f"{reached:.0f} requests reached the nodes for {requests} sent; the answers took {took:.1f} s"
