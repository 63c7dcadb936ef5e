"""The misbehaving clients of the hostile-socket test, the well-behaved stream beside them, and how the nodes are
measured meanwhile (memory, open sockets, connections cut).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import time
import uuid
from collections.abc import Sequence
from itertools import cycle
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from server.cluster import LocalCluster
from tests.cluster_support import (
    CLUSTER_ADMIN,
    SeatSocket,
)
from tests.conftest import bearer

WATCHERS = 100


NEVER_READERS = 200


# A big room: its snapshot (~110 kB) is bulk data that a never-reading client's buffers cannot take.
ROOM_ROWS, ROOM_PER_ROW = 25, 40


HOSTILE_SEATS = 40  # the last seats of the room: only the hostile clients aim at them, the stream never


HOLDS_PER_SECOND = 30


STREAM_SECONDS = 15.0


SEATS_PER_HOLD = (1, 2, 3, 2)  # 2 on average: 450 holds take 900 distinct seats, each held once


HOLD_USERS = 24  # spreads the holds under MAX_SEATS_PER_USER (20 held at once per user)


# Never-reading clients shrink their receive buffer (the kernel doubles it to 8 kB) and ask for a few
# snapshots on top of the first one, so the bytes meant for them outgrow every buffer on the way.
NEVER_READER_RCVBUF = 4096


NEVER_READER_RESYNCS = 10


BIG_FRAME = 10 * 1024 * 1024


FLOOD_RATE, FLOOD_MESSAGES = 5000, 5000


# Growth of a node's RSS (peak during the test minus before it). Measured ~31 MB on fresh nodes, nearly
# all of it the allocator's high-water mark after 300 snapshots of this room are rendered (the same test
# run again on the same nodes adds ~2 MB): ~100 sockets per node, and for each never-reader at most one
# frame plus aiohttp's 64 kB write buffer while its writer waits. Had a node kept, per socket, what is
# meant for a never-reader (11 snapshots of ~110 kB plus the stream, ~67 never-readers per node) it
# would grow by a further ~90 MB, so the bound tells the two apart.
RSS_GROWTH_BOUND_MB = 64


TCP_STATE_ESTABLISHED = 1


# ------------------------------------------------------------------ measuring the nodes

def rss_mb(pid: int) -> float:
    """VmRSS of a process, in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


async def open_sockets(http: aiohttp.ClientSession, node_url: str) -> int:
    """The node's own count of open WebSockets (its /metrics gauge)."""
    async with http.get(f"{node_url}/metrics", headers=CLUSTER_ADMIN) as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith("boxoffice_websockets_open "):
                return int(float(line.split()[1]))
    raise AssertionError(f"no boxoffice_websockets_open on {node_url}/metrics")


def cut_lines(cluster: LocalCluster, i: int) -> int:
    """How many sockets node i has cut for not taking their close frame (the hub logs each one)."""
    try:
        return cluster.log_path(i).read_text(errors="replace").count("cutting a socket")
    except OSError:
        return 0


# ------------------------------------------------------------------ clients

