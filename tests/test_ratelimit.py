"""Request rate limits: 429 rate_limited with Retry-After, per user and per anonymous client IP."""

from __future__ import annotations

import uuid
from typing import Any

from server.app import create_app
from server.ratelimit import TokenBuckets
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


async def test_behind_the_local_proxy_each_caller_address_has_its_own_bucket(aiohttp_client: Any,
                                                                            settings: Any) -> None:
    """HAProxy sets X-Forwarded-For (the caller's address) on writes; from a loopback peer the node believes it."""
    client = await aiohttp_client(create_app(with_settings(settings, rate_limit_anon_per_second=0.01,
                                                           rate_limit_anon_burst=1)))

    async def sign_up(forwarded_for: str) -> int:
        resp = await client.post("/users", json={"name": "c", "email": f"{uuid.uuid4().hex}@example.com"},
                                 headers={"X-Forwarded-For": forwarded_for})
        return resp.status

    assert [await sign_up("203.0.113.7"), await sign_up("203.0.113.8")] == [201, 201]
    assert await sign_up("203.0.113.7") == 429
    # a list: the last entry is the one the proxy saw
    assert await sign_up("198.51.100.1, 203.0.113.8") == 429
    assert await sign_up("203.0.113.8, 198.51.100.1") == 201
