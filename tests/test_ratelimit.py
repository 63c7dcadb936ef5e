"""Request rate limits: 429 rate_limited with Retry-After, per user and per anonymous client IP."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from core.ratelimit import TokenBuckets
from server.app import create_app
from tests.conftest import bearer, make_session, make_user, seat_ids, table_counts, with_settings


def test_token_bucket_refills_at_its_rate() -> None:
    buckets = TokenBuckets(rate=2, burst=3)
    assert [buckets.take("k", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k", now=0.0) == 0.5
    assert buckets.take("k", now=0.5) == 0.0
    assert buckets.take("other", now=0.5) == 0.0


def test_token_buckets_stay_bounded() -> None:
    buckets = TokenBuckets(rate=1, burst=1, max_keys=100)
    for i in range(1000):
        buckets.take(f"ip{i}", now=0.0)
    assert len(buckets._buckets) == 100


async def test_a_flooding_user_gets_429_and_nothing_changes(aiohttp_client: Any, settings: Any, pg: Any) -> None:
    client = await aiohttp_client(create_app(with_settings(settings, rate_limit_per_second=1, rate_limit_burst=3)))
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    ana, bob = await make_user(client), await make_user(client, "Bob")
    body = {"sessionId": session["id"], "sessionSeatIds": [seats[0]]}
    statuses = [(await client.post("/reservations", json=body, headers=bearer(ana["token"]))).status
                for _ in range(3)]
    assert statuses == [201, 409, 409]
    before = await table_counts(pg)
    resp = await client.post("/reservations", json={**body, "sessionSeatIds": [seats[1]]},
                             headers=bearer(ana["token"]))
    assert resp.status == 429
    payload = await resp.json()
    assert payload["code"] == "rate_limited" and int(resp.headers["Retry-After"]) >= 1
    assert await table_counts(pg) == before
    # another user is not affected, and reads are never limited
    resp = await client.post("/reservations", json={**body, "sessionSeatIds": [seats[1]]},
                             headers=bearer(bob["token"]))
    assert resp.status == 201
    assert (await client.get(f"/sessions/{session['id']}/seats")).status == 200


async def test_anonymous_writes_are_limited_per_ip(aiohttp_client: Any, settings: Any) -> None:
    client = await aiohttp_client(create_app(with_settings(settings, rate_limit_anon_per_second=1,
                                                           rate_limit_anon_burst=2)))
    await make_user(client)
    await make_user(client)
    resp = await client.post("/users", json={"name": "c", "email": "c@example.com"})
    assert resp.status == 429 and (await resp.json())["code"] == "rate_limited"


@contextlib.asynccontextmanager
async def on_unix_socket(app: web.Application) -> AsyncIterator[aiohttp.ClientSession]:
    """The app served on a Unix socket only (UNIX_SOCKET: how `boxoffice cluster`'s HAProxy reaches a node)."""
    with tempfile.TemporaryDirectory(prefix="bx-") as folder:  # short: sun_path holds ~107 bytes
        path = str(Path(folder) / "node.sock")
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.UnixSite(runner, path).start()
            async with aiohttp.ClientSession("http://node", connector=aiohttp.UnixConnector(path)) as http:
                yield http
        finally:
            await runner.cleanup()


@pytest.mark.parametrize("link", ["loopback", "unix"])
async def test_behind_the_local_proxy_each_caller_address_has_its_own_bucket(
        link: str, aiohttp_client: Any, settings: Any, pg: Any) -> None:
    """HAProxy sets X-Forwarded-For (the caller's address) on writes; the node believes it from a loopback peer
    and from its Unix socket (`boxoffice cluster`'s link), so one caller's flood does not throttle everyone
    behind the proxy."""
    app = create_app(with_settings(settings, rate_limit_anon_per_second=0.01, rate_limit_anon_burst=1))
    async with contextlib.AsyncExitStack() as stack:
        http = await aiohttp_client(app) if link == "loopback" else await stack.enter_async_context(on_unix_socket(app))

        async def sign_up(forwarded_for: str) -> int:
            async with http.post("/users", json={"name": "c", "email": f"{uuid.uuid4().hex}@example.com"},
                                 headers={"X-Forwarded-For": forwarded_for}) as resp:
                return resp.status

        assert [await sign_up("203.0.113.7"), await sign_up("203.0.113.8")] == [201, 201]
        before = await table_counts(pg)
        assert await sign_up("203.0.113.7") == 429
        assert await table_counts(pg) == before
        # a list: the last entry is the one the proxy saw
        assert await sign_up("198.51.100.1, 203.0.113.8") == 429
        assert await sign_up("203.0.113.8, 198.51.100.1") == 201
        assert await sign_up("198.51.100.9") == 201
