"""Best available when Redis misbehaves: out of memory, read-only, paused (slow) or not there at all. Every hold
over REST and the socket answers 503 `redis_unavailable` with Retry-After, never a 500, holds nothing and logs no
traceback."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core.settings import Settings
from server.app import create_app
from server.embedded import free_port
from tests.conftest import bearer, make_session, make_user, table_counts
from tests.test_security_faults import assert_no_traceback, assert_unavailable, redis_fault


async def best_over_rest_and_socket(client: TestClient, token: str, session_id: str) -> list[Any]:
    resp = await client.post("/reservations", json={"sessionId": session_id, "quantity": 2}, headers=bearer(token))
    answers: list[Any] = [(resp.status, resp.headers, await resp.json())]
    async with client.ws_connect(f"/ws/sessions/{session_id}?token={token}") as ws:
        while (await ws.receive_json(timeout=10))["type"] != "snapshot":
            pass
        await ws.send_json({"type": "hold", "quantity": 2, "rows": ["A"], "requestId": "b1"})
        while True:
            reply = await ws.receive_json(timeout=10)
            if reply.get("requestId") == "b1":
                break
    answers.append(reply)
    return answers


@pytest.mark.parametrize("fault", ["oom", "readonly", "paused"])
async def test_best_available_with_redis_refusing_or_slow_answers_503(
        client: TestClient, pg: asyncpg.Connection, redis_client: Redis, caplog: pytest.LogCaptureFixture,
        fault: str) -> None:
    session = await make_session(client)
    user = await make_user(client)
    before = await table_counts(pg)
    caplog.set_level(logging.INFO)
    if fault == "paused":  # every command waits 3 s: longer than the gate's bound on a hold's round trip
        resp = await client.post("/reservations", json={"sessionId": session["id"], "quantity": 1},
                                 headers=bearer(user["token"]))  # the layout is written before the pause
        assert resp.status == 201
        before = await table_counts(pg)
        await redis_client.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
        resp = await client.post("/reservations", json={"sessionId": session["id"], "quantity": 2},
                                 headers=bearer(user["token"]))
        assert_unavailable(resp.status, resp.headers, await resp.json(), "redis_unavailable")
        await redis_client.execute_command("CLIENT", "UNPAUSE")
    else:
        async with redis_fault(redis_client, fault):
            (status, headers, body), reply = await best_over_rest_and_socket(client, user["token"], session["id"])
            assert_unavailable(status, headers, body, "redis_unavailable")
            assert (reply["type"], reply["code"]) == ("error", "redis_unavailable"), reply
    assert await table_counts(pg) == before
    assert_no_traceback(caplog)


async def test_best_available_with_redis_not_there_answers_503(
        aiohttp_client: Any, base_settings: Settings, client: TestClient, pg: asyncpg.Connection,
        caplog: pytest.LogCaptureFixture) -> None:
    session = await make_session(client)
    user = await make_user(client)
    broken: Settings = replace(base_settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    node = await aiohttp_client(create_app(broken))
    before = await table_counts(pg)
    caplog.set_level(logging.INFO)
    resp = await node.post("/reservations", json={"sessionId": session["id"], "quantity": 2},
                           headers=bearer(user["token"]))
    assert_unavailable(resp.status, resp.headers, await resp.json(), "redis_unavailable")
    assert await table_counts(pg) == before
    assert_no_traceback(caplog)
