"""Benchmark of the release paths the waiting list changed (not a test): cancels (`bx_release`) and the expiry
sweep (`bx_expire_due`), each against its baseline definition (001_baseline.sql, loaded beside it under
another name), interleaved, on sessions with nobody waiting: the cost every release now pays.
Since the migrations were folded into the baseline, it holds the current definitions: the figures of
docs/performance.md compared them with the definitions before the waiting list (001_baseline.sql before the fold,
in git history); run as is, both sides are the same function.

Run:  .venv/bin/python -m loadtests.bench_release [--holds 2000] [--workers 8] [--repeat 3]
It starts its own embedded PostgreSQL (and Redis/Kafka, unused), prints the figures and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from server.embedded import EmbeddedStack

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "storage" / "migrations" / "001_baseline.sql"  # read as text: the load tests import no server code


def baseline_function(name: str) -> str:
    """The baseline's definition of bx_<name>, renamed bx_<name>_base."""
    text = BASELINE.read_text()
    match = re.search(rf"CREATE FUNCTION bx_{name}\(.*?\n\$\$;\n", text, re.S)
    assert match is not None, name
    return match.group(0).replace(f"CREATE FUNCTION bx_{name}(", f"CREATE OR REPLACE FUNCTION bx_{name}_base(", 1)


async def a_session(pool: asyncpg.Pool, seats: int) -> tuple[uuid.UUID, list[uuid.UUID], uuid.UUID]:
    room, session, user = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    start = datetime.now(UTC) + timedelta(days=1)
    async with pool.acquire() as con, con.transaction():
        await con.execute("INSERT INTO users (id, name, email, token_hash) VALUES ($1, 'b', $2, $3)",
                          user, f"{user.hex}@bench", uuid.uuid4().bytes)
        await con.execute("INSERT INTO rooms (id, name, capacity) VALUES ($1, 'bench', $2)", room, seats)
        await con.execute("INSERT INTO seats (id, room_id, row_label, seat_number, position) SELECT gen_random_uuid(),"
                          " $1, 'R' || (g / 100), g % 100 + 1, g FROM generate_series(0, $2 - 1) g", room, seats)
        await con.execute("INSERT INTO sessions (id, movie_title, start_show_time, end_show_time, room_id,"
                          " ticket_price) VALUES ($1, 'bench', $2, $3, $4, 10)", session, start,
                          start + timedelta(hours=2), room)
        await con.execute("INSERT INTO session_seats (id, session_id, seat_id, position) SELECT gen_random_uuid(), $1,"
                          " s.id, s.position FROM seats s WHERE s.room_id = $2", session, room)
        ids = [r["id"] for r in await con.fetch("SELECT id FROM session_seats WHERE session_id = $1 ORDER BY position",
                                                 session)]
    return session, ids, user


async def hold_all(pool: asyncpg.Pool, session: uuid.UUID, seats: list[uuid.UUID], user: uuid.UUID,
                   ttl_ms: int) -> list[uuid.UUID]:
    reservations = [uuid.uuid4() for _ in seats]
    await pool.execute("SELECT count(*) FROM unnest($1::uuid[], $2::uuid[]) AS h (r, s),"
                       " LATERAL bx_hold(h.r, $3, $4, ARRAY[h.s], $5, 0, NULL)",
                       reservations, seats, user, session, ttl_ms)
    return reservations


async def cancels(pool: asyncpg.Pool, function: str, reservations: list[uuid.UUID], workers: int) -> float:
    queue = list(reservations)

    async def worker() -> None:
        while queue:
            await pool.fetchrow(f"SELECT * FROM {function}($1, NULL, false)", queue.pop())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return len(reservations) / (time.perf_counter() - started)


async def sweep(pool: asyncpg.Pool, function: str, count: int) -> float:
    started = time.perf_counter()
    done = 0
    while done < count:
        done += len([r for r in await pool.fetch(f"SELECT * FROM {function}(500)") if r["reservation_id"]])
    return count / (time.perf_counter() - started)


async def run(urls: dict[str, str], holds: int, workers: int, repeat: int) -> dict[str, list[float]]:
    dsn = urls["DATABASE_URL"]
    subprocess.run([sys.executable, "-m", "server.cli", "migrate"], cwd=ROOT, check=True,  # noqa: ASYNC221
                   env={**os.environ, **urls}, capture_output=True)
    pool = await asyncpg.create_pool(dsn, min_size=workers, max_size=workers)
    for name in ("release", "expire_due"):
        await pool.execute(baseline_function(name))
    figures: dict[str, list[float]] = {k: [] for k in ("cancel_base", "cancel_new", "expire_base", "expire_new")}
    for _ in range(repeat):
        for version in ("base", "new"):  # interleaved
            suffix = "_base" if version == "base" else ""
            session, seats, user = await a_session(pool, holds)
            held = await hold_all(pool, session, seats, user, 600_000)
            figures[f"cancel_{version}"].append(await cancels(pool, f"bx_release{suffix}", held, workers))
            session, seats, user = await a_session(pool, holds)
            await hold_all(pool, session, seats, user, 1)
            await asyncio.sleep(0.05)
            figures[f"expire_{version}"].append(await sweep(pool, f"bx_expire_due{suffix}", holds))
    await pool.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holds", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-release-") as state:
        stack = EmbeddedStack(Path(state), env={k: os.environ.get(k, "") for k in
                                                ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")})
        urls = stack.start()
        try:
            figures = asyncio.run(run(urls, args.holds, args.workers, args.repeat))
        finally:
            stack.stop()
    print("command:", " ".join([os.path.basename(sys.executable), "-m", "loadtests.bench_release", *sys.argv[1:]]))
    for key, values in figures.items():
        print(f"{key:12s} median {statistics.median(values):8.0f}/s  runs {[round(v) for v in values]}")
    for what in ("cancel", "expire"):
        ratio = statistics.median(figures[f"{what}_new"]) / statistics.median(figures[f"{what}_base"])
        print(f"{what}: new/base = {ratio:.2f}")


if __name__ == "__main__":
    main()
