"""A burst at the door: thousands of new connections in the same second, through HAProxy to one node.

A rush starts like this: every buyer opens a connection at once. Each must be answered by the node --
no refused connection at the client, no 503 from HAProxy because the node's listen queue overflowed.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import resource
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from server.cli import listen_backlog
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


def account_request(host: str, n: int) -> bytes:
    """POST /users for a new buyer, the whole request in bytes (one write: the client does as little as it can)."""
    body = json.dumps({"name": f"buyer {n}", "email": f"b{n}.{uuid.uuid4().hex[:12]}@example.com"}).encode()
    head = (f"POST /users HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def health_request(host: str, n: int) -> bytes:
    """GET /health: the door alone is under test, not how fast a busy machine writes to PostgreSQL."""
    return f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


async def one_buyer(host: str, port: int, request: bytes, start: asyncio.Event) -> tuple[int | str, str]:
    """A new connection and one request; -> (status or error class, X-Node-Id)."""
    await start.wait()
    try:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request)
            answer = await asyncio.wait_for(reader.read(), 60)  # the node closes after its answer
        finally:
            writer.close()
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__, ""
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    if not head[0].startswith("HTTP/1.1 "):
        return "no answer", ""
    headers = dict(line.lower().split(": ", 1) for line in head[1:] if ": " in line)
    return int(head[0].split()[1]), headers.get("x-node-id", "")


async def burst(url: str, count: int, request: Callable[[str, int], bytes]
                ) -> tuple[Counter[int | str], Counter[str], float]:
    """`count` connections opened at the same moment, one request each; -> (statuses, node ids, seconds)."""
    target = urlsplit(url)
    host, port = target.hostname or "127.0.0.1", target.port or 80
    start = asyncio.Event()
    tasks = [asyncio.create_task(one_buyer(host, port, request(host, n), start)) for n in range(count)]
    await asyncio.sleep(0)  # every buyer waits at the gate
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


def listen_queues() -> dict[str, int]:
    """Every listening TCP port ("127.0.0.1:8080") and Unix socket (its path) -> its listen backlog (`ss`)."""
    queues: dict[str, int] = {}
    for args, local, size in ((["-Hlnt"], 3, 2), (["-Hlx"], 4, 3)):
        out = subprocess.run(["ss", *args], capture_output=True, text=True, check=True).stdout  # noqa: S603,S607
        for fields in (line.split() for line in out.splitlines()):
            queues[fields[local]] = int(fields[size])
    return queues


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
        queues = listen_queues()
        node_listeners = [f"127.0.0.1:{cluster.node_ports[0]}", *map(str, cluster.node_sockets)]
        # buyers one after another, each on a new connection, share HAProxy's idle connection to the node
        opened = int(cluster.servers()[node_id]["connect"])
        in_turn = Counter[int | str]()
        for _ in range(20):
            in_turn.update((await burst(cluster.url, 1, account_request))[0])
        opened = int(cluster.servers()[node_id]["connect"]) - opened

        statuses, nodes, took = await burst(cluster.url, BURST, health_request)
        queued = await most_queued(cluster)
        print(f"\nburst over {link}: {dict(statuses)} in {took:.1f} s, {queued} queued at most in HAProxy; "
              f"{opened} node connections for 20 buyers in turn")
        haproxy_log = cluster.haproxy_log.read_text(errors="replace")
    # every listener of the node (its TCP port, its Unix socket) has the longest queue the kernel allows
    assert {name: queues.get(name) for name in node_listeners} == dict.fromkeys(node_listeners, listen_backlog())
    assert in_turn == {201: 20}
    assert opened <= 2
    assert statuses == {200: BURST}, (statuses, haproxy_log[-3000:])
    assert nodes == {node_id: BURST}
    assert (queued > 0) == bool(per_node)
