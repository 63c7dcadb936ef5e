"""Fixtures for the multi-node tests: one 3-node cluster behind HAProxy per test run, on the `stack` services.

Starting a cluster costs seconds, so there is one per pytest session (started only if a test asks for
it); `live_cluster` hands it to each test with every node running and routed again, whatever the
previous test killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, cast

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from loadtests.invariants import broken, wait_for_invariants
from server.cluster import LOAD_TEST_LIMITS, LocalCluster
from server.embedded import EmbeddedStack, find_haproxy
from tests import conftest

CLUSTER_NODES = 3
# short holds so expiry can be watched within a test; every node shares the same settings
CLUSTER_HOLD_TTL = 2
CLUSTER_ADMIN_TOKEN = "test-admin-token"  # the same token as conftest.ADMIN_TOKEN
CLUSTER_ADMIN = {"Authorization": f"Bearer {CLUSTER_ADMIN_TOKEN}"}


def cluster_env(stack: EmbeddedStack, **extra: str) -> dict[str, str]:
    urls: dict[str, str] = stack.urls  # type: ignore[attr-defined]
    return {
        **urls,
        "ADMIN_TOKEN": CLUSTER_ADMIN_TOKEN,
        "HOLD_TTL_SECONDS": str(CLUSTER_HOLD_TTL),
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        **LOAD_TEST_LIMITS,  # the tests of the limits set their own
        **extra,
    }


@pytest.fixture(scope="session")
def cluster(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three real node processes and HAProxy, sharing the session's PostgreSQL, Redis and Kafka."""
    haproxy_binary()
    state = tmp_path_factory.mktemp("cluster")
    with LocalCluster(CLUSTER_NODES, env=cluster_env(stack), state_dir=state) as running:
        yield running


def all_nodes_up(cluster: LocalCluster) -> LocalCluster:
    """Restart whatever node a previous test killed and wait until HAProxy routes to every node again."""
    for i in range(cluster.nodes):
        cluster.start_node(i)
    for i in range(cluster.nodes):
        cluster.wait_server_status(i, "UP")
    return cluster


@pytest.fixture
def live_cluster(cluster: LocalCluster) -> LocalCluster:
    """The cluster with every node up and in HAProxy's rotation (a previous test may have killed one)."""
    return all_nodes_up(cluster)


@pytest.fixture
async def api(live_cluster: LocalCluster) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client whose relative URLs go through HAProxy (the conftest helpers accept it)."""
    async with aiohttp.ClientSession(base_url=live_cluster.url) as session:
        yield session


def haproxy_binary() -> str:
    binary = find_haproxy()
    if binary is None:
        pytest.skip("haproxy is not installed (Debian package haproxy)")
    return binary


def docker_compose_binary() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose)")
    return binary


async def assert_invariants(dsn: str, session_ids: Sequence[str], *, within: float = 15.0) -> None:
    """Every booking invariant holds for these sessions (waiting for the outbox and sweepers to settle)."""
    con = await asyncpg.connect(dsn)
    try:
        report = await wait_for_invariants(con, session_ids, timeout=within)
    finally:
        await con.close()
    assert broken(report) == {}


async def get_json(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any, str]:
    """GET -> (status, JSON body, X-Node-Id)."""
    async with session.get(url, **kwargs) as resp:
        return resp.status, await resp.json(), resp.headers.get("X-Node-Id", "")


async def wait_until(predicate: Any, within: float, interval: float = 0.1) -> bool:
    """Poll an async predicate until it returns true or `timeout` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if await predicate():
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(interval)


