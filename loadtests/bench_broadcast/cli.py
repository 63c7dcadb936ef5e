"""The broadcast benchmark's command line: options, the embedded services, one local cluster, the result file.

It reaches the system through the launcher (processes and ports) and the wire contract only; PostgreSQL
is read for the outbox figures alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import loadtests.bench_broadcast as package
from loadtests.bench_broadcast.bench import bench, progress
from loadtests.bench_broadcast.report import report
from loadtests.metrics import speed_probe
from server.cluster import LOAD_TEST_LIMITS, LocalCluster
from server.embedded import EmbeddedStack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_broadcast", description=package.__doc__.split("\n\n")[0])
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
    parser.add_argument("--link", choices=("unix", "tcp"), default="unix",
                        help="how HAProxy reaches the nodes (LocalCluster's link; default: Unix sockets)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the state folder (node and HAProxy logs, INFO level) and print where it is")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON result file (default: reports/bench_broadcast-<time>.json)")
    args = parser.parse_args(argv)

    probe = speed_probe()  # before anything starts: how fast the machine is right now
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
        progress(f"starting {args.nodes} nodes behind HAProxy")
        with LocalCluster(args.nodes, env=env, state_dir=state / "cluster", link=args.link) as cluster:
            result = asyncio.run(bench(args, cluster, urls["DATABASE_URL"], admin_token))
    finally:
        stack.stop()
        if args.keep:
            progress(f"state kept in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)
    result["machine"]["speed_probe_s"] = probe
    print(report(result), flush=True)
    out = args.out or Path("reports") / f"bench_broadcast-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  result file    : {out}", flush=True)
    return 1 if result["missed"]["missed_seat_states"] or result["missed"]["sockets_not_converged"] else 0

