"""Limits on by default: one address or one token cannot take the house, over REST or the socket."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.appkeys import TOKENS
from core.settings import Settings
from server.app import create_app
from tests.conftest import (
    ADMIN_TOKEN,
    bearer,
    make_session,
    make_user,
    seat_ids,
    served,
    table_counts,
    with_settings,
)
from tests.sockets.support import watch


def production(base: Settings) -> Settings:
    """What a node runs with when nobody sets a limit: Settings' own defaults, on the test's services."""
    return Settings.from_env(env={"ADMIN_TOKEN": ADMIN_TOKEN}, database_url=base.database_url,
                             redis_url=base.redis_url, kafka_bootstrap_servers=base.kafka_bootstrap_servers,
                             node_id="test-node", log_format="console")


def test_every_limit_is_on_by_default() -> None:
    defaults = Settings()
    assert defaults.rate_limit_per_second > 0 and defaults.rate_limit_burst > 0  # writes per user
    assert defaults.rate_limit_anon_per_second > 0 and defaults.rate_limit_anon_burst > 0  # guests per address
    assert 0 < defaults.max_seats_per_address <= 40  # seats one address holds at once, across nodes
    assert 0 < defaults.ws_max_sockets_per_address <= 100


# ---- row 3: a scripted "new guest, hold, repeat" attacker --------------------------------------------------


async def test_a_guest_farming_attacker_holds_a_bounded_share_of_a_session(
        aiohttp_client: Any, base_settings: Settings, pg: asyncpg.Connection) -> None:
    settings = production(base_settings)
    client = await aiohttp_client(create_app(settings))
    session = await make_session(client, rows=10, per_row=16)  # the demo room: 160 seats
    seats = await seat_ids(client, session["id"])
    attacker = {"X-Forwarded-For": f"198.51.100.{uuid.uuid4().int % 250 + 1}"}  # via the local proxy (trusted)
    answers: dict[int, int] = {}
    guests = 0
    for _ in range(40):  # new guest, hold 10, repeat; far more than the limits allow
        resp = await client.post("/users", json={"name": "bot", "email": f"{uuid.uuid4().hex}@example.com"},
                                 headers=attacker)
        answers[resp.status] = answers.get(resp.status, 0) + 1
        if resp.status != 201:
            continue
        guests += 1
        token = (await resp.json())["token"]
        free = [s["id"] for s in (await (await client.get(f"/sessions/{session['id']}/seats",
                                                          params={"status": "AVAILABLE"})).json())["seats"]]
        for _ in range(2):  # each guest tries its whole quota
            hold = await client.post("/reservations", json={"sessionId": session["id"], "sessionSeatIds": free[:10]},
                                     headers={**bearer(token), **attacker})
            answers[hold.status] = answers.get(hold.status, 0) + 1
            if hold.status == 201:
                free = free[10:]
            else:
                assert hold.status in (409, 429), await hold.text()
    held = await pg.fetchval("SELECT count(*) FROM session_seats WHERE session_id = $1 AND status <> 'AVAILABLE'",
                             uuid.UUID(session["id"]))
    assert answers.get(429, 0) > 0
    assert held <= settings.max_seats_per_address <= len(seats) // 4, (held, answers)
    assert guests <= settings.rate_limit_anon_burst + 2
    # someone else, from another address, still gets a seat
    other = {"X-Forwarded-For": "192.0.2.77"}
    resp = await client.post("/users", json={"name": "fan", "email": f"{uuid.uuid4().hex}@example.com"}, headers=other)
    assert resp.status == 201
    free = [s["id"] for s in (await (await client.get(f"/sessions/{session['id']}/seats",
                                                      params={"status": "AVAILABLE"})).json())["seats"]]
    hold = await client.post("/reservations", json={"sessionId": session["id"], "sessionSeatIds": free[:2]},
                             headers={**bearer((await resp.json())["token"]), **other})
    assert hold.status == 201, await hold.text()


async def test_an_address_over_its_seat_quota_is_refused_on_every_node(
        aiohttp_client: Any, base_settings: Settings, pg: asyncpg.Connection) -> None:
    """The per-address seat quota lives in Redis: two nodes share it."""
    settings = with_settings(base_settings, max_seats_per_address=4)
    one, two = await aiohttp_client(create_app(settings)), await aiohttp_client(create_app(settings))
    session = await make_session(one)
    seats = await seat_ids(one, session["id"])
    address = {"X-Forwarded-For": f"203.0.113.{uuid.uuid4().int % 250 + 1}"}
    ana, bob = await make_user(one), await make_user(two, "Bob")
    body = {"sessionId": session["id"], "sessionSeatIds": seats[:3]}
    assert (await one.post("/reservations", json=body, headers={**bearer(ana["token"]), **address})).status == 201
    before = await table_counts(pg)
    refused = await two.post("/reservations", json={**body, "sessionSeatIds": seats[3:5]},
                             headers={**bearer(bob["token"]), **address})
    assert refused.status == 429
    payload = await refused.json()
    assert payload["code"] == "address_quota_exceeded" and int(refused.headers["Retry-After"]) >= 1
    assert await table_counts(pg) == before
    # a hold that fails gives its share back: a 409 costs nothing
    taken = await two.post("/reservations", json={**body, "sessionSeatIds": seats[:1]},
                           headers={**bearer(bob["token"]), **address})
    assert taken.status == 409
    fits = await two.post("/reservations", json={**body, "sessionSeatIds": seats[3:4]},
                          headers={**bearer(bob["token"]), **address})
    assert fits.status == 201, await fits.text()


# ---- row 4: TRUSTED_PROXIES decides whose X-Forwarded-For is believed -------------------------------------


def test_trusted_proxies_setting_is_a_list_of_networks() -> None:
    assert Settings.from_env(env={}).trusted_proxies == ("127.0.0.1/32", "::1/128")
    parsed = Settings.from_env(env={"TRUSTED_PROXIES": "10.0.0.0/8, 172.18.0.5 ,::1"})
    assert parsed.trusted_proxies == ("10.0.0.0/8", "172.18.0.5/32", "::1/128")
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        Settings.from_env(env={"TRUSTED_PROXIES": "10.0.0.0/8,not-a-network"})


async def sign_up_from(server: TestServer, source: str, forwarded_for: str) -> int:
    """POST /users from the local address `source` (a loopback alias), claiming `forwarded_for`."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as http, http.post(
            f"http://127.0.0.1:{server.port}/users", headers={"X-Forwarded-For": forwarded_for},
            json={"name": "c", "email": f"{uuid.uuid4().hex}@example.com"}) as resp:
        return resp.status


