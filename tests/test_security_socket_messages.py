"""Hostile messages on a seat channel get a clear `error` or a close, never `internal_error` and a traceback;
`resync` is coalesced per socket; PING frames draw on the message rate limit."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from core.settings import Settings
from server.app import create_app
from tests.conftest import make_session, make_user, seat_ids, table_counts, with_settings
from tests.sockets.support import SeatWatcher, watch
from tests.test_security_faults import assert_no_traceback


async def test_deeply_nested_json_gets_a_malformed_json_error(client: TestClient,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    session = await make_session(client)
    watcher = await watch(client, session["id"])
    caplog.set_level(logging.INFO)
    depth = 7000  # 14 kB: under the frame size limit, far over Python's recursion limit
    await watcher.ws.send_str("[" * depth + "]" * depth)
    await watcher.ws.send_str('{"type": "ping", "requestId": "after"}')
    reply = await watcher.wait_for("error")
    assert reply["code"] == "malformed_json", reply
    assert (await watcher.wait_for("pong"))["requestId"] == "after"  # the socket stays open
    assert_no_traceback(caplog)


@pytest.mark.parametrize("key", ["nul\x00inside", "line\nbreak", " "])
async def test_an_idempotency_key_with_control_characters_gets_a_validation_error(
        client: TestClient, pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture, key: str) -> None:
    session = await make_session(client)
    seats = await seat_ids(client, session["id"])
    user = await make_user(client)
    watcher = await watch(client, session["id"], token=user["token"])
    before = await table_counts(pg)
    caplog.set_level(logging.INFO)
    reply = await watcher.request({"type": "hold", "sessionSeatIds": seats[:1], "idempotencyKey": key},
                                  ("error", "hold.ok", "hold.rejected"))
    assert (reply["type"], reply["code"]) == ("error", "validation_error"), reply
    assert "idempotencyKey" in reply["details"]["fields"]
    assert await table_counts(pg) == before
    assert_no_traceback(caplog)


async def test_resync_requests_are_coalesced_per_socket(client: TestClient) -> None:
    session = await make_session(client, rows=10, per_row=16)
    watcher = await watch(client, session["id"])
    for i in range(30):
        await watcher.ws.send_json({"type": "resync", "requestId": f"r{i}"})
    await watcher.ws.send_json({"type": "ping", "requestId": "done"})
    await watcher.wait_for("pong")
    await asyncio.sleep(0.5)  # a snapshot still being read lands meanwhile
    while True:
        try:
            await watcher.receive(0.2)
        except TimeoutError:
            break
    # the first snapshot, then at most one being read and one queued behind it per burst -- not thirty
    assert 2 <= len(watcher.snapshots) <= 4, len(watcher.snapshots)


async def test_ping_frames_count_toward_the_message_rate_limit(aiohttp_client: Any, settings: Settings) -> None:
    client: TestClient = await aiohttp_client(create_app(with_settings(
        settings, ws_rate_per_second=1.0, ws_rate_burst=10)))
    session = await make_session(client)
    ws = await client.ws_connect(f"/ws/sessions/{session['id']}", autoping=False)
    watcher = SeatWatcher(ws)
    await watcher.wait_for("snapshot")
    for _ in range(50):
        if ws.closed:
            break
        await ws.ping(b"flood")
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
            break
    assert ws.close_code == 1008
