"""The watching sockets, run in client processes: bare asyncio protocols that record every frame's latency.

2,000 sockets must be read by two processes on a box whose cores also run the nodes, so a socket is a
bare asyncio Protocol: it parses frame headers only (server frames are unmasked), answers pings, and
hands each text frame to its process's `FrameBook`. The nodes send the same bytes to every socket of a
session, so the book decodes each distinct frame once; a socket keeps its snapshot and the ids of the
frames it received, and its seat map is folded from them at the end (once per distinct history).
Latency is recorded for every frame on every socket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing.connection
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import uvloop

HIST_MS = 10_000  # latency histogram: 1 ms buckets up to 10 s, then one overflow bucket
CONNECT_CONCURRENCY = 50


def _mask_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (always masked; a zero mask leaves the payload as is). Control frames only: < 126 bytes."""
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


@dataclass
class FrameBook:
    """The distinct `seats` frames one client process has seen, and the latency of every receipt."""

    ids: dict[bytes, int] = field(default_factory=dict)  # frame bytes -> frame id
    changes: list[list[tuple[str, str, int]]] = field(default_factory=list)  # frame id -> (seat, status, version)
    committed: list[float] = field(default_factory=list)  # frame id -> committedAt (ms)
    snapshot_ids: dict[tuple[tuple[str, str, int], ...], int] = field(default_factory=dict)  # map -> snapshot id
    snapshots: list[dict[str, tuple[str, int]]] = field(default_factory=list)  # snapshot id -> seat map
    hist: list[int] = field(default_factory=lambda: [0] * (HIST_MS + 1))
    max_ms: float = 0.0
    frames: int = 0
    first_frame: float = 0.0
    last_frame: float = 0.0

    def frame_id(self, payload: bytes) -> int | None:
        fid = self.ids.get(payload)
        if fid is None:
            message = json.loads(payload)
            if message.get("type") != "seats":
                return None
            fid = self.ids[payload] = len(self.changes)
            self.changes.append([(c["id"], c["status"], int(c["version"])) for c in message["changes"]])
            self.committed.append(float(message["committedAt"]))
        return fid

    def snapshot_id(self, message: dict[str, Any]) -> int:
        """Equal snapshots share one id (and one map), so equal histories fold once."""
        seats = tuple((s["id"], s["status"], int(s["version"])) for s in message["seats"])
        sid = self.snapshot_ids.get(seats)
        if sid is None:
            sid = self.snapshot_ids[seats] = len(self.snapshots)
            self.snapshots.append({seat: (status, version) for seat, status, version in seats})
        return sid

    def received(self, fid: int, now: float) -> None:
        latency_ms = now * 1000 - self.committed[fid]
        self.hist[min(HIST_MS, max(0, int(latency_ms)))] += 1
        if latency_ms > self.max_ms:
            self.max_ms = latency_ms
        self.frames += 1
        self.first_frame = self.first_frame or now
        self.last_frame = now


class WatchSocket(asyncio.Protocol):
    """One watching socket: the upgrade, then frames; its snapshot and the ids of the frames since."""

    def __init__(self, book: FrameBook, path: str, host: str) -> None:
        self.book, self.path, self.host = book, path, host
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.node = ""
        self.snapshots = 0
        self.base = -1  # the last snapshot's id in the book
        self.seq: list[int] = []  # frame ids received since that snapshot
        self.changes = 0
        self.closed: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                        .encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed is None:
            self.closed = 1006
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before the snapshot ({exc!r})"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(buf[:end].split(b"\r\n")[0].decode(errors="replace")))
                self.buf = b""
                assert self.transport is not None
                self.transport.close()
                return
            self.upgraded = True
            buf = buf[end + 4:]
        pos, size = 0, len(buf)
        while size - pos >= 2:
            opcode, length, head = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if size - pos < head + length:
                break
            self.frame(opcode, buf[pos + head:pos + head + length])
            pos += head + length
        self.buf = buf[pos:] if pos < size else b""

    def frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x1:
            fid = self.book.frame_id(payload)
            if fid is not None:
                self.book.received(fid, time.time())
                self.seq.append(fid)
                self.changes += len(self.book.changes[fid])
            else:
                message = json.loads(payload)
                if message.get("type") == "snapshot":
                    self.snapshots += 1
                    self.node = str(message.get("nodeId", ""))
                    self.base = self.book.snapshot_id(message)
                    self.seq = []
                    if not self.ready.done():
                        self.ready.set_result(None)
        elif opcode == 0x9:  # ping: the node's heartbeat
            assert self.transport is not None
            self.transport.write(_mask_frame(0xA, payload))
        elif opcode == 0x8:
            self.closed = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            assert self.transport is not None
            self.transport.write(_mask_frame(0x8, payload[:2]))
            self.transport.close()

    def history(self) -> tuple[int, tuple[int, ...]]:
        return self.base, tuple(self.seq)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_mask_frame(0x8, (1000).to_bytes(2, "big")))
            self.transport.close()