async def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(base_settings: Settings) -> None:
    limited = with_settings(base_settings, rate_limit_anon_per_second=0.01, rate_limit_anon_burst=1,
                            trusted_proxies=("127.0.0.2/32",))
    async with served(limited) as server:
        # the proxy on 127.0.0.2 is trusted: each caller behind it has its own bucket
        assert await sign_up_from(server, "127.0.0.2", "203.0.113.7") == 201
        assert await sign_up_from(server, "127.0.0.2", "203.0.113.8") == 201
        assert await sign_up_from(server, "127.0.0.2", "203.0.113.7") == 429
        # 127.0.0.3 is not: what it claims is ignored and its callers share its own address's bucket
        assert await sign_up_from(server, "127.0.0.3", "203.0.113.20") == 201
        assert await sign_up_from(server, "127.0.0.3", "203.0.113.21") == 429
        # nor is 127.0.0.1 once the list does not name it
        assert await sign_up_from(server, "127.0.0.1", "203.0.113.30") == 201
        assert await sign_up_from(server, "127.0.0.1", "203.0.113.31") == 429


# ---- row 5: made-up tokens, the unknown-token cache, socket holds -------------------------------------


async def test_a_made_up_token_draws_on_its_address_bucket(aiohttp_client: Any, base_settings: Settings,
                                                           pg: asyncpg.Connection) -> None:
    settings = with_settings(base_settings, rate_limit_per_second=5, rate_limit_burst=50,
                             rate_limit_anon_per_second=0.01, rate_limit_anon_burst=2)
    client = await aiohttp_client(create_app(settings))
    before = await table_counts(pg)
    statuses = []
    for _ in range(4):
        resp = await client.post("/reservations", json={"sessionId": str(uuid.uuid4()), "sessionSeatIds": []},
                                 headers=bearer(f"made-up-{uuid.uuid4().hex}"))
        statuses.append((resp.status, (await resp.json())["code"]))
    assert statuses == [(401, "invalid_token")] * 2 + [(429, "rate_limited")] * 2
    assert await table_counts(pg) == before