class RecordingSeatSocket(SeatSocket):
    """A well-behaved watcher that also remembers every (seat, version) it was sent, and when."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_versions: dict[str, int] = {}
        self.received: dict[tuple[str, int], float] = {}  # (seat id, version) -> epoch ms of receipt

    def _apply_snapshot(self, message: dict[str, Any]) -> None:
        super()._apply_snapshot(message)
        if not self.first_versions:
            self.first_versions = {seat: version for seat, (_, version) in self.seats.items()}

    def _apply_changes(self, changes: list[dict[str, Any]]) -> None:
        now_ms = time.time() * 1000
        for change in changes:
            self.received.setdefault((change["id"], int(change["version"])), now_ms)
        super()._apply_changes(changes)


def masked_text_frame(payload: bytes) -> bytes:
    """One client-to-server text frame (clients must mask; RFC 6455 section 5.3)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class NeverReader:
    """A raw TCP client that upgrades to a seat channel and then never reads a byte.

    Its receive buffer is made small before connecting, so the kernel soon advertises a zero window
    and everything the node sends it piles up on the node's side: in the node's socket send buffer
    (capped at 128 kB by realtime.channel.WS_SEND_BUFFER), then its write buffer, then its queue,
    whose overflow makes the hub drop it. Whether the upgrade worked is
    checked with MSG_PEEK (which leaves the bytes in the buffer), and whether the node has closed or
    cut the connection with TCP_INFO (the state of the socket) -- neither reads anything.
    """

    def __init__(self, node_url: str, session_id: str) -> None:
        parts = urlsplit(node_url)
        assert parts.hostname is not None and parts.port is not None
        self.address = (parts.hostname, parts.port)
        self.path = f"/ws/sessions/{session_id}"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, NEVER_READER_RCVBUF)
        self.sock.setblocking(False)
        self.ended_at: float | None = None  # loop time when the node closed or cut it

    async def connect(self, resyncs: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, self.address)
        key = base64.b64encode(os.urandom(16)).decode()
        handshake = (f"GET {self.path} HTTP/1.1\r\nHost: {self.address[0]}:{self.address[1]}\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        await loop.sock_sendall(self.sock, handshake.encode())
        deadline = loop.time() + 10
        head = b""
        while b"\r\n\r\n" not in head:
            assert loop.time() < deadline, f"no upgrade answer from {self.address}: {head!r}"
            with contextlib.suppress(BlockingIOError):
                head = self.sock.recv(1024, socket.MSG_PEEK)
            await asyncio.sleep(0.01)
        assert head.startswith(b"HTTP/1.1 101"), head[:200]
        resync = masked_text_frame(b'{"type":"resync"}')
        await loop.sock_sendall(self.sock, resync * resyncs)

    def tcp_state(self) -> int:
        return self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]

    def poll(self, now: float) -> None:
        if self.ended_at is None and self.tcp_state() != TCP_STATE_ESTABLISHED:
            self.ended_at = now

    def close(self) -> None:
        self.sock.close()


async def connect_never_readers(cluster: LocalCluster, session_id: str) -> list[NeverReader]:
    readers = [NeverReader(cluster.node_urls[k % cluster.nodes], session_id) for k in range(NEVER_READERS)]
    try:
        for start in range(0, len(readers), 50):  # in batches: the nodes' accept queues stay short
            await asyncio.gather(*(r.connect(NEVER_READER_RESYNCS) for r in readers[start:start + 50]))
    except BaseException:
        for reader in readers:
            reader.close()
        raise
    return readers


# ------------------------------------------------------------------ the misbehaving clients