def fold(book: FrameBook, base: int, seq: tuple[int, ...]) -> dict[str, tuple[str, int]]:
    """A socket's seat map: its snapshot with the received changes applied where their version is higher."""
    seats = dict(book.snapshots[base])
    for fid in seq:
        for seat, status, version in book.changes[fid]:
            known = seats.get(seat)
            if known is None or version > known[1]:
                seats[seat] = (status, version)
    return seats


def differing_sockets(book: FrameBook, socks: list[WatchSocket],
                      expected: dict[str, tuple[str, int]]) -> list[tuple[WatchSocket, int]]:
    """Open sockets whose map is not `expected`, with how many seat states differ (one fold per history)."""
    verdicts: dict[tuple[int, tuple[int, ...]], int] = {}
    out = []
    for sock in socks:
        if sock.closed is not None or not sock.node:
            continue
        key = sock.history()
        if key not in verdicts:
            seats = fold(book, sock.base, key[1])
            verdicts[key] = sum(1 for k, v in expected.items() if seats.get(k) != v)
        if verdicts[key]:
            out.append((sock, verdicts[key]))
    return out


async def _client(conn: multiprocessing.connection.Connection, ws_url: str, count: int) -> None:
    book = FrameBook()
    url = urlsplit(ws_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    socks = [WatchSocket(book, url.path, url.netloc) for _ in range(count)]
    failures: Counter[str] = Counter()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    loop = asyncio.get_running_loop()

    async def connect(sock: WatchSocket) -> None:
        async with gate:
            try:
                await loop.create_connection(lambda: sock, host, port)
                async with asyncio.timeout(30):
                    await sock.ready
            except (OSError, TimeoutError) as exc:
                failures[type(exc).__name__] += 1
                sock.node = ""

    started = time.monotonic()
    await asyncio.gather(*(connect(s) for s in socks))
    connected = [s for s in socks if s.node]
    conn.send(("connected", {"sockets": len(connected), "failures": dict(failures),
                             "seconds": time.monotonic() - started,
                             "by_node": dict(Counter(s.node for s in connected))}))
    command, expected = await loop.run_in_executor(None, conn.recv)
    assert command == "final"
    expected_map = {s["id"]: (s["status"], int(s["version"])) for s in expected}
    # converged = every socket's map equals PostgreSQL's; give stragglers a few seconds
    deadline = time.monotonic() + 10
    while True:
        differing = differing_sockets(book, connected, expected_map)
        if not differing or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    result = {
        "hist": book.hist, "max_ms": book.max_ms, "frames": book.frames,
        "changes": sum(s.changes for s in connected),
        "first_frame": book.first_frame, "last_frame": book.last_frame,
        "sockets_differing": len(differing), "missed_seat_states": sum(n for _, n in differing),
        "closed_during_run": dict(Counter(str(s.closed) for s in connected if s.closed is not None)),
        "resyncs": sum(max(0, s.snapshots - 1) for s in connected),
        "changes_per_socket_min": min((s.changes for s in connected), default=0),
    }
    for sock in socks:
        sock.close()
    conn.send(("result", result))


def client_main(conn: multiprocessing.connection.Connection, ws_url: str, count: int) -> None:
    """Entry point of a client process: `count` sockets on `ws_url` (uvloop: its transports are C)."""
    uvloop.run(_client(conn, ws_url, count))
