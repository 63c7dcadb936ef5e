"""The benchmark's traffic through the REST contract: the room, the session and the buyers, then a steady
stream of holds, each released a moment later."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

# 400 seats: at 100 holds/s of 0.5 s each ~50 are held at once, so even a slowed machine rarely runs out of seats
ROOM_ROWS, ROOM_SEATS_PER_ROW = 20, 20


@dataclass
class LoadStats:
    holds: int = 0
    releases: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    lag_skipped: int = 0


async def generate_load(http: aiohttp.ClientSession, session_id: str, seats: list[str], users: list[dict[str, Any]],
                        rate: float, duration: float, hold_seconds: float) -> LoadStats:
    """`rate` holds per second (one seat each) through HAProxy, each released `hold_seconds` later."""
    stats = LoadStats()
    free = deque(seats)
    in_flight: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    async def cycle(k: int, seat: str) -> None:
        user = users[k % len(users)]
        auth = {"Authorization": f"Bearer {user['token']}"}
        try:
            async with http.post("/reservations", json={"userId": user["id"], "sessionId": session_id,
                                                        "sessionSeatIds": [seat]}, headers=auth) as resp:
                body = await resp.json()
                if resp.status != 201:
                    stats.failed[f"hold {resp.status} {body.get('code')}"] += 1
                    return
                stats.holds += 1
            await asyncio.sleep(hold_seconds)
            async with http.delete(f"/reservations/{body['id']}", headers=auth) as resp:
                if resp.status == 204:
                    stats.releases += 1
                else:
                    stats.failed[f"release {resp.status}"] += 1
        except aiohttp.ClientError as exc:
            stats.failed[type(exc).__name__] += 1
        finally:
            free.append(seat)

    start = loop.time()
    total = int(rate * duration)
    for k in range(total):
        delay = start + k / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if not free:  # every seat held: the server is slower than the asked rate
            stats.lag_skipped += 1
            continue
        task = asyncio.create_task(cycle(k, free.popleft()))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
    return stats


Fixture = tuple[str, list[str], list[dict[str, Any]]]  # session id, its seat ids, buyers with tokens


async def create_fixture(http: aiohttp.ClientSession, admin: dict[str, str], users: int) -> Fixture:
    async with http.post("/rooms", json={"name": f"Bench {uuid.uuid4().hex[:6]}", "rows": ROOM_ROWS,
                                             "seatsPerRow": ROOM_SEATS_PER_ROW},
                         headers=admin) as resp:
        room = await resp.json()
        assert resp.status == 201, room
    start = datetime.now(UTC) + timedelta(days=3)
    async with http.post("/sessions", json={"movieTitle": "Broadcast bench", "startShowTime": start.isoformat(),
                                            "endShowTime": (start + timedelta(hours=2)).isoformat(),
                                            "roomId": room["id"], "ticketPrice": 10}, headers=admin) as resp:
        session = await resp.json()
        assert resp.status == 201, session
    async with http.get(f"/sessions/{session['id']}/seats") as resp:
        seats = [s["id"] for s in (await resp.json())["seats"]]
    buyers = []
    for k in range(users):
        async with http.post("/users", json={"name": f"Bench {k}",
                                             "email": f"bench-{uuid.uuid4().hex[:10]}@example.com"}) as resp:
            buyers.append(await resp.json())
    return session["id"], seats, buyers
