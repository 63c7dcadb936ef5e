"""HAProxy in front of a stand-in node: what it answers itself (429 past its rate, a JSON 503 without a live node)
and which forwarded headers it passes on."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from server.cluster import haproxy_config_path
from server.embedded import free_port, port_open
from tests.cluster_support import (
    haproxy_binary,
    wait_until,
)

pytestmark = pytest.mark.cluster



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
