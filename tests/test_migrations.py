"""Schema migrations: applied in order, recorded, idempotent, safe when several nodes migrate at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from core.settings import Settings
from storage import db


@pytest.fixture
async def empty_database(base_settings: Settings) -> AsyncIterator[str]:
    """A database of its own on the test server, so the first migrate starts from nothing."""
    name = f"migrations_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(base_settings.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield base_settings.database_url.rsplit("/", 1)[0] + f"/{name}"
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def recorded(dsn: str) -> list[str]:
    con = await asyncpg.connect(dsn)
    try:
        return [r["version"] for r in await con.fetch("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        await con.close()


async def test_migrate_applies_every_file_once_and_records_it(empty_database: str) -> None:
    files = [p.name for p in db.migration_files()]
    assert files == sorted(files) and files[0].startswith("001_")

    first = await db.migrate(empty_database)
    second = await db.migrate(empty_database)

    assert first == files
    assert second == []  # the second run applies nothing
    assert await recorded(empty_database) == files
    con = await asyncpg.connect(empty_database)
    try:
        tables = {r["tablename"] for r in await con.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    finally:
        await con.close()
    assert {"users", "rooms", "seats", "sessions", "session_seats", "reservations", "reservation_seats", "sales",
            "sale_seats", "idempotency_keys", "outbox", "schema_migrations"} <= tables


async def test_nodes_migrating_at_once_apply_each_file_once(empty_database: str) -> None:
    results = await asyncio.gather(*(db.migrate(empty_database) for _ in range(3)))

    applied = [name for result in results for name in result]
    assert sorted(applied) == [p.name for p in db.migration_files()]  # the advisory lock serialises them
    assert await recorded(empty_database) == [p.name for p in db.migration_files()]


async def test_a_failing_migration_is_rolled_back_and_not_recorded(
        empty_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "001_good.sql").write_text("CREATE TABLE good (id int PRIMARY KEY);")
    (tmp_path / "002_bad.sql").write_text("CREATE TABLE half_done (id int); SELECT no_such_function();")
    monkeypatch.setattr(db, "MIGRATIONS", tmp_path)

    with pytest.raises(asyncpg.UndefinedFunctionError):
        await db.migrate(empty_database)

    assert await recorded(empty_database) == ["001_good.sql"]
    con = await asyncpg.connect(empty_database)
    try:
        assert await con.fetchval("SELECT to_regclass('half_done')") is None  # nothing of 002 is left
        # the advisory lock was released: a fixed file applies on the next run
        (tmp_path / "002_bad.sql").write_text("CREATE TABLE half_done (id int);")
        assert await db.migrate(empty_database) == ["002_bad.sql"]
    finally:
        await con.close()


async def test_a_database_of_another_migration_history_is_refused(empty_database: str) -> None:
    """A database whose recorded migrations do not include the baseline (made by an older layout of the files)
    is refused with a clear error instead of failing half-way through the baseline."""
    con = await asyncpg.connect(empty_database)
    try:
        await con.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY, applied_at timestamptz)")
        await con.execute("INSERT INTO schema_migrations (version) VALUES ('001_schema.sql')")
        with pytest.raises(db.MigrationHistoryMismatch):
            await db.migrate(empty_database)
        assert await con.fetchval("SELECT to_regclass('users')") is None  # nothing was applied
    finally:
        await con.close()
