"""Presence on one node: a socket never hears two `presence` frames within a second, not even one that joined
while the count stood still and heard the count at once."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from aiohttp.test_utils import TestClient

from core.settings import Settings
from realtime.presence import PRESENCE_TTL_MS
from server.app import create_app
from tests.conftest import make_session


class Ear:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.heard: list[tuple[float, int]] = []  # (when, watchers) of each presence frame
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = msg.json()
            if data.get("type") == "presence":
                self.heard.append((asyncio.get_running_loop().time(), data["watchers"]))

    async def until(self, count: int, within: float = 3.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(within):
            while not self.heard or self.heard[-1][1] != count:  # noqa: ASYNC110 - a poll of what the reader saw
                await asyncio.sleep(0.02)


async def test_a_socket_hears_the_count_at_most_once_a_second(client: TestClient) -> None:
    session = await make_session(client)
    url = f"/ws/sessions/{session['id']}"
    first = Ear(await client.ws_connect(url))
    await first.until(1)
    await asyncio.sleep(1.1)  # the session's last frame is over a second old
    await first.ws.close()
    second = Ear(await client.ws_connect(url))  # the count stays 1: the newcomer alone hears it
    await second.until(1)
    third = Ear(await client.ws_connect(url))  # the count moves to 2 at the next count
    await third.until(2)
    await asyncio.sleep(1.5)
    for ear in (second, third):
        times = [t for t, _ in ear.heard]
        assert all(b - a >= 0.9 for a, b in zip(times, times[1:], strict=False)), ear.heard
        assert ear.heard[-1][1] == 2, ear.heard
        await ear.ws.close()


async def test_a_node_that_stops_leaves_the_count_at_once(client: TestClient, aiohttp_client: Any,
                                                          settings: Settings) -> None:
    session = await make_session(client)
    url = f"/ws/sessions/{session['id']}"
    other = await aiohttp_client(create_app(replace(settings, node_id="presence-other")))
    here = Ear(await client.ws_connect(url))
    there = Ear(await other.ws_connect(url))
    await here.until(2)
    await there.ws.close()
    await other.close()  # stopped, not killed: its count must not linger for PRESENCE_TTL_MS
    loop = asyncio.get_running_loop()
    stopped = loop.time()
    await here.until(1, within=3.0)
    assert here.heard[-1][0] - stopped < PRESENCE_TTL_MS / 1000 - 0.5, here.heard
    await here.ws.close()
