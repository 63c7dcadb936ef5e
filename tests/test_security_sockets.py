"""The seat channel's door and tokens: a per-address socket cap, cheap refusals first, tokens kept out of URLs,
tokens that expire and can be revoked."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from core.settings import Settings
from server.app import create_app
from tests.conftest import ADMIN, bearer, make_session, make_user, seat_ids, served, table_counts, with_settings
from tests.sockets.support import SeatWatcher, watch

UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


# ---- row 6: a per-address cap on open sockets; refusals that need no database come first ------------------


async def test_one_address_past_the_socket_cap_is_refused_while_others_connect(base_settings: Settings) -> None:
    async with served(with_settings(base_settings, ws_max_sockets_per_address=3)) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as admin_http:
            session = await make_session(admin_http_client(admin_http, base))
        url = f"{base}/ws/sessions/{session['id']}"
        async with contextlib.AsyncExitStack() as stack:
            mine = await stack.enter_async_context(aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(local_addr=("127.0.0.1", 0))))
            others = await stack.enter_async_context(aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))))
            open_ = [await stack.enter_async_context(mine.ws_connect(url)) for _ in range(3)]
            async with mine.get(url, headers=UPGRADE) as refused:
                assert refused.status == 429
                assert (await refused.json())["code"] == "too_many_sockets"
                assert int(refused.headers["Retry-After"]) >= 1
            # another address is not affected
            theirs = await stack.enter_async_context(others.ws_connect(url))
            assert (await theirs.receive_json(timeout=5))["type"] == "snapshot"
            # a socket that closes gives its place back
            await open_[0].close()
            for _ in range(50):
                async with mine.get(url, headers=UPGRADE) as again:
                    if again.status == 101:
                        break
                await asyncio.sleep(0.05)
            assert again.status == 101


class admin_http_client:  # noqa: N801 - a stand-in for TestClient: relative URLs on one aiohttp session
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.http.post(self.base + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.http.get(self.base + path, **kwargs)


async def test_refusals_that_need_no_database_come_first(aiohttp_client: Any, base_settings: Settings) -> None:
    """An upgrade refused for its Origin or for the address's cap is refused before the session is looked up:
    even for a session that does not exist, the answer is the cheap refusal, not a 404."""
    client = await aiohttp_client(create_app(with_settings(base_settings, ws_max_sockets_per_address=1)))
    unknown = f"/ws/sessions/{uuid.uuid4()}"
    resp = await client.get(unknown, headers={**UPGRADE, "Origin": "http://evil.example"})
    assert (resp.status, (await resp.json())["code"]) == (403, "origin_not_allowed")
    session = await make_session(client)
    first = await watch(client, session["id"])
    resp = await client.get(unknown, headers=UPGRADE)
    assert (resp.status, (await resp.json())["code"]) == (429, "too_many_sockets")
    await first.ws.close()


# ---- row 7: the token outside the URL; expiry; revocation -------------------------------------------------


async def test_the_socket_takes_the_token_in_its_subprotocol(client: TestClient, pg: asyncpg.Connection) -> None:
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    ana = await make_user(client)
    ws = await client.ws_connect(f"/ws/sessions/{session['id']}", protocols=("boxoffice", f"bearer.{ana['token']}"))
    assert ws.protocol == "boxoffice"  # a browser needs one of its offers echoed; never the token
    watcher = SeatWatcher(ws)
    await watcher.wait_for("snapshot")
    reply = await watcher.request({"type": "hold", "sessionSeatIds": seats[:2]}, ("hold.ok", "error"))
    assert reply["type"] == "hold.ok" and reply["reservation"]["userId"] == ana["id"]
    mine = SeatWatcher(await client.ws_connect(f"/ws/sessions/{session['id']}",
                                               protocols=("boxoffice", f"bearer.{ana['token']}")))
    snapshot = await mine.wait_for("snapshot")
    assert {s["id"] for s in snapshot["seats"] if s["mine"]} == set(seats[:2])
    # a bad token in the subprotocol watches but cannot act, as with ?token=
    counts = await table_counts(pg)
    stranger = SeatWatcher(await client.ws_connect(f"/ws/sessions/{session['id']}",
                                                   protocols=("boxoffice", "bearer.not-a-token")))
    await stranger.wait_for("snapshot")
    refused = await stranger.request({"type": "hold", "sessionSeatIds": seats[2:3]}, ("hold.ok", "error"))
    assert refused["code"] == "unauthorized"
    assert await table_counts(pg) == counts


def test_token_ttl_setting() -> None:
    assert Settings.from_env(env={}).token_ttl == 7 * 24 * 3600
    assert Settings.from_env(env={"TOKEN_TTL": "3600"}).token_ttl == 3600


async def test_a_token_expires_after_token_ttl(aiohttp_client: Any, base_settings: Settings,
                                               pg: asyncpg.Connection) -> None:
    one = await aiohttp_client(create_app(with_settings(base_settings, token_ttl=3600)))
    ana = await make_user(one)
    assert (await one.get(f"/users/{ana['id']}/purchases", headers=bearer(ana["token"]))).status == 200
    await pg.execute("UPDATE users SET created_at = now() - interval '61 minutes' WHERE id = $1",
                     uuid.UUID(ana["id"]))
    two = await aiohttp_client(create_app(with_settings(base_settings, token_ttl=3600)))
    resp = await two.get(f"/users/{ana['id']}/purchases", headers=bearer(ana["token"]))
    assert (resp.status, (await resp.json())["code"]) == (401, "token_expired")
    session = await make_session(two)
    seats = await seat_ids(two, session["id"])
    before = await table_counts(pg)
    resp = await two.post("/reservations", json={"sessionId": session["id"], "sessionSeatIds": seats[:1]},
                          headers=bearer(ana["token"]))
    assert resp.status == 401
    assert await table_counts(pg) == before


async def test_a_revoked_token_is_refused_by_every_node_within_a_second(
        aiohttp_client: Any, base_settings: Settings, pg: asyncpg.Connection) -> None:
    one = await aiohttp_client(create_app(base_settings))
    two = await aiohttp_client(create_app(base_settings))
    session = await make_session(one)
    seats = await seat_ids(one, session["id"])
    ana, bob = await make_user(one), await make_user(one, "Bob")
    for node in (one, two):  # both nodes know (and cache) the token
        assert (await node.get(f"/users/{ana['id']}/purchases", headers=bearer(ana["token"]))).status == 200
    watcher = await watch(two, session["id"], ana["token"])
    # nobody else may revoke it
    resp = await one.delete(f"/users/{ana['id']}/token", headers=bearer(bob["token"]))
    assert (resp.status, (await resp.json())["code"]) == (403, "not_owner")
    resp = await one.delete(f"/users/{ana['id']}/token", headers=bearer(ana["token"]))
    assert resp.status == 204
    loop = asyncio.get_running_loop()
    revoked_at = loop.time()
    while (await two.get(f"/users/{ana['id']}/purchases", headers=bearer(ana["token"]))).status != 401:
        assert loop.time() - revoked_at < 1.0, "node two still takes the revoked token"
        await asyncio.sleep(0.02)
    before = await table_counts(pg)
    refused = await watcher.request({"type": "hold", "sessionSeatIds": seats[:1]}, ("hold.ok", "error"))
    assert refused["type"] == "error" and refused["code"] == "unauthorized"
    assert await table_counts(pg) == before
    # the admin may revoke anyone's token; the user's data stays
    resp = await two.delete(f"/users/{bob['id']}/token", headers=ADMIN)
    assert resp.status == 204
    assert (await one.get(f"/users/{bob['id']}", headers=ADMIN)).status == 200


@pytest.mark.parametrize("who", ["nobody", "unknown user"])
async def test_revoking_needs_a_token_and_a_user(client: TestClient, who: str) -> None:
    target = str(uuid.uuid4()) if who == "unknown user" else (await make_user(client))["id"]
    headers = ADMIN if who == "unknown user" else {}
    resp = await client.delete(f"/users/{target}/token", headers=headers)
    assert resp.status == (404 if who == "unknown user" else 401)
