"""asyncpg pool creation and the plain-SQL migration runner.

Migrations are the files of `migrations/`, applied in name order, each in its own transaction, and recorded
by file name and SHA-256 of its text in `schema_migrations`. `001_baseline.sql` is the whole schema; after the
first release it never changes, and every later change is a new file appended after it. A database whose
recorded text of a file differs from the file (or was recorded before checksums) is refused: its functions are
not the ones this code calls.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import asyncpg

from storage.faults import PoolExhausted

log = logging.getLogger("boxoffice.storage")

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x626F78  # advisory lock id: several nodes may start at once


class MigrationHistoryMismatch(RuntimeError):
    """The database's recorded migrations do not start with this code's baseline."""


class MigrationChecksumMismatch(MigrationHistoryMismatch):
    """A migration the database recorded as applied had another text than the file of that name here."""


REMEDY = ("it was made by an earlier, unreleased text of the schema: remove the state folder (.boxoffice/, or "
          ".boxoffice/rush/ for a rush) to start the embedded services afresh, or drop and recreate the database; "
          "a released database never meets this, since released files are never edited, only appended to")


async def _init_connection(con: asyncpg.Connection) -> None:
    await con.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(con: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to undo. Pooled connections never LISTEN, SET or take session advisory locks,
    so asyncpg's default reset (one more round trip per request) is skipped; open transactions are still
    rolled back by asyncpg itself before this runs."""


class BoundedPool(asyncpg.Pool):
    """A pool whose every `acquire()` waits at most `acquire_timeout` seconds (asyncpg's default is forever),
    then raises PoolExhausted (503 database_unavailable): a node whose connections are all busy says so
    instead of piling up requests that wait without end."""

    acquire_timeout: float = 5.0

    async def _acquire(self, timeout: float | None) -> asyncpg.Connection:  # noqa: ASYNC109 - asyncpg's signature
        try:
            return await super()._acquire(self.acquire_timeout if timeout is None else timeout)  # type: ignore[misc]
        except TimeoutError:
            raise PoolExhausted() from None


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 20,
                      acquire_timeout: float = 5.0) -> asyncpg.Pool:
    pool = BoundedPool(
        dsn, min_size=min_size, max_size=max_size, max_queries=50_000, init=_init_connection,
        command_timeout=10, max_inactive_connection_lifetime=60, reset=_keep_session, loop=None,
        connection_class=asyncpg.Connection, record_class=asyncpg.Record,
    )
    pool.acquire_timeout = acquire_timeout
    return await pool


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS.glob("*.sql"))


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_recorded(recorded: dict[str, str | None], files: list[Path]) -> None:
    """Refuse a database whose history is not a prefix of these files' (see MigrationHistoryMismatch)."""
    if recorded and files and files[0].name not in recorded:
        raise MigrationHistoryMismatch(
            f"this database records migrations {sorted(recorded)} but not the baseline {files[0].name}: it was made "
            "by an older layout of the migrations; drop it (or the local state folder) and start again")
    for path in files:
        if path.name in recorded and recorded[path.name] != checksum(path):
            how = "before checksums were recorded" if recorded[path.name] is None else "with another text"
            raise MigrationChecksumMismatch(
                f"this database applied migration {path.name} {how} than storage/migrations/{path.name}: {REMEDY}")


async def migrate(dsn: str) -> list[str]:
    """Apply every migration not yet recorded, in name order; return the ones applied."""
    con = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await con.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        await con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now(), checksum text)"
        )
        # a database recorded before checksums gets the column, NULL in its rows: check_recorded refuses those
        await con.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
        done = {r["version"]: r["checksum"] for r in await con.fetch("SELECT version, checksum FROM schema_migrations")}
        files = migration_files()
        check_recorded(done, files)
        for path in files:
            if path.name in done:
                continue
            async with con.transaction():
                await con.execute(path.read_text())
                await con.execute("INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                                  path.name, checksum(path))
            applied.append(path.name)
            log.info("applied migration %s", path.name)
    finally:
        await con.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        await con.close()
    return applied
