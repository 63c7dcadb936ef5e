"""Benchmark of the hold path on one node (embedded stack), not a test.

  (a) uncontended holds/s and p50/p99 latency with 64 concurrent clients;
  (b) a rush of 2,000 clients on one 160-seat session: time to sell out, hold answers/s, p99, double sales;
  (c) the same rush with the Redis gate off (database-only path), measured in the same run -> the ratio.

Run:  .venv/bin/python -m loadtests.bench_holds [--clients 64] [--holds 5000] [--rush-clients 2000] [--repeat 3]
It starts its own embedded services and node processes, prints the figures and the command, and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import uvloop

from loadtests.invariants import broken, wait_for_invariants
from loadtests.lean_http import LeanPool
from loadtests.metrics import speed_probe
from server.cluster import LOAD_TEST_LIMITS
from server.embedded import EmbeddedStack, free_port

ADMIN = "bench-admin-token"
USER_HOLDS = 5  # holds per buyer in (a): each stays well within MAX_SEATS_PER_USER (20)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class CpuMeter:
    """CPU seconds used by each part of the system between `start()` and `per(answers)`: the node, PostgreSQL
    (postmaster and every backend), Redis and this load generator (all on the same cores)."""

    def __init__(self, stack: EmbeddedStack, node: Node) -> None:
        self.roots = {"node": node.proc.pid if node.proc else None, "postgres": _pid(stack, "postgres"),
                      "redis": _pid(stack, "redis"), "loadgen": os.getpid()}
        self.before: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for part, pid in self.roots.items():
            total = 0.0
            if pid is not None:
                try:
                    root = psutil.Process(pid)
                    procs = [root] + (root.children(recursive=True) if part == "postgres" else [])
                    for proc in procs:
                        times = proc.cpu_times()
                        total += times.user + times.system
                except psutil.Error:
                    pass
            used[part] = total
        return used

    def start(self) -> None:
        self.before = self._now()

    def per(self, answers: int) -> dict[str, float]:
        """Milliseconds of CPU per answer, by part (backends that ended meanwhile are not counted)."""
        after = self._now()
        return {part: round((after[part] - self.before[part]) * 1000 / max(answers, 1), 3) for part in after}


def _pid(stack: EmbeddedStack, name: str) -> int | None:
    service = stack.services.get(name)
    proc = getattr(service, "proc", None)
    return proc.pid if proc is not None else None


class Node:
    """One boxoffice node as a real process (what production runs)."""

    def __init__(self, urls: dict[str, str], **env: str) -> None:
        self.port = free_port()
        self.env = {**os.environ, **urls, "ADMIN_TOKEN": ADMIN, "LOG_LEVEL": "WARNING", "NODE_ID": "bench",
                    "DB_POOL_MAX": "30", **LOAD_TEST_LIMITS, **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Node:
        self.proc = subprocess.Popen(  # noqa: S603, ASYNC220 - a child process started once
            [sys.executable, "-m", "server.cli", "serve", "--port", str(self.port)], env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"{self.url}/ready") as resp:
                        if resp.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("node did not become ready")

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def make_session(http: aiohttp.ClientSession, url: str, rows: int, per_row: int) -> tuple[str, list[str]]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with http.post(f"{url}/rooms", json={"name": f"bench {uuid.uuid4().hex[:6]}", "rows": rows,
                                               "seatsPerRow": per_row}, headers=headers) as resp:
        room = await resp.json()
    start = datetime.now(UTC) + timedelta(days=1)
    async with http.post(f"{url}/sessions", json={
        "movieTitle": "Bench", "startShowTime": start.isoformat(),
        "endShowTime": (start + timedelta(hours=2)).isoformat(), "roomId": room["id"], "ticketPrice": 10,
    }, headers=headers) as resp:
        session = await resp.json()
    async with http.get(f"{url}/sessions/{session['id']}/seats") as resp:
        seats = [s["id"] for s in (await resp.json())["seats"]]
    return session["id"], seats


async def make_users(http: aiohttp.ClientSession, url: str, n: int) -> list[str]:
    async def one(i: int) -> str:
        async with http.post(f"{url}/users", json={"name": f"b{i}", "email": f"{uuid.uuid4().hex}@bench.io"}) as r:
            return str((await r.json())["token"])
    tokens: list[str] = []
    for start in range(0, n, 100):
        tokens += await asyncio.gather(*(one(i) for i in range(start, min(n, start + 100))))
    return tokens


async def post_holds(url: str, clients: int, tokens: list[str], bodies: list[dict[str, Any]]
                     ) -> tuple[list[float], dict[int, int], float]:
    """POST every body to /reservations, one at a time per client over `clients` keep-alive connections, the
    tokens round robin: each answer's latency (ms), the count of each status, and the seconds it all took."""
    todo = list(reversed(bodies))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    pool = LeanPool(url, clients)

    async def client(mine: list[str]) -> None:
        headers = [{"Authorization": f"Bearer {token}"} for token in mine]
        async with pool.connection() as conn:
            while todo:
                body = todo.pop()
                t0 = time.perf_counter()
                status, _ = await conn.request("POST", "/reservations", body, headers[len(todo) % len(headers)])
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client(tokens[i::clients]) for i in range(clients)))
    finally:
        pool.close()
    return latencies, statuses, time.perf_counter() - started