async def test_an_unknown_token_is_looked_up_once_then_remembered_as_unknown(client: TestClient) -> None:
    tokens = client.app[TOKENS]
    made_up = bearer(f"made-up-{uuid.uuid4().hex}")
    looked_up = tokens.db_lookups
    for _ in range(20):
        resp = await client.get(f"/users/{uuid.uuid4()}/purchases", headers=made_up)
        assert (resp.status, (await resp.json())["code"]) == (401, "invalid_token")
    assert tokens.db_lookups - looked_up == 1
    # a real token is still found (and a new user's token is known at once)
    user = await make_user(client)
    assert (await client.get(f"/users/{user['id']}/purchases", headers=bearer(user["token"]))).status == 200


async def test_socket_holds_draw_on_the_rest_limits(aiohttp_client: Any, base_settings: Settings,
                                                    pg: asyncpg.Connection) -> None:
    settings = with_settings(base_settings, rate_limit_per_second=0.01, rate_limit_burst=2)
    client = await aiohttp_client(create_app(settings))
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    ana = await make_user(client)
    for seat in seats[:2]:
        resp = await client.post("/reservations", json={"sessionId": session["id"], "sessionSeatIds": [seat]},
                                 headers=bearer(ana["token"]))
        assert resp.status == 201
    watcher = await watch(client, session["id"], ana["token"])
    before = await table_counts(pg)
    refused = await watcher.request({"type": "hold", "sessionSeatIds": seats[2:3]}, ("error", "hold.ok"))
    assert refused["type"] == "error" and refused["code"] == "rate_limited"
    assert await table_counts(pg) == before


async def test_socket_holds_count_toward_the_address_seat_quota(aiohttp_client: Any, base_settings: Settings,
                                                                pg: asyncpg.Connection) -> None:
    settings = with_settings(base_settings, max_seats_per_address=3)
    client = await aiohttp_client(create_app(settings))
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    ana = await make_user(client)
    # the caller's address, as the local proxy (trusted by default) reports it on the upgrade and on REST
    address = {"X-Forwarded-For": f"203.0.113.{uuid.uuid4().int % 250 + 1}"}
    watcher = await watch(client, session["id"], ana["token"], headers=address)
    ok = await watcher.request({"type": "hold", "sessionSeatIds": seats[:2]}, ("hold.ok", "error"))
    assert ok["type"] == "hold.ok", ok
    before = await table_counts(pg)
    resp = await client.post("/reservations", json={"sessionId": session["id"], "sessionSeatIds": seats[2:4]},
                             headers={**bearer(ana["token"]), **address})
    assert resp.status == 429 and (await resp.json())["code"] == "address_quota_exceeded"
    refused = await watcher.request({"type": "hold", "sessionSeatIds": seats[4:6]}, ("hold.ok", "error"))
    assert refused["type"] == "error" and refused["code"] == "address_quota_exceeded"
    assert await table_counts(pg) == before


async def test_with_auth_off_socket_releases_draw_on_the_address_bucket_as_rest_writes_do(
        aiohttp_client: Any, base_settings: Settings, pg: asyncpg.Connection) -> None:
    """AUTH_REQUIRED=false: every write, a socket's release too, draws on its address's bucket."""
    trusting = with_settings(base_settings, auth_required=False)
    setup = await aiohttp_client(create_app(trusting))
    limited = await aiohttp_client(create_app(with_settings(trusting, rate_limit_anon_per_second=0.01,
                                                            rate_limit_anon_burst=2)))
    session = await make_session(setup)
    seats = await seat_ids(setup, session["id"])
    user = await make_user(setup)
    holds = []
    for seat in seats[:3]:
        resp = await setup.post("/reservations", json={"userId": user["id"], "sessionId": session["id"],
                                                       "sessionSeatIds": [seat]})
        assert resp.status == 201, await resp.text()
        holds.append((await resp.json())["id"])
    address = {"X-Forwarded-For": f"203.0.113.{uuid.uuid4().int % 250 + 1}"}
    watcher = await watch(limited, session["id"], headers=address)
    replies = [await watcher.request({"type": "release", "reservationId": rid}, ("release.ok", "error"))
               for rid in holds]
    assert [(r["type"], r.get("code")) for r in replies] == [("release.ok", None)] * 2 + [("error", "rate_limited")]
    assert await pg.fetchval("SELECT status FROM reservations WHERE id = $1::uuid", holds[2]) == "PENDING"
    # the same bucket as REST's: the address's next write is refused there too
    resp = await limited.delete(f"/reservations/{holds[2]}", headers=address)
    assert (resp.status, (await resp.json())["code"]) == (429, "rate_limited")
