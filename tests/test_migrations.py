"""Schema migrations: applied in order, recorded, idempotent, safe when several nodes migrate at once."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from storage import db

ROOT = Path(__file__).resolve().parent.parent


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


def copy_of_migrations(target: Path, edit_baseline: str = "") -> Path:
    """The project's migration files copied to `target`, the baseline with `edit_baseline` appended."""
    target.mkdir()
    for path in db.migration_files():
        text = path.read_text()
        (target / path.name).write_text(text + edit_baseline if path.name.startswith("001_") else text)
    return target


async def test_a_database_migrated_with_another_baseline_text_is_refused(
        empty_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline edited after a database was migrated with it (as happens before the first release) would leave
    the old functions in place and answer every hold with a 500: migrate refuses such a database instead, saying
    what to do, and changes nothing in it."""
    older = copy_of_migrations(tmp_path / "older", edit_baseline="\nCREATE TABLE older_only (id int);\n")
    monkeypatch.setattr(db, "MIGRATIONS", older)
    await db.migrate(empty_database)
    monkeypatch.undo()

    with pytest.raises(db.MigrationChecksumMismatch) as refused:
        await db.migrate(empty_database)

    message = str(refused.value)
    assert "\n" not in message and "001_baseline.sql" in message
    assert "remove the state folder" in message and "drop" in message
    con = await asyncpg.connect(empty_database)
    try:
        assert await con.fetchval("SELECT to_regclass('older_only')") is not None  # untouched
        assert await con.fetchval("SELECT count(*) FROM schema_migrations") == len(db.migration_files())
        assert await con.fetchval("SELECT pg_try_advisory_lock($1)", db.MIGRATION_LOCK)  # the lock was let go
    finally:
        await con.close()
    # the same files migrate it again without complaint once it is the same text
    monkeypatch.setattr(db, "MIGRATIONS", older)
    assert await db.migrate(empty_database) == []


async def test_a_database_recorded_before_checksums_is_refused(empty_database: str) -> None:
    """A database migrated before `schema_migrations` had its checksum column cannot show which text it ran: it is
    refused with the same clear message (no such database was ever released)."""
    con = await asyncpg.connect(empty_database)
    try:
        await con.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                          " applied_at timestamptz NOT NULL DEFAULT now())")
        await con.execute("INSERT INTO schema_migrations (version) VALUES ($1)", db.migration_files()[0].name)
        with pytest.raises(db.MigrationChecksumMismatch, match="remove the state folder"):
            await db.migrate(empty_database)
        assert await con.fetchval("SELECT to_regclass('users')") is None  # nothing was applied
    finally:
        await con.close()


def test_the_command_line_says_so_in_one_line(empty_database: str, tmp_path: Path) -> None:
    """`boxoffice migrate` (as `serve` and `dev`, which migrate first) stops with the one line and status 2,
    not a traceback and not a node that answers holds with a 500."""
    older = copy_of_migrations(tmp_path / "older", edit_baseline="\n-- an older text\n")
    env = {**os.environ, "DATABASE_URL": empty_database, "REDIS_URL": "redis://127.0.0.1:1",
           "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    script = ("import asyncio, pathlib, sys; from storage import db; db.MIGRATIONS = pathlib.Path(sys.argv[1]);"
              " asyncio.run(db.migrate(sys.argv[2]))")
    subprocess.run([sys.executable, "-c", script, str(older), empty_database], cwd=ROOT, env=env, check=True,
                   timeout=60)

    done = subprocess.run([sys.executable, "-m", "server.cli", "migrate"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("boxoffice: ") and "001_baseline.sql" in lines[-1], done.stderr
    assert "Traceback" not in done.stderr


def test_the_baseline_defines_each_object_once() -> None:
    """Until the first release every change is folded into the baseline (storage/README.md): one CREATE of each
    table, index, trigger and function, and nothing dropped, replaced or altered after it is made."""
    text = (db.MIGRATIONS / "001_baseline.sql").read_text()
    code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    names = re.findall(r"^CREATE (?:UNIQUE )?(TABLE|INDEX|FUNCTION|TRIGGER) (\w+)", code, re.M)
    assert len(names) > 40
    assert len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)
    assert not re.search(r"\b(DROP|ALTER TABLE|OR REPLACE)\b", code)
