"""A seat-channel client for tests: applies the snapshot, then every change by version, as a browser does."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import aiohttp
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from tests.conftest import bearer

WAIT = 10.0


class SocketClosed(AssertionError):
    def __init__(self, code: int | None, extra: Any) -> None:
        super().__init__(f"socket closed: code={code} {extra!r}")
        self.code = code


class SeatWatcher:
    """A client of one socket: applies the snapshot and then every change by version, as a browser does."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seats: dict[str, tuple[str, int]] = {}
        self.snapshots: list[dict[str, Any]] = []
        self.changes: list[dict[str, Any]] = []
        self.frames = 0  # "seats" messages received

    def apply(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "snapshot":
            self.snapshots.append(msg)
            self.seats = {s["id"]: (s["status"], s["version"]) for s in msg["seats"]}
        elif msg["type"] == "seats":
            self.frames += 1
            for change in msg["changes"]:
                self.changes.append(change)
                if change["version"] > self.seats.get(change["id"], ("", -1))[1]:
                    self.seats[change["id"]] = (change["status"], change["version"])

    async def receive(self, within: float = WAIT) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=within)
        if msg.type is not WSMsgType.TEXT:
            raise SocketClosed(self.ws.close_code, msg.extra)
        data: dict[str, Any] = json.loads(msg.data)
        self.apply(data)
        return data

    async def wait_for(self, type_: str, within: float = WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            msg = await self.receive(max(0.01, deadline - time.monotonic()))
            if msg["type"] == type_:
                return msg

    async def request(self, message: dict[str, Any], reply_types: tuple[str, ...]) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        await self.ws.send_json({**message, "requestId": request_id})
        deadline = time.monotonic() + WAIT
        while True:
            msg = await self.receive(max(0.01, deadline - time.monotonic()))
            if msg["type"] in reply_types and msg.get("requestId") == request_id:
                return msg

    async def until(self, done: Any, within: float = WAIT) -> None:
        """Read until `done(self)` holds (raises asyncio.TimeoutError otherwise)."""
        deadline = time.monotonic() + within
        while not done(self):
            await self.receive(max(0.01, deadline - time.monotonic()))

    async def closed_with(self, within: float = WAIT) -> int | None:
        deadline = time.monotonic() + within
        while True:
            try:
                await self.receive(max(0.01, deadline - time.monotonic()))
            except SocketClosed as closed:
                return closed.code


async def watch(client: TestClient, session_id: str, token: str | None = None,
                headers: dict[str, str] | None = None) -> SeatWatcher:
    url = f"/ws/sessions/{session_id}" + (f"?token={token}" if token else "")
    watcher = SeatWatcher(await client.ws_connect(url, headers=headers))
    await watcher.wait_for("snapshot")
    return watcher


async def rest_seats(client: TestClient, session_id: str) -> dict[str, tuple[str, int]]:
    resp = await client.get(f"/sessions/{session_id}/seats")
    assert resp.status == 200
    return {s["id"]: (s["status"], s["version"]) for s in (await resp.json())["seats"]}


async def converge(client: TestClient, session_id: str, *watchers: SeatWatcher, within: float = WAIT) -> None:
    """Once changes stop, every socket's map equals GET /sessions/{id}/seats."""
    deadline = time.monotonic() + within
    for watcher in watchers:
        while True:
            expected = await rest_seats(client, session_id)
            if watcher.seats == expected:
                break
            left = deadline - time.monotonic()
            assert left > 0, {k: (watcher.seats.get(k), v) for k, v in expected.items() if watcher.seats.get(k) != v}
            try:
                await watcher.receive(min(left, 0.5))
            except TimeoutError:
                pass


async def hold(client: TestClient, user: dict[str, Any], session_id: str, seats: list[str]) -> aiohttp.ClientResponse:
    return await client.post("/reservations", json={"sessionId": session_id, "sessionSeatIds": seats},
                             headers=bearer(user["token"]))
