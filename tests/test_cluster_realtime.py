"""Multi-node real-time tests: sockets on every node of a real cluster, changes made through every node.

Each test checks the contract's guarantee -- once changes stop, every open socket's seat map equals
GET /sessions/{id}/seats -- under random traffic, a broker outage and a node killed with SIGKILL,
then the booking invariants from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
import asyncpg
import pytest

from server.cluster import LocalCluster
from server.embedded import EmbeddedStack
from tests.cluster_support import (
    CLUSTER_HOLD_TTL,
    SeatSocket,
    assert_invariants,
    make_session,
    make_user,
    outbox_backlog,
    seat_ids,
    wait_converged,
    wait_until,
)
from tests.conftest import bearer

pytestmark = [
    pytest.mark.cluster,
]


REST_HOLD_OUTCOMES = {(201, None), (409, "seats_unavailable"), (429, "hold_quota_exceeded")}


async def watchers_on_every_node(http: aiohttp.ClientSession, cluster: LocalCluster, session_id: str,
                                 per_node: int = 2, through_haproxy: int = 3) -> list[SeatSocket]:
    """Sockets opened straight on each node, plus some through HAProxy; all reconnect through HAProxy."""
    sockets = [SeatSocket(http, url, session_id, reconnect_url=cluster.url)
               for url in cluster.node_urls for _ in range(per_node)]
    sockets += [SeatSocket(http, cluster.url, session_id, reconnect_url=cluster.url) for _ in range(through_haproxy)]
    await asyncio.gather(*(s.connect() for s in sockets))
    assert {s.node for s in sockets} == set(cluster.node_ids)
    return sockets


async def close_all(sockets: list[SeatSocket]) -> None:
    await asyncio.gather(*(s.close() for s in sockets))


async def rest_hold(api: aiohttp.ClientSession, user: dict[str, Any], session_id: str,
                    seats: list[str]) -> tuple[int, dict[str, Any]]:
    async with api.post("/reservations", json={"userId": user["id"], "sessionId": session_id,
                                               "sessionSeatIds": seats}, headers=bearer(user["token"])) as resp:
        return resp.status, await resp.json()


async def test_every_socket_converges_after_200_random_operations(
        live_cluster: LocalCluster, api: aiohttp.ClientSession, base_settings: Any) -> None:
    rng = random.Random(20240404)
    session = await make_session(api, rows=8, per_row=10)
    sid = session["id"]
    users = [await make_user(api, f"Buyer {k}") for k in range(4)]
    outcomes: Counter[str] = Counter()
    async with aiohttp.ClientSession() as http:
        watchers = await watchers_on_every_node(http, live_cluster, sid)
        # one socket with a token per user, spread over the nodes: they hold and release over WebSocket
        players = [SeatSocket(http, live_cluster.node_urls[k % live_cluster.nodes], sid, token=u["token"])
                   for k, u in enumerate(users)]
        await asyncio.gather(*(p.connect() for p in players))
        pending: list[list[str]] = [[] for _ in users]  # reservation ids each user may still confirm/cancel
        try:
            for _ in range(200):
                k = rng.randrange(len(users))
                user, player = users[k], players[k]
                free = [seat for seat, (status, _) in player.seats.items() if status == "AVAILABLE"]
                op = rng.choices(["rest_hold", "ws_hold", "confirm", "cancel", "ws_release"], [3, 3, 2, 1, 1])[0]
                if op in ("confirm", "cancel", "ws_release") and not pending[k]:
                    op = "rest_hold"
                if op.endswith("hold") and not free:
                    continue
                if op == "rest_hold":
                    status, body = await rest_hold(api, user, sid, rng.sample(free, min(len(free), rng.randint(1, 3))))
                    # 409: someone else got a seat first; 429: this user holds too many seats at once
                    assert (status, body.get("code")) in REST_HOLD_OUTCOMES, body
                    outcomes[f"rest_hold {status} {body.get('code', '')}".strip()] += 1
                    if status == 201:
                        pending[k].append(body["id"])
                elif op == "ws_hold":
                    reply = await player.request({"type": "hold", "sessionSeatIds":
                                                  rng.sample(free, min(len(free), rng.randint(1, 3)))})
                    assert reply["type"] in ("hold.ok", "hold.rejected") or \
                        (reply["type"], reply.get("code")) == ("error", "hold_quota_exceeded"), reply
                    outcomes[f"{reply['type']} {reply.get('code', '')}".strip()] += 1
                    if reply["type"] == "hold.ok":
                        pending[k].append(reply["reservation"]["id"])
                elif op == "confirm":
                    rid = pending[k].pop(rng.randrange(len(pending[k])))
                    async with api.post(f"/reservations/{rid}/confirm",
                                        headers={**bearer(user["token"]), "Idempotency-Key": uuid.uuid4().hex}) as resp:
                        body = await resp.json()
                        assert resp.status in (201, 409, 410), body
                        outcomes[f"confirm {resp.status}"] += 1
                elif op == "cancel":
                    rid = pending[k].pop(rng.randrange(len(pending[k])))
                    async with api.delete(f"/reservations/{rid}", headers=bearer(user["token"])) as resp:
                        assert resp.status in (204, 409, 410), await resp.text()
                        outcomes[f"cancel {resp.status}"] += 1
                else:
                    rid = pending[k].pop(rng.randrange(len(pending[k])))
                    reply = await player.request({"type": "release", "reservationId": rid})
                    assert reply["type"] in ("release.ok", "error"), reply
                    outcomes[f"{reply['type']} {reply.get('code', '')}".strip()] += 1
                await asyncio.sleep(rng.choice([0, 0, 0.01, 0.05]))
            # whatever is still held expires (HOLD_TTL_SECONDS=2): the sweepers' releases are changes too
            await asyncio.sleep(CLUSTER_HOLD_TTL + 1)
            converged, truth = await wait_converged(api, sid, [*watchers, *players])
            assert converged, {s.node: sum(s.seats[k] != v for k, v in truth.items()) for s in watchers + players}
            assert all(s.changes_received > 0 for s in [*watchers, *players])
        finally:
            await close_all([*watchers, *players])

    assert outcomes["rest_hold 201"] and outcomes["hold.ok"] and outcomes["confirm 201"], outcomes
    assert outcomes["cancel 204"] + outcomes["release.ok"] > 0, outcomes
    con = await asyncpg.connect(base_settings.database_url)
    try:
        statuses = dict(await con.fetch("SELECT status, count(*) FROM reservations WHERE session_id = $1::uuid "
                                        "GROUP BY status", sid))
    finally:
        await con.close()
    assert statuses.get("EXPIRED", 0) > 0 and statuses.get("CONFIRMED", 0) > 0, statuses
    assert statuses.get("PENDING", 0) == 0, statuses
    await assert_invariants(base_settings.database_url, [sid])


async def test_kafka_outage_holds_keep_committing_and_sockets_converge_after_restart(
        live_cluster: LocalCluster, api: aiohttp.ClientSession, stack: EmbeddedStack, base_settings: Any) -> None:
    session = await make_session(api, rows=8, per_row=10)
    sid = session["id"]
    seats = await seat_ids(api, sid)
    users = [await make_user(api, f"Buyer {k}") for k in range(3)]
    fresh = iter(seats)  # one new seat per hold: every hold must commit, whatever the sockets show
    committed: list[tuple[float, dict[str, Any]]] = []
    refused: list[Any] = []
    async with aiohttp.ClientSession() as http:
        watchers = await watchers_on_every_node(http, live_cluster, sid)
        player = await SeatSocket(http, live_cluster.node_urls[1], sid, token=users[0]["token"]).connect()
        stop = asyncio.Event()

        async def hold_steadily() -> None:
            turn = 0
            while not stop.is_set():
                turn += 1
                seat = next(fresh)
                if turn % 2:
                    status, body = await rest_hold(api, users[turn % 3], sid, [seat])
                    (committed if status == 201 else refused).append((time.monotonic(), body))
                else:
                    reply = await player.request({"type": "hold", "sessionSeatIds": [seat]})
                    (committed if reply["type"] == "hold.ok" else refused).append((time.monotonic(), reply))
                await asyncio.sleep(0.2)

        holder = asyncio.create_task(hold_steadily())
        try:
            await asyncio.sleep(1)
            await asyncio.to_thread(stack["kafka"].kill)  # Tansu keeps nothing on disk: a crash is a stop
            outage_started = time.monotonic()
            await asyncio.sleep(10)
            outage_ended = time.monotonic()
            await asyncio.to_thread(stack["kafka"].start)
            await asyncio.sleep(1)
            stop.set()
            await holder
            assert refused == []
            assert sum(1 for t, _ in committed if outage_started < t < outage_ended) >= 20
            # within a few seconds of the restart every socket shows what PostgreSQL holds
            converged, truth = await wait_converged(api, sid, [*watchers, player], within=15)
            assert converged, {s.node: sum(s.seats[k] != v for k, v in truth.items()) for s in watchers}
        finally:
            stop.set()
            if not holder.done():
                holder.cancel()
            if not stack["kafka"].running:
                await asyncio.to_thread(stack["kafka"].start)
            await close_all([*watchers, player])
    await assert_invariants(base_settings.database_url, [sid], within=30)


async def test_killed_node_sockets_reconnect_elsewhere_and_its_outbox_is_published_by_the_others(
        live_cluster: LocalCluster, api: aiohttp.ClientSession, stack: EmbeddedStack, base_settings: Any) -> None:
    victim = 0
    victim_id = live_cluster.node_ids[victim]
    session = await make_session(api, rows=4, per_row=8)
    sid = session["id"]
    seats = await seat_ids(api, sid)
    user = await make_user(api)
    dsn = base_settings.database_url
    async with aiohttp.ClientSession() as http, \
            aiohttp.ClientSession(base_url=live_cluster.node_urls[victim]) as on_victim:
        watchers = await watchers_on_every_node(http, live_cluster, sid)
        player = await SeatSocket(http, live_cluster.node_urls[victim], sid, token=user["token"],
                                  reconnect_url=live_cluster.url).connect()
        doomed = [s for s in [*watchers, player] if s.node == victim_id]
        assert len(doomed) >= 3
        held: list[str] = []
        try:
            # With the broker down, the victim commits holds it cannot publish ...
            await asyncio.to_thread(stack["kafka"].kill)  # Tansu keeps nothing on disk: a crash is a stop
            for seat in seats[:3]:
                status, body = await rest_hold(on_victim, user, sid, [seat])
                assert status == 201, body
                held.append(body["id"])
            reply = await player.request({"type": "hold", "sessionSeatIds": [seats[3]]})
            assert reply["type"] == "hold.ok", reply
            held.append(reply["reservation"]["id"])
            assert await outbox_backlog(dsn, sid) >= 4
            # ... and dies with them unpublished
            assert live_cluster.kill_node(victim, signal.SIGKILL) == -signal.SIGKILL
        finally:
            await asyncio.to_thread(stack["kafka"].start)
        try:
            # its sockets reconnect through HAProxy to another node and start over from a snapshot
            async def moved() -> bool:
                return all(len(s.nodes) >= 2 and s.node not in ("", victim_id) for s in doomed)

            assert await wait_until(moved, within=20), [s.nodes for s in doomed]
            # the survivors' relays publish the dead node's rows
            async def published() -> bool:
                return await outbox_backlog(dsn, sid) == 0

            assert await wait_until(published, within=20)
            converged, truth = await wait_converged(api, sid, [*watchers, player], within=15)
            assert converged, {s.node: sum(s.seats[k] != v for k, v in truth.items()) for s in watchers}
        finally:
            await close_all([*watchers, player])

    # and its holds expire on time, released by the sweepers of the others
    con = await asyncpg.connect(dsn)
    try:
        async def expired() -> bool:
            rows = await con.fetch("SELECT status FROM reservations WHERE id = ANY($1::uuid[])", held)
            return {r["status"] for r in rows} == {"EXPIRED"}

        assert await wait_until(expired, within=CLUSTER_HOLD_TTL + 5)
    finally:
        await con.close()
    await assert_invariants(dsn, [sid])
