"""Shared fixtures: the real embedded stack (or the URLs given), migrated once; a node per test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from core.settings import Settings
from server.app import create_app
from server.embedded import EmbeddedStack
from storage import db

pytest_plugins = ["tests.cluster_support", "tests.skips"]

ADMIN_TOKEN = "test-admin-token"
# Every test is one address (127.0.0.1) making many users and holds: the tests set their limits explicitly,
# off here, and on in the tests of the limits (tests/test_security_limits.py, tests/test_ratelimit.py).
NO_LIMITS: dict[str, Any] = {"rate_limit_per_second": 0.0, "rate_limit_anon_per_second": 0.0,
                             "max_seats_per_address": 0, "ws_max_sockets_per_address": 0}
OUTPUT = Path(__file__).resolve().parent.parent / "test-output"


@pytest.fixture(scope="session")
def stack() -> Iterator[EmbeddedStack]:
    """Real PostgreSQL, Redis and Kafka for the whole run (embedded unless the URLs are set).

    The state lives in its own temporary folder, not pytest's tmp_path: pytest deletes all but its last
    three tmp folders when a session starts, which would pull the data folder from under a running
    server whenever two pytest sessions overlap on one machine."""
    env = {k: os.environ.get(k, "") for k in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    state = Path(tempfile.mkdtemp(prefix="boxoffice-test-stack-"))
    stack = EmbeddedStack(state, env=env)
    try:
        urls = stack.start()
        stack.urls = urls  # type: ignore[attr-defined]
        asyncio.run(db.migrate(urls["DATABASE_URL"]))
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def base_settings(stack: EmbeddedStack) -> Settings:
    urls = stack.urls  # type: ignore[attr-defined]
    return Settings.from_env(
        env={}, database_url=urls["DATABASE_URL"], redis_url=urls["REDIS_URL"],
        kafka_bootstrap_servers=urls["KAFKA_BOOTSTRAP_SERVERS"], admin_token=ADMIN_TOKEN,
        admin_token_generated=False, node_id="test-node", log_format="console", **NO_LIMITS,
    )


@contextlib.asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[TestServer]:
    """A node on a real TCP port of 127.0.0.1, for clients that pick their own source address."""
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return base_settings


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def pg(base_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    con = await asyncpg.connect(base_settings.database_url)
    yield con
    await con.close()


@pytest.fixture
async def empty_database(base_settings: Settings) -> AsyncIterator[str]:
    """A database of its own on the test server, so the first migrate starts from nothing."""
    name = f"empty_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(base_settings.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield base_settings.database_url.rsplit("/", 1)[0] + f"/{name}"
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def redis_client(base_settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(base_settings.redis_url)
    yield client
    await client.aclose()


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_user(client: TestClient, name: str = "Ana") -> dict[str, Any]:
    resp = await client.post("/users", json={"name": name, "email": f"{uuid.uuid4().hex[:12]}@example.com"})
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def make_room(client: TestClient, rows: int = 2, per_row: int = 8) -> dict[str, Any]:
    resp = await client.post("/rooms", json={"name": f"Room {uuid.uuid4().hex[:6]}", "rows": rows,
                                             "seatsPerRow": per_row}, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def make_session(client: TestClient, rows: int = 2, per_row: int = 8, price: float = 12.5,
                       starts_in: timedelta = timedelta(days=1)) -> dict[str, Any]:
    room = await make_room(client, rows, per_row)
    start = datetime.now(UTC) + starts_in
    resp = await client.post("/sessions", json={
        "movieTitle": "Dune", "startShowTime": start.isoformat(),
        "endShowTime": (start + timedelta(hours=2)).isoformat(), "roomId": room["id"], "ticketPrice": price,
    }, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def seat_ids(client: TestClient, session_id: str) -> list[str]:
    resp = await client.get(f"/sessions/{session_id}/seats")
    assert resp.status == 200
    return [s["id"] for s in (await resp.json())["seats"]]


async def table_counts(con: asyncpg.Connection) -> dict[str, int]:
    """Row counts of every table: 'nothing changed' is asserted by comparing two of these.

    Expiry events are left out of the outbox count: the expiry sweepers of every app and cluster node on
    the test database write them whenever an earlier test's hold comes due, which no request here causes.
    """
    tables = ["users", "rooms", "seats", "sessions", "session_seats", "reservations", "reservation_seats",
              "sales", "sale_seats", "idempotency_keys"]
    counts = {t: await con.fetchval(f"SELECT count(*) FROM {t}") for t in tables}
    counts["outbox"] = await con.fetchval("SELECT count(*) FROM outbox WHERE event_type <> 'reservation.expired'")
    return counts


def with_settings(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **changes)


async def assert_invariants(con: asyncpg.Connection, session_ids: list[str] | None = None,
                            timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Every booking invariant holds in PostgreSQL (waiting briefly for the relay and the sweeper)."""
    from loadtests.invariants import broken, wait_for_invariants

    report = await wait_for_invariants(con, session_ids, timeout=timeout)
    if os.environ.get("BOXOFFICE_SKIP_OUTBOX_CHECK"):  # only while developing without a relay
        report.pop("outbox_published", None)
    assert not broken(report), broken(report)
