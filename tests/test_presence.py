"""Live presence: sockets on every node of a real cluster; the count each one hears (in its snapshot, then in
`presence` messages) converges within 2 s of sockets opening and closing, and comes at most once a second."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from server.cluster import LocalCluster
from tests.cluster_support import make_session

pytestmark = [pytest.mark.cluster]


class Watcher:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.watchers: int | None = None
        self.snapshot_watchers: int | None = None
        self.snapshot = asyncio.Event()
        self.heard: list[float] = []  # when each presence message came
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                data: dict[str, Any] = msg.json()
                if data.get("type") == "snapshot":
                    self.snapshot_watchers = self.watchers = data["watchers"]
                    self.snapshot.set()
                elif data.get("type") == "presence":
                    self.watchers = data["watchers"]
                    self.heard.append(asyncio.get_running_loop().time())

    async def close(self) -> None:
        await self.ws.close()
        await self.task


async def converged(watchers: list[Watcher], count: int, within: float) -> float | None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < within:
        if all(w.watchers == count for w in watchers):
            return loop.time() - started
        await asyncio.sleep(0.05)
    return None


async def test_the_watcher_count_converges_on_every_node_within_2_s(live_cluster: LocalCluster,
                                                                    api: aiohttp.ClientSession) -> None:
    session = await make_session(api)
    async with aiohttp.ClientSession() as http:
        async def open_on(url: str) -> Watcher:
            return Watcher(await http.ws_connect(f"{url}/ws/sessions/{session['id']}"))

        first = [await open_on(url) for url in live_cluster.node_urls for _ in range(2)]  # 2 on each node
        assert await converged(first, 6, within=2.0) is not None, [w.watchers for w in first]
        assert all(w.snapshot_watchers is not None and w.snapshot_watchers >= 1 for w in first)

        more = [await open_on(url) for url in live_cluster.node_urls[:1] for _ in range(3)]
        everyone = first + more
        assert await converged(everyone, 9, within=2.0) is not None, [w.watchers for w in everyone]

        for w in first[:4]:  # both of node 1's first two and node 2's: 5 left
            await w.close()
        left = first[4:] + more
        assert await converged(left, 5, within=2.0) is not None, [w.watchers for w in left]
        # a late joiner's snapshot already counts everyone (its node's own sockets at once, the others' as
        # last counted)
        late = await open_on(live_cluster.node_urls[2])
        async with asyncio.timeout(2.0):
            await late.snapshot.wait()
        assert late.snapshot_watchers == 6
        left.append(late)
        for w in everyone + [late]:  # never two presence messages within a second on one socket
            assert all(b - a >= 0.9 for a, b in zip(w.heard, w.heard[1:], strict=False)), w.heard
        for w in left:
            await w.close()
