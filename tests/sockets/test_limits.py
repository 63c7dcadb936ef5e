"""Seat channels on one node, against the real embedded PostgreSQL, Redis and Kafka: refusals and limits.

Every change a socket sees went the whole way: booking commit -> outbox row -> relay -> Kafka ->
this node's consumer -> hub -> socket. Assertions are what a client sees (messages, codes, close
codes) and what PostgreSQL holds afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import time
import uuid
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from core.appkeys import HUB
from core.settings import Settings
from server.app import create_app
from tests.conftest import make_session, seat_ids, with_settings
from tests.sockets.support import WAIT, watch

# ------------------------------------------------------------------ refusals and limits

async def test_upgrade_refusals_are_json_errors(client: TestClient, scene: dict[str, Any]) -> None:
    host = f"{client.server.host}:{client.server.port}"
    resp = await client.get(f"/ws/sessions/{uuid.uuid4()}")
    assert (resp.status, (await resp.json())["code"]) == (404, "session_not_found")
    resp = await client.get("/ws/sessions/not-a-uuid")
    assert (resp.status, (await resp.json())["code"]) == (400, "validation_error")
    resp = await client.get(f"/ws/sessions/{scene['sid']}")  # a plain GET, no upgrade
    assert (resp.status, (await resp.json())["code"]) == (426, "upgrade_required")
    for origin in ("http://evil.example", f"http://{client.server.host}:1", "null"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(f"/ws/sessions/{scene['sid']}", headers={"Origin": origin})
        assert refused.value.status == 403
        resp = await client.get(f"/ws/sessions/{scene['sid']}", headers={
            "Origin": origin, "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        assert (resp.status, (await resp.json())["code"]) == (403, "origin_not_allowed")
    same_host = await watch(client, scene["sid"], headers={"Origin": f"http://{host}"})
    assert same_host.snapshots


async def test_allowed_origins_setting(aiohttp_client: Any, base_settings: Settings) -> None:
    client = await aiohttp_client(create_app(with_settings(base_settings, allowed_origins=("https://box.example",))))
    session = await make_session(client)
    assert (await watch(client, session["id"], headers={"Origin": "https://box.example"})).snapshots
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(f"/ws/sessions/{session['id']}",
                                headers={"Origin": f"http://{client.server.host}:{client.server.port}"})
    assert refused.value.status == 403


async def test_oversized_frame_closes_1009(client: TestClient, scene: dict[str, Any]) -> None:
    watcher = await watch(client, scene["sid"])
    await watcher.ws.send_str(json.dumps({"type": "ping", "pad": "x" * (17 * 1024)}))
    assert await watcher.closed_with() == 1009


async def test_flood_closes_1008(client: TestClient, scene: dict[str, Any]) -> None:
    watcher = await watch(client, scene["sid"])
    for _ in range(200):
        await watcher.ws.send_json({"type": "ping"})
    assert await watcher.closed_with() == 1008


async def test_idle_socket_is_closed(aiohttp_client: Any, base_settings: Settings) -> None:
    client = await aiohttp_client(create_app(with_settings(base_settings, ws_idle_timeout=0.5)))
    session = await make_session(client)
    watcher = await watch(client, session["id"])
    assert await watcher.closed_with(within=5) == 1000


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The complete (opcode, payload) frames a server sent (unmasked), in order."""
    frames, pos = [], 0
    while len(data) - pos >= 2:
        length, head = data[pos + 1] & 0x7F, 2
        if length == 126:
            length, head = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
        elif length == 127:
            length, head = int.from_bytes(data[pos + 2:pos + 10], "big"), 10
        if len(data) - pos < head + length:
            break
        frames.append((data[pos] & 0x0F, data[pos + head:pos + head + length]))
        pos += head + length
    return frames


async def test_a_socket_that_cannot_keep_up_is_dropped_1013(aiohttp_client: Any, base_settings: Settings) -> None:
    client = await aiohttp_client(create_app(with_settings(base_settings, ws_queue_size=2)))
    session = await make_session(client, rows=10, per_row=10)
    seats = await seat_ids(client, session["id"])
    hub = client.app[HUB]
    # a peer that stops reading after the upgrade: a small receive buffer, so the node's side backs up soon
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, (client.server.host, client.server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(sock, (f"GET /ws/sessions/{session['id']} HTTP/1.1\r\nHost: x\r\n"
                                       "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                       f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        for _ in range(200):
            if hub.connections() and hub.connections()[0]._writer is None:  # its snapshot is written
                break
            await asyncio.sleep(0.02)
        [slow_conn] = hub.connections()
        # frames of every seat, one per tick, while the peer reads nothing: the kernel's buffers, then the
        # transport's, then the queue of 2 fill up
        for version in range(101, 1101):
            hub.publish({"sessionId": session["id"], "committedAt": int(time.time() * 1000),
                         "changes": [{"id": seat, "status": "RESERVED", "version": version} for seat in seats]})
            hub.flush()
            if slow_conn.closing:
                break
            await asyncio.sleep(0.001)
        assert slow_conn.closing and slow_conn.close_code == 1013
        received = b""  # the peer reads again: what was sent before the drop, then the close frame
        with contextlib.suppress(OSError):
            async with asyncio.timeout(WAIT):
                while chunk := await loop.sock_recv(sock, 1 << 16):
                    received += chunk
        received = received[received.index(b"\r\n\r\n") + 4:]
        closes = [payload for opcode, payload in server_frames(received) if opcode == 0x8]
        assert closes and int.from_bytes(closes[0][:2], "big") == 1013
    finally:
        sock.close()
    for _ in range(100):  # the handler's `finally` unsubscribes it
        if not hub.sessions:
            break
        await asyncio.sleep(0.02)
    assert not hub.sessions


async def test_shutdown_closes_sockets_with_1001(aiohttp_client: Any, base_settings: Settings) -> None:
    client = await aiohttp_client(create_app(base_settings))
    session = await make_session(client)
    watcher = await watch(client, session["id"])
    closing = asyncio.create_task(watcher.closed_with())
    await client.server.close()
    assert await closing == 1001
