"""The StarSoft stress script (scripts/simulation.js), step by step, on a freshly seeded deployment."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from core.settings import Settings
from server.app import create_app
from tests.conftest import with_settings


async def test_the_stress_script_finds_one_winner_and_reads_the_worker(
        aiohttp_client: Any, settings: Settings, fresh_database: str) -> None:
    """scripts/simulation.js, step by step (7.2), with 40 users against one node."""
    client = await aiohttp_client(create_app(with_settings(settings, database_url=fresh_database,
                                                           auth_required=False)))
    rooms = await (await client.get("/rooms")).json()
    room = next(r for r in rooms if r["name"] == "Sala 01 - IMAX Extreme")
    now = datetime.now(UTC)
    resp = await client.post("/sessions", json={
        "movieTitle": f"Jogos Vorazes: A Competição {int(time.time() * 1000)}",
        "startShowTime": (now + timedelta(hours=24)).isoformat().replace("+00:00", "Z"),
        "endShowTime": (now + timedelta(hours=25)).isoformat().replace("+00:00", "Z"),
        "roomId": room["id"], "ticketPrice": 50})
    assert resp.status == 201
    session_id = (await resp.json())["id"]
    body = await (await client.get(f"/sessions/{session_id}/seats")).json()
    seats = body if isinstance(body, list) else body["seats"]
    targets = [next(s for s in seats if s["seat"]["seatNumber"] == n)["id"] for n in (1, 2)]
    users = []
    for i in range(40):
        resp = await client.post("/users", json={"name": f"Gladiator {i}",
                                                 "email": f"gladiator{i}_{int(time.time() * 1000)}@arena.com"})
        users.append((await resp.json())["id"])

    async def attempt(user_id: str) -> tuple[int, dict[str, Any], str | None]:
        resp = await client.post("/reservations", json={"userId": user_id, "sessionId": session_id,
                                                        "sessionSeatIds": targets},
                                 headers={"x-idempotency-key": str(uuid.uuid4())})
        return resp.status, await resp.json(), resp.headers.get("x-worker-id")

    results = await asyncio.gather(*(attempt(u) for u in users))
    winners = [(worker, data["id"]) for status, data, worker in results if 200 <= status < 300]
    assert len(winners) == 1, results
    assert winners[0][0] == "test-node"  # not "Server: undefined"
    losers = [(status, data["message"]) for status, data, _ in results if not 200 <= status < 300]
    assert {status for status, _ in losers} == {409} and all(message for _, message in losers)
