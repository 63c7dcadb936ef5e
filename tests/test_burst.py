"""A burst at the door: thousands of new connections in the same second, through HAProxy to one node.

A rush starts like this: every buyer opens a connection at once. Each must be answered by the node --
no refused connection at the client, no 503 from HAProxy because the node's listen queue overflowed.
"""

from __future__ import annotations

import asyncio
import csv
import io
import resource
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from server.cluster import LocalCluster
from server.embedded import EmbeddedStack
from tests.cluster_support import cluster_env, haproxy_binary

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BURST = 2_000


@pytest.fixture(scope="module", autouse=True)
def enough_descriptors() -> Iterator[None]:
    """The burst holds 2,000 client sockets open in this process at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * BURST))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def one_buyer(http: aiohttp.ClientSession, url: str, start: asyncio.Event, run: str,
                    n: int) -> tuple[int | str, str]:
    """A new connection and one account creation; -> (status or error class, X-Node-Id)."""
    await start.wait()
    try:
        async with http.post(url + "/users", json={"name": f"buyer {n}", "email": f"b{n}.{run}@example.com"}) as resp:
            await resp.read()
            return resp.status, resp.headers.get("X-Node-Id", "")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return type(exc).__name__, ""


async def burst(url: str, count: int) -> tuple[Counter[int | str], Counter[str], float]:
    """`count` connections opened at the same moment, one POST /users each; -> (statuses, node ids, seconds)."""
    run = uuid.uuid4().hex[:8]
    start = asyncio.Event()
    # no pooling, no limit: every buyer is a connection of its own, all opened at once
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        tasks = [asyncio.create_task(one_buyer(http, url, start, run, n)) for n in range(count)]
        await asyncio.sleep(0)  # every task waits at the gate
        began = time.monotonic()
        start.set()
        answers = await asyncio.gather(*tasks)
        took = time.monotonic() - began
    return Counter(status for status, _ in answers), Counter(node for _, node in answers), took


async def most_queued(cluster: LocalCluster) -> int:
    """The longest queue HAProxy's `nodes` backend had (requests waiting for a connection to a node)."""
    async with aiohttp.ClientSession() as http, http.get(cluster.stats_url + ";csv") as resp:
        rows = csv.DictReader(io.StringIO((await resp.text()).lstrip("# ")))
        return max(int(r["qmax"] or 0) for r in rows if r["pxname"] == "nodes")


@pytest.mark.parametrize(("link", "per_node"), [("unix", ""), ("tcp", ""), ("unix", "50")],
                         ids=["unix", "tcp", "unix-queued"])
async def test_a_burst_of_two_thousand_new_connections_is_answered_by_the_node(
        stack: EmbeddedStack, tmp_path: Path, link: str, per_node: str) -> None:
    """Every one of 2,000 buyers opening a connection at once gets the node's answer, over either link; with
    fewer connections allowed per node than the burst (HAPROXY_MAXCONN_PER_NODE), the rest queue in HAProxy."""
    haproxy_binary()
    env = cluster_env(stack, **({"HAPROXY_MAXCONN_PER_NODE": per_node} if per_node else {}))
    with LocalCluster(1, env=env, state_dir=tmp_path, link=link) as cluster:
        node_id = cluster.node_ids[0]
        # buyers one after another, each on a new connection, share HAProxy's idle connection to the node
        opened = int(cluster.servers()[node_id]["connect"])
        in_turn = Counter[int | str]()
        for _ in range(20):
            in_turn.update((await burst(cluster.url, 1))[0])
        opened = int(cluster.servers()[node_id]["connect"]) - opened

        statuses, nodes, took = await burst(cluster.url, BURST)
        queued = await most_queued(cluster)
        print(f"\nburst over {link}: {dict(statuses)} in {took:.1f} s, {queued} queued at most in HAProxy")
        haproxy_log = cluster.haproxy_log.read_text(errors="replace")
    assert in_turn == {201: 20}
    assert opened <= 2
    assert statuses == {201: BURST}, (statuses, haproxy_log[-3000:])
    assert nodes == {node_id: BURST}
    assert (queued > 0) == bool(per_node)
