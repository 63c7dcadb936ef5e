"""asyncpg pool creation and the plain-SQL migration runner.

Migrations are the files of `migrations/`, applied in name order, each in its own transaction, and recorded
by file name in `schema_migrations`. `001_baseline.sql` is the whole schema; after the first release it never
changes, and every later change is a new file appended after it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import asyncpg

log = logging.getLogger("boxoffice.storage")

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x626F78  # advisory lock id: several nodes may start at once


class MigrationHistoryMismatch(RuntimeError):
    """The database's recorded migrations do not start with this code's baseline."""


async def _init_connection(con: asyncpg.Connection) -> None:
    await con.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(con: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to undo. Pooled connections never LISTEN, SET or take session advisory locks,
    so asyncpg's default reset (one more round trip per request) is skipped; open transactions are still
    rolled back by asyncpg itself before this runs."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 20) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection,
        command_timeout=10, max_inactive_connection_lifetime=60, reset=_keep_session,
    )


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS.glob("*.sql"))


async def migrate(dsn: str) -> list[str]:
    """Apply every migration not yet recorded, in name order; return the ones applied."""
    con = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await con.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        await con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await con.fetch("SELECT version FROM schema_migrations")}
        files = migration_files()
        if done and files and files[0].name not in done:
            raise MigrationHistoryMismatch(
                f"this database records migrations {sorted(done)} but not the baseline {files[0].name}: it was made "
                "by an older layout of the migrations; drop it (or the local state folder) and start again")
        for path in files:
            if path.name in done:
                continue
            async with con.transaction():
                await con.execute(path.read_text())
                await con.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.name)
            applied.append(path.name)
            log.info("applied migration %s", path.name)
    finally:
        await con.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        await con.close()
    return applied