async def uncontended(url: str, clients: int, holds: int, meter: CpuMeter | None = None) -> dict[str, Any]:
    """(a) every client holds its own seats one at a time: the whole path, no contention."""
    async with aiohttp.ClientSession() as http:
        per_row = 100
        session_id, seats = await make_session(http, url, rows=(holds + per_row - 1) // per_row, per_row=per_row)
        # buyers as in real life: a handful of seats each, within the default per-user quota
        tokens = await make_users(http, url, max(clients, holds // USER_HOLDS))
    bodies = [{"sessionId": session_id, "sessionSeatIds": [seat]} for seat in seats[:holds]]
    if meter:
        meter.start()
    latencies, statuses, elapsed = await post_holds(url, clients, tokens, bodies)
    return {"holds": len(latencies), "seconds": round(elapsed, 2), "holds_per_second": round(len(latencies) / elapsed),
            "p50_ms": round(percentile(latencies, 50), 2), "p99_ms": round(percentile(latencies, 99), 2),
            "statuses": statuses, "session_id": session_id,
            "cpu_ms_per_hold": meter.per(len(latencies)) if meter else None}


async def rush(url: str, dsn: str, clients: int, meter: CpuMeter | None = None) -> dict[str, Any]:
    """(b)/(c) `clients` buyers race for one 160-seat session until it is sold out; each buyer has its own
    keep-alive connection, as each browser does, so latencies are the server's, not a client pool's queue."""
    async with aiohttp.ClientSession() as http:
        session_id, seats = await make_session(http, url, rows=10, per_row=16)
        tokens = await make_users(http, url, clients)
    pool = LeanPool(url, clients)
    await pool.open(clients)
    try:
        best = sorted(seats, key=lambda s: abs(seats.index(s) // 16 - 5) * 3 + abs(seats.index(s) % 16 - 7.5))
        sold: set[str] = set()
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        errors: dict[str, int] = {}  # "<status> <code>" of every answer other than 201 and 409
        done = asyncio.Event()
        rng = random.Random(1)

        async def buyer(token: str) -> None:
            headers = {"Authorization": f"Bearer {token}"}
            believed = list(best)
            while not done.is_set():
                believed = [s for s in believed if s not in sold]
                if not believed:
                    return
                want = rng.randint(1, 4)
                pick = believed[:want] if rng.random() < 0.7 else rng.sample(believed, min(want, len(believed)))
                t0 = time.perf_counter()
                try:
                    status, body = await pool.request("POST", "/reservations",
                                                      {"sessionId": session_id, "sessionSeatIds": pick}, headers)
                except ConnectionError:  # counted as status 0; the buyer tries again on a new connection
                    status, body = 0, None
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 201:
                    confirmed = 0
                    for _ in range(3):  # the same key: a retried confirm buys once
                        try:
                            confirmed, _ = await pool.request("POST", f"/reservations/{body['id']}/confirm",
                                                              None, headers | {"Idempotency-Key": body["id"]})
                            break
                        except ConnectionError:
                            await asyncio.sleep(0.05)
                    if confirmed == 201:
                        sold.update(pick)
                    if len(sold) >= len(seats):
                        done.set()
                elif status == 409:
                    taken = set(body["details"].get("conflicts", []))
                    believed = [s for s in believed if s not in taken]
                else:
                    error = f"{status} {body.get('code') if isinstance(body, dict) else None}"
                    errors[error] = errors.get(error, 0) + 1
                    await asyncio.sleep(0.05)

        if meter:
            meter.start()
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(buyer(t) for t in tokens)), 300)
        elapsed = time.perf_counter() - started
        cpu = meter.per(len(latencies)) if meter else None
    finally:
        pool.close()
    con = await asyncpg.connect(dsn)
    try:
        sold_db = await con.fetchval("SELECT count(*) FROM session_seats WHERE session_id = $1 AND status = 'SOLD'",
                                     uuid.UUID(session_id))
        doubles = await con.fetchval(
            "SELECT count(*) FROM (SELECT session_seat_id FROM sale_seats WHERE session_id = $1"
            " GROUP BY 1 HAVING count(*) > 1) x", uuid.UUID(session_id))
        report = await wait_for_invariants(con, [session_id], timeout=20)
    finally:
        await con.close()
    return {"clients": clients, "seconds_to_sell_out": round(elapsed, 2), "hold_requests": len(latencies),
            "hold_answers_per_second": round(len(latencies) / elapsed), "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2), "statuses": statuses, "errors": errors, "sold": sold_db,
            "double_sales": doubles, "invariants_ok": not broken(report), "broken": broken(report),
            "cpu_ms_per_answer": cpu}


def write_summary(out: str, summary: dict[str, Any], runs: dict[str, list[dict[str, Any]]], how: str) -> None:
    """Write the summary with every run to `out` (JSON) and print it without the runs."""
    printed = dict(summary)
    summary["runs"] = runs
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(summary, indent=2))
    print(json.dumps(printed, indent=2))
    print(f"\ncommand: {summary['command']}\n{how}; full results in {out}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--holds", type=int, default=5000)  # one session: a room holds 5,000 seats at most
    parser.add_argument("--rush-clients", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default="loadtests/results/bench_holds.json")
    args = parser.parse_args()
    command = "python -m loadtests.bench_holds " + " ".join(sys.argv[1:])
    probe = speed_probe()  # before anything starts: how fast the machine is right now

    with tempfile.TemporaryDirectory(prefix="bench-holds-") as state:
        stack = EmbeddedStack(Path(state), env={k: os.environ.get(k, "") for k in
                                                ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")})
        urls = stack.start()
        try:  # each node migrates when it starts (`serve`), under an advisory lock
            runs: dict[str, list[dict[str, Any]]] = {"uncontended": [], "rush_gate": [], "rush_db_only": []}
            for i in range(args.repeat):
                async with Node(urls) as node:
                    await uncontended(node.url, args.clients, 500)  # warm-up, not counted
                    meter = CpuMeter(stack, node)
                    runs["uncontended"].append(await uncontended(node.url, args.clients, args.holds, meter))
                    runs["rush_gate"].append(await rush(node.url, urls["DATABASE_URL"], args.rush_clients, meter))
                async with Node(urls, REDIS_GATE="false") as node:
                    await uncontended(node.url, args.clients, 200)
                    runs["rush_db_only"].append(await rush(node.url, urls["DATABASE_URL"], args.rush_clients,
                                                           CpuMeter(stack, node)))
                print(f"run {i + 1}/{args.repeat}: " + json.dumps({k: v[-1] for k, v in runs.items()}), flush=True)
        finally:
            stack.stop()

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind])

    summary: dict[str, Any] = {
        "command": command,
        "machine": f"{os.cpu_count()} cores",
        "speed_probe_s": probe,
        "uncontended": {k: med("uncontended", k) for k in ("holds_per_second", "p50_ms", "p99_ms")},
        "rush_gate": {k: med("rush_gate", k) for k in ("seconds_to_sell_out", "hold_answers_per_second",
                                                        "p50_ms", "p99_ms", "double_sales")},
        "rush_db_only": {k: med("rush_db_only", k) for k in ("seconds_to_sell_out", "hold_answers_per_second",
                                                             "p50_ms", "p99_ms", "double_sales")},
    }
    summary["gate_vs_db_only_ratio"] = {
        "hold_answers_per_second": round(summary["rush_gate"]["hold_answers_per_second"]
                                         / summary["rush_db_only"]["hold_answers_per_second"], 2),
        "ratios_per_run": [round(g["hold_answers_per_second"] / d["hold_answers_per_second"], 2)
                           for g, d in zip(runs["rush_gate"], runs["rush_db_only"], strict=True)],
    }
    def med_cpu(kind: str, key: str) -> dict[str, float]:
        return {part: round(statistics.median(r[key][part] for r in runs[kind]), 3) for part in runs[kind][0][key]}

    summary["cpu_ms_per_answer"] = {"uncontended": med_cpu("uncontended", "cpu_ms_per_hold"),
                                    "rush_gate": med_cpu("rush_gate", "cpu_ms_per_answer"),
                                    "rush_db_only": med_cpu("rush_db_only", "cpu_ms_per_answer")}
    gate_pg = summary["cpu_ms_per_answer"]["rush_gate"]["postgres"]
    summary["gate_vs_db_only_ratio"]["postgres_cpu_per_answer"] = (
        round(summary["cpu_ms_per_answer"]["rush_db_only"]["postgres"] / gate_pg, 2) if gate_pg else None)
    summary["all_invariants_ok"] = all(r["invariants_ok"] for k in ("rush_gate", "rush_db_only") for r in runs[k])
    write_summary(args.out, summary, runs, f"medians of {args.repeat} runs")


if __name__ == "__main__":
    uvloop.run(main())
