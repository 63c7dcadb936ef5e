"""The token cache and revocations: a lookup that read a token just before it was revoked does not keep it, and the
node keeps hearing revocations after its listening connection is cut."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp.test_utils import TestClient

from core.appkeys import PG_POOL
from core.settings import Settings
from storage.auth import REVOKED_CHANNEL, TokenCache, revoke_token
from tests.conftest import make_user

WAIT = 5.0


class PausedCache(TokenCache):
    """A token cache whose database read, once answered, waits for the test before the lookup goes on: the moment a
    revocation can land between a lookup's read and its caching."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool, token_ttl=3600)
        self.answered = asyncio.Event()
        self.go_on = asyncio.Event()

    async def _read(self, digest: bytes) -> asyncpg.Record | None:
        row = await super()._read(digest)
        self.answered.set()
        await self.go_on.wait()
        return row


async def until(check: Callable[[], Awaitable[bool]], within: float = WAIT) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_a_lookup_that_read_the_token_before_its_revocation_does_not_keep_it(
        client: TestClient, settings: Settings) -> None:
    pool = client.app[PG_POOL]
    user = await make_user(client)
    cache = PausedCache(pool)
    heard = asyncio.Event()
    listening = await asyncpg.connect(settings.database_url)

    def on_revoked(con: object, pid: int, channel: str, payload: str) -> None:
        heard.set()

    try:  # the revocation reaches this cache as every node's listener delivers it (listen_revocations -> _heard)
        await listening.add_listener(REVOKED_CHANNEL, cache._heard)
        await listening.add_listener(REVOKED_CHANNEL, on_revoked)
        lookup = asyncio.create_task(cache.user_for(user["token"]))
        await asyncio.wait_for(cache.answered.wait(), WAIT)  # it has read the token's user, not yet cached it
        assert await revoke_token(pool, uuid.UUID(user["id"]))
        await asyncio.wait_for(heard.wait(), WAIT)
        cache.go_on.set()
        assert await asyncio.wait_for(lookup, WAIT) == uuid.UUID(user["id"])  # it began before the revocation
        # ... but it kept nothing: the next lookup reads again, and the token is refused
        lookups = cache.db_lookups
        assert await asyncio.wait_for(cache.user_for(user["token"]), WAIT) is None
        assert cache.db_lookups == lookups + 1
    finally:
        cache.go_on.set()
        await listening.close()


async def test_revocations_are_still_heard_after_the_listening_connection_is_cut(
        client: TestClient, settings: Settings, pg: asyncpg.Connection) -> None:
    pool = client.app[PG_POOL]
    user = await make_user(client)
    cache = TokenCache(pool, token_ttl=3600)
    listener = asyncio.create_task(cache.listen_revocations(settings.database_url, retry=0.05))
    try:
        assert await until(lambda: _listening(pg))
        for _ in range(2):  # cut every revocation listener of this database (this cache's, the node's): twice
            before = cache.generation
            await pg.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                             " WHERE query = $1 AND pid <> pg_backend_pid()", f'LISTEN "{REVOKED_CHANNEL}"')

            async def reconnected(before: int = before) -> bool:
                return cache.generation > before and await _listening(pg)

            assert await until(reconnected)
        assert await cache.user_for(user["token"]) == uuid.UUID(user["id"])  # cached again
        assert await revoke_token(pool, uuid.UUID(user["id"]))

        async def forgotten() -> bool:
            return await cache.user_for(user["token"]) is None

        assert await until(forgotten, within=1.0)
        assert not listener.done()
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def _listening(pg: asyncpg.Connection) -> bool:
    return bool(await pg.fetchval("SELECT count(*) FROM pg_stat_activity WHERE query = $1",
                                  f'LISTEN "{REVOKED_CHANNEL}"'))
