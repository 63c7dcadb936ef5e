"""Benchmark: a best-available hold (`{sessionId, quantity}`) against a hold of known seats, on one node,
interleaved run by run (the machine is shared and noisy: compare the ratio of the medians), not a test.

Both kinds hold one seat per request, 64 clients by default, on demo-sized sessions (10 rows x 16 seats by
default; `--rows`/`--per-row` for bigger rooms): known seats are spread over the same sessions.

Run:  .venv/bin/python -m loadtests.bench_best [--clients 64] [--holds 1600] [--repeat 3] [--rows 10 --per-row 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from loadtests.bench_holds import (
    USER_HOLDS,
    Node,
    make_session,
    make_users,
    percentile,
    post_holds,
    write_summary,
)
from server.embedded import EmbeddedStack

ROWS, PER_ROW = 10, 16


async def holds(url: str, clients: int, count: int, best: bool, rows: int = ROWS,
                per_row: int = PER_ROW) -> dict[str, Any]:
    per_session = rows * per_row
    async with aiohttp.ClientSession() as http:
        count_sessions = (count + per_session - 1) // per_session
        sessions = [await make_session(http, url, rows, per_row) for _ in range(count_sessions)]
        tokens = await make_users(http, url, max(clients, count // USER_HOLDS))
    bodies: list[dict[str, Any]] = []
    for i in range(count):  # round robin over the sessions: each gets at most its number of seats
        session_id, seats = sessions[i % len(sessions)]
        bodies.append({"sessionId": session_id, "quantity": 1} if best
                      else {"sessionId": session_id, "sessionSeatIds": [seats[i // len(sessions)]]})
    latencies, statuses, elapsed = await post_holds(url, clients, tokens, bodies)
    return {"holds_per_second": round(len(latencies) / elapsed), "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2), "statuses": statuses}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--holds", type=int, default=1600)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--per-row", type=int, default=PER_ROW)
    parser.add_argument("--out", default="loadtests/results/bench_best.json")
    args = parser.parse_args()
    command = "python -m loadtests.bench_best " + " ".join(sys.argv[1:])
    runs: dict[str, list[dict[str, Any]]] = {"known": [], "best": []}
    with tempfile.TemporaryDirectory(prefix="bench-best-") as state:
        stack = EmbeddedStack(Path(state), env={k: os.environ.get(k, "") for k in
                                                ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")})
        urls = stack.start()
        try:
            async with Node(urls) as node:
                room = {"rows": args.rows, "per_row": args.per_row}
                await holds(node.url, args.clients, 320, best=False, **room)  # warm-up, not counted
                await holds(node.url, args.clients, 320, best=True, **room)
                for i in range(args.repeat):
                    for kind in ("known", "best") if i % 2 == 0 else ("best", "known"):
                        runs[kind].append(await holds(node.url, args.clients, args.holds, best=kind == "best",
                                                      **room))
                    print(f"run {i + 1}/{args.repeat}: " + json.dumps({k: v[-1] for k, v in runs.items()}), flush=True)
        finally:
            stack.stop()
    summary: dict[str, Any] = {"command": command, "machine": f"{os.cpu_count()} cores"}
    for kind, results in runs.items():
        summary[kind] = {k: statistics.median(r[k] for r in results) for k in ("holds_per_second", "p50_ms", "p99_ms")}
    summary["best_vs_known"] = {
        "p50_ratio": round(summary["best"]["p50_ms"] / summary["known"]["p50_ms"], 2),
        "throughput_ratio": round(summary["known"]["holds_per_second"] / summary["best"]["holds_per_second"], 2),
    }
    write_summary(args.out, summary, runs, f"medians of {args.repeat} runs each, interleaved")


if __name__ == "__main__":
    uvloop.run(main())
