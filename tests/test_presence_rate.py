"""Presence on one node: a socket never hears two `presence` frames within a second, not even one that joined
while the count stood still and heard the count at once."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

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