class SeatSocket:
    """A client of GET /ws/sessions/{id}: keeps the seat map the way a browser must, and reconnects.

    The map is the snapshot, then every change applied only if its version is higher than the one
    held. When the server closes the socket (node killed, dropped as slow) and `reconnect_url` is
    set, it connects again there -- through HAProxy, so to a live node -- and starts over from the
    new snapshot.
    """

    def __init__(self, http: aiohttp.ClientSession, url: str, session_id: str, token: str | None = None,
                 reconnect_url: str | None = None) -> None:
        query = f"?token={token}" if token else ""
        self.http = http
        self.url = f"{url}/ws/sessions/{session_id}{query}"
        self.reconnect_url = f"{reconnect_url}/ws/sessions/{session_id}{query}" if reconnect_url else None
        self.seats: dict[str, tuple[str, int]] = {}
        self.nodes: list[str] = []  # the node of every snapshot received, in order
        self.changes_received = 0
        self.close_codes: list[int | None] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._counter = 0

    @property
    def node(self) -> str:
        return self.nodes[-1] if self.nodes else ""

    async def connect(self) -> SeatSocket:
        await self._open(self.url)
        self._reader = asyncio.create_task(self._read_forever())
        return self

    async def _open(self, url: str) -> None:
        ws = await self.http.ws_connect(url, heartbeat=None, autoping=True)
        first = await ws.receive_json(timeout=10)
        assert first["type"] == "snapshot", first
        self._apply_snapshot(first)
        self._ws = ws

    def _apply_snapshot(self, message: dict[str, Any]) -> None:
        self.nodes.append(message["nodeId"])
        self.seats = {s["id"]: (s["status"], int(s["version"])) for s in message["seats"]}

    def _apply_changes(self, changes: list[dict[str, Any]]) -> None:
        for change in changes:
            self.changes_received += 1
            known = self.seats.get(change["id"])
            if known is None or int(change["version"]) > known[1]:
                self.seats[change["id"]] = (change["status"], int(change["version"]))

    async def _read_forever(self) -> None:
        while True:
            assert self._ws is not None
            async for msg in self._ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                message = msg.json()
                kind = message.get("type")
                if kind == "snapshot":
                    self._apply_snapshot(message)
                elif kind == "seats":
                    self._apply_changes(message["changes"])
                future = self._replies.pop(message.get("requestId") or "", None)
                if future is not None and not future.done():
                    future.set_result(message)
            self.close_codes.append(self._ws.close_code)
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(ConnectionError("socket closed"))
            self._replies.clear()
            if self._closing or self.reconnect_url is None:
                return
            await self._reconnect()

    async def _reconnect(self, within: float = 20.0) -> None:
        assert self.reconnect_url is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            try:
                await self._open(self.reconnect_url)
                return
            except (aiohttp.ClientError, TimeoutError, AssertionError):
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def request(self, message: dict[str, Any], within: float = 10.0) -> dict[str, Any]:
        """Send a client message with a fresh requestId; return the reply carrying it."""
        assert self._ws is not None
        self._counter += 1
        request_id = f"r{self._counter}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        await self._ws.send_json({**message, "requestId": request_id})
        return await asyncio.wait_for(future, within)

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


def seat_map(body: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """GET /sessions/{id}/seats as a socket holds it: seat id -> (status, version)."""
    return {s["id"]: (s["status"], int(s["version"])) for s in body["seats"]}


async def wait_converged(api: aiohttp.ClientSession, session_id: str, sockets: Sequence[SeatSocket],
                         within: float = 15.0) -> tuple[bool, dict[str, tuple[str, int]]]:
    """Until every socket's map equals GET /sessions/{id}/seats; return (converged, the server's map)."""
    truth: dict[str, tuple[str, int]] = {}

    async def converged() -> bool:
        nonlocal truth
        async with api.get(f"/sessions/{session_id}/seats") as resp:
            truth = seat_map(await resp.json())
        return all(s.seats == truth for s in sockets)

    return await wait_until(converged, within, interval=0.2), truth


async def outbox_backlog(dsn: str, session_id: str) -> int:
    con = await asyncpg.connect(dsn)
    try:
        return int(await con.fetchval("SELECT count(*) FROM outbox WHERE session_id = $1::uuid "
                                      "AND published_at IS NULL", session_id))
    finally:
        await con.close()


# The conftest helpers are typed for aiohttp's TestClient; they only call .get/.post with relative
# URLs, which a ClientSession with a base_url (the `api` fixture) answers the same way.
async def make_session(api: aiohttp.ClientSession, rows: int = 2, per_row: int = 8) -> dict[str, Any]:
    return await conftest.make_session(cast(TestClient, api), rows, per_row)


async def make_user(api: aiohttp.ClientSession, name: str = "Ana") -> dict[str, Any]:
    return await conftest.make_user(cast(TestClient, api), name)


async def seat_ids(api: aiohttp.ClientSession, session_id: str) -> list[str]:
    return await conftest.seat_ids(cast(TestClient, api), session_id)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """When a test on a cluster fails, every live node logs where each of its tasks waits (SIGUSR1)."""
    report = yield
    if report.failed and call.when == "call":
        funcargs = getattr(item, "funcargs", {})
        for running in {id(c): c for c in funcargs.values() if isinstance(c, LocalCluster)}.values():
            for i in range(running.nodes):
                proc = running.procs[i]
                if proc is not None and proc.poll() is None:
                    with contextlib.suppress(OSError):
                        os.kill(proc.pid, signal.SIGUSR1)
            time.sleep(1.0)  # the dumps reach the node logs before the cluster is torn down
    return report
