"""One benchmark run on a started cluster: the sockets in two waves, the load, convergence, and the result."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shlex
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import aiohttp

from loadtests.bench_broadcast.figures import node_figures, outbox_figures, percentile, rss_kib, wait_outbox_drained
from loadtests.bench_broadcast.load import create_fixture, generate_load
from loadtests.bench_broadcast.watchers import client_main
from server.cluster import LocalCluster

WARM_SOCKETS_PER_NODE = 50  # the first wave (see bench: memory per socket is measured after it)


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def bench(args: argparse.Namespace, cluster: LocalCluster, dsn: str, admin_token: str) -> dict[str, Any]:
    """One run on a started cluster: two waves of sockets, `args.rate` holds/s for `args.duration` s, the figures."""
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
                  "tick_ms": args.tick_ms, "link": "unix" if cluster.socket_dir else "tcp",
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
