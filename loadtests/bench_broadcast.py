"""Broadcast benchmark: N nodes behind HAProxy, thousands of watching sockets, a steady stream of holds.

What it measures, on one session watched by every socket:
- latency from a change's commit (`committedAt` of the frame; for a coalesced frame its oldest commit)
  to its receipt, over every frame on every socket: p50 / p99 / max;
- frames and seat changes delivered per second;
- missed changes: after quiescence every socket's map (snapshot + changes applied only when their
  version is higher) must equal GET /sessions/{id}/seats; a seat that differs is a missed change;
- server memory per socket: VmRSS of the node processes before and after the sockets connect;
- the outbox hop from commit to the row's `published_at` (relay: the start of the relay's claim
  transaction, just before it produces; direct: the mark after the broker's ack);
- with `--publish both`, the same run with the outbox relay and with each node producing its events
  straight after the commit (OUTBOX_PUBLISH=direct), and their ratio: the cost of durability.

It is a benchmark, not a test: it starts its own embedded services (unless DATABASE_URL, REDIS_URL,
KAFKA_BOOTSTRAP_SERVERS are set) and its own local cluster, talks to it through the wire contract
only, prints its figures with the command that produced them and writes them as JSON.

    .venv/bin/python -m loadtests.bench_broadcast --sockets 2000 --rate 100 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import multiprocessing.connection
import os
import secrets
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import uvloop

from loadtests.metrics import speed_probe

HIST_MS = 10_000  # latency histogram: 1 ms buckets up to 10 s, then one overflow bucket
CONNECT_CONCURRENCY = 50
WARM_SOCKETS_PER_NODE = 50  # the first wave (see bench: memory per socket is measured after it)
# 400 seats: at 100 holds/s of 0.5 s each ~50 are held at once, so a slow spell rarely runs out of seats
ROOM_ROWS, ROOM_SEATS_PER_ROW = 20, 20


# ---- the watching sockets (run in client processes) -------------------------------------------------
#
# 2,000 sockets must be read by two processes on a box whose cores also run the nodes, so a socket is a
# bare asyncio Protocol: it parses frame headers only (server frames are unmasked), answers pings, and
# hands each text frame to its process's `FrameBook`. The nodes send the same bytes to every socket of a
# session, so the book decodes each distinct frame once; a socket keeps its snapshot and the ids of the
# frames it received, and its seat map is folded from them at the end (once per distinct history).
# Latency is recorded for every frame on every socket.


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


# ---- the cluster side (main process) -------------------------------------------------------------------


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(hist: list[int], q: float) -> float:
    total = sum(hist)
    if not total:
        return float("nan")
    rank, seen = q * total, 0
    for ms, count in enumerate(hist):
        seen += count
        if seen >= rank:
            return float(ms)
    return float(HIST_MS)


@dataclass
class LoadStats:
    holds: int = 0
    releases: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    lag_skipped: int = 0


async def generate_load(http: aiohttp.ClientSession, session_id: str, seats: list[str], users: list[dict[str, Any]],
                        rate: float, duration: float, hold_seconds: float) -> LoadStats:
    """`rate` holds per second (one seat each) through HAProxy, each released `hold_seconds` later."""
    stats = LoadStats()
    free = deque(seats)
    in_flight: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    async def cycle(k: int, seat: str) -> None:
        user = users[k % len(users)]
        auth = {"Authorization": f"Bearer {user['token']}"}
        try:
            async with http.post("/reservations", json={"userId": user["id"], "sessionId": session_id,
                                                        "sessionSeatIds": [seat]}, headers=auth) as resp:
                body = await resp.json()
                if resp.status != 201:
                    stats.failed[f"hold {resp.status} {body.get('code')}"] += 1
                    return
                stats.holds += 1
            await asyncio.sleep(hold_seconds)
            async with http.delete(f"/reservations/{body['id']}", headers=auth) as resp:
                if resp.status == 204:
                    stats.releases += 1
                else:
                    stats.failed[f"release {resp.status}"] += 1
        except aiohttp.ClientError as exc:
            stats.failed[type(exc).__name__] += 1
        finally:
            free.append(seat)

    start = loop.time()
    total = int(rate * duration)
    for k in range(total):
        delay = start + k / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if not free:  # every seat held: the server is slower than the asked rate
            stats.lag_skipped += 1
            continue
        task = asyncio.create_task(cycle(k, free.popleft()))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
    return stats


Fixture = tuple[str, list[str], list[dict[str, Any]]]  # session id, its seat ids, buyers with tokens


async def create_fixture(http: aiohttp.ClientSession, admin: dict[str, str], users: int) -> Fixture:
    async with http.post("/rooms", json={"name": f"Bench {uuid.uuid4().hex[:6]}", "rows": ROOM_ROWS,
                                             "seatsPerRow": ROOM_SEATS_PER_ROW},
                         headers=admin) as resp:
        room = await resp.json()
        assert resp.status == 201, room
    start = datetime.now(UTC) + timedelta(days=3)
    async with http.post("/sessions", json={"movieTitle": "Broadcast bench", "startShowTime": start.isoformat(),
                                            "endShowTime": (start + timedelta(hours=2)).isoformat(),
                                            "roomId": room["id"], "ticketPrice": 10}, headers=admin) as resp:
        session = await resp.json()
        assert resp.status == 201, session
    async with http.get(f"/sessions/{session['id']}/seats") as resp:
        seats = [s["id"] for s in (await resp.json())["seats"]]
    buyers = []
    for k in range(users):
        async with http.post("/users", json={"name": f"Bench {k}",
                                             "email": f"bench-{uuid.uuid4().hex[:10]}@example.com"}) as resp:
            buyers.append(await resp.json())
    return session["id"], seats, buyers


async def outbox_figures(dsn: str, session_id: str) -> dict[str, Any]:
    """Events, changes, and the relay hop (commit -> relay claims the row; `published_at` is the start of the
    relay's claim-produce-mark transaction) from the outbox table."""
    con = await asyncpg.connect(dsn)
    try:
        rows = await con.fetch(
            "SELECT (payload->>'committedAt')::float8 AS committed_ms, "
            "       (extract(epoch FROM published_at) * 1000)::float8 AS published_ms, "
            "       jsonb_array_length(payload->'changes') AS changes "
            "FROM outbox WHERE session_id = $1::uuid", session_id)
    finally:
        await con.close()
    hops = sorted(r["published_ms"] - r["committed_ms"] for r in rows if r["published_ms"] is not None)

    def pick(q: float) -> float | None:
        return round(hops[min(len(hops) - 1, int(q * len(hops)))], 1) if hops else None

    return {"events": len(rows), "changes": sum(r["changes"] for r in rows),
            "unpublished": sum(1 for r in rows if r["published_ms"] is None),
            "commit_to_published_at_ms": {"p50": pick(0.5), "p99": pick(0.99),
                                         "max": round(hops[-1], 1) if hops else None}}


async def node_figures(http: aiohttp.ClientSession, node_urls: list[str],
                       admin: dict[str, str]) -> tuple[dict[str, Any], dict[str, int]]:
    """From every node's /metrics: commit -> the node's write of the frame (`boxoffice_broadcast_latency_seconds`,
    per change batch, before the kernel, HAProxy and the client: bucket upper bounds), and the consumers'
    restarts and offset holes, summed over the nodes."""
    buckets: Counter[float] = Counter()
    consumer: Counter[str] = Counter()
    for url in node_urls:
        async with http.get(url + "/metrics", headers=admin) as resp:
            text = await resp.text()
        for line in text.splitlines():
            for family in ("boxoffice_kafka_consumer_restarts_total{", "boxoffice_kafka_consumer_gaps_total{"):
                if line.startswith(family):
                    label = line.split('"', 2)[1]
                    consumer[f"{family.split('_')[3]} {label}"] += int(float(line.rsplit(" ", 1)[1]))
            if line.startswith("boxoffice_broadcast_latency_seconds_bucket{"):
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                buckets[float("inf") if bound == "+Inf" else float(bound)] += int(float(line.rsplit(" ", 1)[1]))
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0

    def upto(q: float) -> str | None:
        for bound in bounds:
            if total and buckets[bound] >= q * total:
                return f"<= {bound * 1000:g} ms" if bound != float("inf") else "> 10 s"
        return None

    return {"batches": int(total), "p50": upto(0.5), "p99": upto(0.99)}, dict(consumer)


async def wait_outbox_drained(dsn: str, session_id: str, within: float = 30.0) -> bool:
    con = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            left = await con.fetchval("SELECT count(*) FROM outbox WHERE session_id = $1::uuid "
                                      "AND published_at IS NULL", session_id)
            if left == 0:
                return True
            await asyncio.sleep(0.2)
        return False
    finally:
        await con.close()


async def bench(args: argparse.Namespace, cluster: Any, dsn: str, admin_token: str, publish: str) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {admin_token}"}
    async with aiohttp.ClientSession(base_url=cluster.url,
                                     connector=aiohttp.TCPConnector(limit=args.http_connections)) as http:
        session_id, seats, users = await create_fixture(http, admin, args.users)
        ws_url = cluster.url.replace("http://", "ws://") + f"/ws/sessions/{session_id}"
        pids = [p.pid for p in cluster.procs if p is not None]
        rss_before = [rss_kib(p) for p in pids]

        ctx = multiprocessing.get_context("spawn")
        pipes, procs = [], []

        def start_client(count: int) -> None:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_main, args=(child, ws_url, count), daemon=True)
            proc.start()
            pipes.append(parent)
            procs.append(proc)

        # A first wave warms the nodes (the first sockets pay one-time costs: code paths, caches, allocator
        # arenas); memory per socket is the slope over the second wave, and the all-in figure is kept too.
        warm = min(args.sockets // 10, WARM_SOCKETS_PER_NODE * cluster.nodes)
        rest = args.sockets - warm
        try:
            progress(f"connecting {args.sockets} sockets from {args.clients} client processes "
                     f"({warm} first, to warm the nodes)")
            connected = []
            rss_warm, warmed = rss_before, 0
            if warm:
                start_client(warm)
                connected.append(await asyncio.to_thread(pipes[0].recv))
                warmed = connected[0][1]["sockets"]
                await asyncio.sleep(2)
                rss_warm = [rss_kib(p) for p in pids]
            for k in range(args.clients):
                start_client(rest // args.clients + (1 if k < rest % args.clients else 0))
            connected += [await asyncio.to_thread(p.recv) for p in pipes[len(connected):]]
            progress(f"connected {sum(c[1]['sockets'] for c in connected)} sockets")
            if not sum(c[1]["sockets"] for c in connected):
                raise RuntimeError(f"no socket connected: {[c[1]['failures'] for c in connected]}")
            await asyncio.sleep(2)  # let the nodes settle after the connection burst
            rss_connected = [rss_kib(p) for p in pids]

            progress(f"load: {args.rate} holds/s for {args.duration} s")
            load_started = time.time()
            load = await generate_load(http, session_id, seats, users, args.rate, args.duration, args.hold_seconds)
            load_seconds = time.time() - load_started
            progress("waiting for the outbox to drain and every socket to converge")
            drained = await wait_outbox_drained(dsn, session_id)
            async with http.get(f"/sessions/{session_id}/seats") as resp:
                final = (await resp.json())["seats"]
            for p in pipes:
                p.send(("final", final))
            results = [(await asyncio.to_thread(p.recv))[1] for p in pipes]
            node_flush, node_consumers = await node_figures(http, cluster.node_urls, admin)
            rss_after = [rss_kib(p) for p in pids]
        except BaseException:
            for proc in procs:  # they wait for a command that will not come
                proc.kill()
            raise
        finally:
            for proc in procs:
                proc.join(15)
                if proc.is_alive():
                    proc.kill()
    outbox = await outbox_figures(dsn, session_id)

    hist = [sum(col) for col in zip(*(r["hist"] for r in results), strict=True)]
    frames = sum(r["frames"] for r in results)
    changes = sum(r["changes"] for r in results)
    sockets = sum(c[1]["sockets"] for c in connected)
    by_node: Counter[str] = Counter()
    for c in connected:
        by_node.update(c[1]["by_node"])
    firsts = [r["first_frame"] for r in results if r["first_frame"]]
    lasts = [r["last_frame"] for r in results if r["last_frame"]]
    window = (max(lasts) - min(firsts)) if firsts and lasts else 0.0
    rss_delta = sum(rss_connected) - sum(rss_before)
    second_wave = sockets - warmed
    rss_slope = sum(rss_connected) - sum(rss_warm)
    return {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, "-m", "loadtests.bench_broadcast", *sys.argv[1:]]),
        "started": datetime.fromtimestamp(load_started, UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
        "setup": {"nodes": cluster.nodes, "sockets_asked": args.sockets, "client_processes": args.clients,
                  "tick_ms": args.tick_ms, "outbox_publish": publish, "link": "unix" if cluster.socket_dir else "tcp",
                  "frames_per_second_per_node": int(cluster.node_env(0)["WS_MAX_FRAMES_PER_SECOND"]),
                  "holds_per_second_asked": args.rate, "duration_s": args.duration,
                  "hold_seconds": args.hold_seconds, "session_seats": len(seats)},
        "sockets": {"connected": sockets, "by_node": dict(by_node),
                    "connect_failures": sum(sum(c[1]["failures"].values()) for c in connected),
                    "connect_seconds": round(max(c[1]["seconds"] for c in connected), 2)},
        "load": {"holds": load.holds, "releases": load.releases,
                 "holds_per_second": round(load.holds / load_seconds, 1) if load_seconds else 0,
                 "failed": dict(load.failed), "skipped_no_free_seat": load.lag_skipped,
                 "seconds": round(load_seconds, 2)},
        "latency_ms": {"p50": percentile(hist, 0.50), "p90": percentile(hist, 0.90),
                       "p99": percentile(hist, 0.99), "max": round(max(r["max_ms"] for r in results), 1),
                       "samples": sum(hist), "note": "per frame per socket, commit (committedAt) to receipt"},
        "delivery": {"frames": frames, "changes": changes,
                     "frames_per_second": round(frames / window, 1) if window else 0,
                     "changes_per_second": round(changes / window, 1) if window else 0,
                     "changes_per_socket_min": min(r["changes_per_socket_min"] for r in results),
                     "outbox_changes_per_socket": outbox["changes"]},
        "missed": {"sockets_not_converged": sum(r["sockets_differing"] for r in results),
                   "missed_seat_states": sum(r["missed_seat_states"] for r in results),
                   "sockets_closed_during_run": sum(sum(r["closed_during_run"].values()) for r in results),
                   "close_codes": dict(sum((Counter(r["closed_during_run"]) for r in results), Counter())),
                   "resyncs": sum(r["resyncs"] for r in results), "outbox_drained": drained},
        "memory": {"rss_kib_before": rss_before, "rss_kib_warm": rss_warm, "rss_kib_connected": rss_connected,
                   "rss_kib_after_load": rss_after,
                   "kib_per_socket": round(rss_slope / second_wave, 2) if second_wave else None,
                   "kib_per_socket_all_in": round(rss_delta / sockets, 2) if sockets else None,
                   "note": "kib_per_socket: RSS growth per socket after a first wave of sockets warmed the nodes; "
                           "all_in: from before any socket, one-time costs included"},
        "outbox": outbox,
        "commit_to_node_write": node_flush,
        "node_consumers": node_consumers,
    }


# what the outbox row's published_at stamps in each mode
PUBLISHED_AT = {"relay": "relay claim", "direct": "acked and marked"}


def durability(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The outbox relay's latency against publishing straight after commit, from runs of both modes."""
    relay, direct = results["relay"]["latency_ms"], results["direct"]["latency_ms"]

    def ratio(key: str) -> float | None:
        return round(relay[key] / direct[key], 2) if direct[key] else None

    return {"relay_ms": {k: relay[k] for k in ("p50", "p99", "max")},
            "direct_ms": {k: direct[k] for k in ("p50", "p99", "max")},
            "relay_over_direct": {k: ratio(k) for k in ("p50", "p99")},
            "note": "commit -> receipt on every socket, outbox relay vs the committing node producing at once"}


def durability_report(cost: dict[str, Any]) -> str:
    r, d, x = cost["relay_ms"], cost["direct_ms"], cost["relay_over_direct"]
    return (f"durability cost  : commit -> receipt p50 / p99: outbox relay {r['p50']:.0f} / {r['p99']:.0f} ms, "
            f"publish straight after commit {d['p50']:.0f} / {d['p99']:.0f} ms; relay / direct = "
            f"{x['p50']} / {x['p99']}\n")


def report(result: dict[str, Any]) -> str:
    lat, dl, miss, mem, ob = (result["latency_ms"], result["delivery"], result["missed"], result["memory"],
                              result["outbox"])
    return "\n".join([
        "",
        f"broadcast benchmark ({result['started']})",
        f"  command        : {result['command']}",
        f"  setup          : {result['setup']['nodes']} nodes behind HAProxy ({result['setup']['link']} link, "
        f"{result['setup']['frames_per_second_per_node']} frames/s each), "
        f"{result['sockets']['connected']} sockets {result['sockets']['by_node']}, "
        f"{result['load']['holds_per_second']} holds/s for {result['load']['seconds']} s",
        f"  latency        : p50 {lat['p50']:.0f} ms, p90 {lat['p90']:.0f} ms, p99 {lat['p99']:.0f} ms, "
        f"max {lat['max']:.0f} ms  ({lat['samples']} frames, commit -> receipt)",
        f"  delivered      : {dl['frames_per_second']:.0f} frames/s, {dl['changes_per_second']:.0f} changes/s",
        f"  every socket   : received at least {dl['changes_per_socket_min']} changes of the "
        f"{dl['outbox_changes_per_socket']} in the outbox (fewer only if a tick coalesced two versions of a seat)",
        f"  missed         : {miss['missed_seat_states']} seat states on {miss['sockets_not_converged']} sockets; "
        f"{miss['sockets_closed_during_run']} sockets closed {miss['close_codes']}, {miss['resyncs']} resyncs",
        f"  memory         : {mem['kib_per_socket']} KiB RSS per idle socket (the slope after a warm-up wave; "
        f"{mem['kib_per_socket_all_in']} KiB all-in, one-time costs included)",
        f"  outbox         : OUTBOX_PUBLISH={result['setup']['outbox_publish']}, {ob['events']} events, commit -> "
        f"{PUBLISHED_AT[result['setup']['outbox_publish']]} p50 {ob['commit_to_published_at_ms']['p50']} ms, "
        f"p99 {ob['commit_to_published_at_ms']['p99']} ms",
        f"  node write     : commit -> the node's write p50 {result['commit_to_node_write']['p50']}, "
        f"p99 {result['commit_to_node_write']['p99']} (node histograms, per change batch)\n"
        f"  node consumers : {result.get('node_consumers') or 'no restart, no hole'}",
        f"  hold failures  : {result['load']['failed'] or 'none'}",
        f"  machine        : {result['machine']['cpus']} cores; speed probe {result['machine']['speed_probe_s']} s "
        "(5 million Python additions, best of 3: lower is faster)",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_broadcast", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0, help="holds per second (each released later)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--hold-seconds", type=float, default=0.5, help="how long each hold lives before release")
    parser.add_argument("--clients", type=int, default=2, help="client processes sharing the sockets")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--tick-ms", type=int, default=None,
                        help="the nodes' coalescing tick (WS_BROADCAST_TICK_MS; default: the nodes' default)")
    parser.add_argument("--http-connections", type=int, default=64)
    parser.add_argument("--publish", choices=("relay", "direct", "both"), default="relay",
                        help="OUTBOX_PUBLISH of the nodes; both: one run of each, on the same services, and the ratio")
    parser.add_argument("--link", choices=("unix", "tcp"), default="unix",
                        help="how HAProxy reaches the nodes (LocalCluster's link; default: Unix sockets)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the state folder (node and HAProxy logs, INFO level) and print where it is")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON result file (default: reports/bench_broadcast-<time>.json)")
    args = parser.parse_args(argv)

    # the launcher only (processes and ports); the app itself is reached through the wire contract,
    # and PostgreSQL is read only for the outbox figures
    from server.cluster import LOAD_TEST_LIMITS, LocalCluster  # noqa: PLC0415
    from server.embedded import EmbeddedStack  # noqa: PLC0415

    probe = speed_probe()  # before anything starts: the machine's speed in this spell
    state = Path(tempfile.mkdtemp(prefix="bench-broadcast-"))
    stack = EmbeddedStack(state / "stack")
    try:
        urls = stack.start()
        # each node migrates on start (`serve`), under an advisory lock
        admin_token = secrets.token_urlsafe(16)
        env = {**urls, "ADMIN_TOKEN": admin_token, "HOLD_TTL_SECONDS": "30",
               "LOG_LEVEL": "INFO" if args.keep else "WARNING",
               **LOAD_TEST_LIMITS}
        if args.tick_ms is not None:
            env["WS_BROADCAST_TICK_MS"] = str(args.tick_ms)
        results: dict[str, dict[str, Any]] = {}
        for publish in ("relay", "direct") if args.publish == "both" else (args.publish,):
            progress(f"starting {args.nodes} nodes behind HAProxy (OUTBOX_PUBLISH={publish})")
            with LocalCluster(args.nodes, env={**env, "OUTBOX_PUBLISH": publish},
                              state_dir=state / f"cluster-{publish}", link=args.link) as cluster:
                results[publish] = asyncio.run(bench(args, cluster, urls["DATABASE_URL"], admin_token, publish))
    finally:
        stack.stop()
        if args.keep:
            progress(f"state kept in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)
    for result in results.values():
        result["machine"]["speed_probe_s"] = probe
        print(report(result), flush=True)
    document: dict[str, Any] = next(iter(results.values()))
    if len(results) == 2:
        document = {"runs": results, "durability": durability(results)}
        print(durability_report(document["durability"]), flush=True)
    out = args.out or Path("reports") / f"bench_broadcast-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"  result file    : {out}", flush=True)
    return 1 if any(r["missed"]["missed_seat_states"] or r["missed"]["sockets_not_converged"]
                    for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