async def close_frame_code(ws: aiohttp.ClientWebSocketResponse) -> int | str:
    """Read until the node's close frame and return its code (what the node said, not how the TCP ended).

    `ws.close_code` is not it: the client answers the close while it may still be sending, and when
    that answer meets a connection the node already closed, aiohttp records 1006 over the node's code.
    """
    while True:
        msg = await ws.receive(timeout=20)
        if msg.type is aiohttp.WSMsgType.CLOSE:
            return int(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return f"no close frame: {msg.type.name} {msg.data!r} {msg.extra!r}"


async def send_big_frame(http: aiohttp.ClientSession, url: str) -> int | str:
    """A single 10 MB frame: the contract says close code 1009 (the limit is 16 KiB)."""
    async with http.ws_connect(url, heartbeat=None) as ws:
        first = await ws.receive_json(timeout=10)
        assert first["type"] == "snapshot"
        payload = '{"type":"ping","pad":"' + "x" * BIG_FRAME + '"}'
        sender = asyncio.create_task(ws.send_str(payload))
        try:
            code = await close_frame_code(ws)
        finally:
            with contextlib.suppress(Exception):  # the node stops listening mid-frame: the send may fail
                await asyncio.wait_for(sender, 10)
        return code


async def flood(http: aiohttp.ClientSession, url: str) -> tuple[int | str, int]:
    """5,000 pings a second from one socket: the contract says close code 1008. Returns (code, sent)."""
    loop = asyncio.get_running_loop()
    async with http.ws_connect(url, heartbeat=None) as ws:
        first = await ws.receive_json(timeout=10)
        assert first["type"] == "snapshot"
        sent = 0

        async def pump() -> None:
            nonlocal sent
            start = loop.time()
            with contextlib.suppress(ConnectionError, RuntimeError):  # closed under us: the point
                while sent < FLOOD_MESSAGES and not ws.closed:
                    for _ in range(50):
                        await ws.send_str('{"type":"ping"}')
                        sent += 1
                    await asyncio.sleep(max(0.0, start + sent / FLOOD_RATE - loop.time()))

        pumping = asyncio.create_task(pump())
        try:
            code = await close_frame_code(ws)
        finally:
            await pumping
        return code, sent


async def bad_origin(http: aiohttp.ClientSession, url: str) -> tuple[int, int, str]:
    """A browser page from another site opening a channel through HAProxy: 403 at the upgrade."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(url, headers={"Origin": "https://evil.example"})
    async with http.get(url, headers={
            "Origin": "https://evil.example", "Connection": "Upgrade", "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}) as resp:
        body = await resp.json()
        return refused.value.status, resp.status, body["code"]


async def forged_token_holds(http: aiohttp.ClientSession, node_url: str, session_id: str,
                             seats: Sequence[str]) -> list[dict[str, Any]]:
    """A socket whose token is not valid may watch, but its hold and release are refused."""
    forged = SeatSocket(http, node_url, session_id, token="forged-" + uuid.uuid4().hex)
    await forged.connect()
    try:
        return [await forged.request({"type": "hold", "sessionSeatIds": list(seats[:3])}),
                await forged.request({"type": "hold", "sessionSeatIds": list(seats[3:4]),
                                      "idempotencyKey": "forged"}),
                await forged.request({"type": "release", "reservationId": str(uuid.uuid4())})]
    finally:
        await forged.close()


# ------------------------------------------------------------------ the stream of holds

async def hold_stream(api: aiohttp.ClientSession, users: Sequence[dict[str, Any]], session_id: str,
                      seats: Sequence[str]) -> list[tuple[int, str | None]]:
    """HOLDS_PER_SECOND holds through HAProxy for STREAM_SECONDS, each on seats nobody held before."""
    loop = asyncio.get_running_loop()
    outcomes: list[tuple[int, str | None]] = []
    fresh = iter(seats)
    sizes, holders = cycle(SEATS_PER_HOLD), cycle(users)

    async def one(user: dict[str, Any], chosen: list[str]) -> None:
        async with api.post("/reservations", json={"userId": user["id"], "sessionId": session_id,
                                                   "sessionSeatIds": chosen},
                            headers=bearer(user["token"])) as resp:
            body = await resp.json()
            outcomes.append((resp.status, None if resp.status == 201 else body.get("code")))

    start = loop.time()
    async with asyncio.TaskGroup() as group:
        for k in range(int(HOLDS_PER_SECOND * STREAM_SECONDS)):
            await asyncio.sleep(max(0.0, start + k / HOLDS_PER_SECOND - loop.time()))
            chosen = [next(fresh) for _ in range(next(sizes))]
            group.create_task(one(next(holders), chosen))
    return outcomes


async def outbox_changes(con: asyncpg.Connection, session_id: str) -> dict[tuple[str, int], int]:
    """Every seat change the session's outbox carries: (seat id, version) -> committedAt (epoch ms)."""
    rows = await con.fetch("SELECT payload FROM outbox WHERE session_id = $1::uuid", session_id)
    changes: dict[tuple[str, int], int] = {}
    for row in rows:
        payload = json.loads(row["payload"]) if isinstance(row["payload"], str) else row["payload"]
        for change in payload["changes"]:
            changes[(change["id"], int(change["version"]))] = int(payload["committedAt"])
    return changes


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")
