"""The figures read beside the sockets: the outbox table (raw SQL), the nodes' /metrics, and RSS from /proc."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from loadtests.bench_broadcast.watchers import HIST_MS


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
