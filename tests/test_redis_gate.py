"""The Lua scripts of the Redis gate, run directly against a real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from storage.redis_gate import RedisGate
from storage.redis_keys import seat_key
from tests.cluster_support import wait_until


def ids(n: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(n)]


async def test_hold_is_all_or_nothing(redis_client: Any) -> None:
    gate = RedisGate(redis_client)
    session, seats = uuid.uuid4(), ids(4)
    first, second = uuid.uuid4(), uuid.uuid4()

    assert await gate.hold(session, seats[:2], first, 30_000) == []
    assert await redis_client.get(seat_key(session, seats[0])) == f"H:{first}".encode()
    assert 0 < await redis_client.pttl(seat_key(session, seats[0])) <= 30_000

    # overlaps one seat: refused, and none of its other seats were set
    assert await gate.hold(session, [seats[2], seats[1], seats[3]], second, 30_000) == [seats[1]]
    assert await redis_client.exists(seat_key(session, seats[2]), seat_key(session, seats[3])) == 0


async def test_release_only_deletes_the_owners_keys(redis_client: Any) -> None:
    gate = RedisGate(redis_client)
    session, seats = uuid.uuid4(), ids(3)
    owner, other = uuid.uuid4(), uuid.uuid4()
    await gate.hold(session, seats[:2], owner, 30_000)
    await gate.hold(session, seats[2:], other, 30_000)

    assert await gate.release(session, seats, owner) == 2
    assert await redis_client.exists(seat_key(session, seats[0])) == 0
    assert await redis_client.get(seat_key(session, seats[2])) == f"H:{other}".encode()
    assert await gate.release(session, seats, owner) == 0


async def test_mark_sold_and_restore(redis_client: Any) -> None:
    gate = RedisGate(redis_client)
    session, seats = uuid.uuid4(), ids(3)
    owner, live = uuid.uuid4(), uuid.uuid4()
    until = int(time.time() * 1000) + 60_000
    await gate.hold(session, seats[:2], owner, 30_000)
    await gate.mark_sold(session, seats[:2], owner, until)
    assert await redis_client.get(seat_key(session, seats[0])) == f"S:{owner}".encode()
    assert 30_000 < await redis_client.pttl(seat_key(session, seats[0])) <= 60_000
    assert await gate.hold(session, seats[1:], uuid.uuid4(), 30_000) == [seats[1]]

    # restore never overwrites a live key
    await gate.hold(session, seats[2:], live, 30_000)
    restored = await gate.restore([(session, seats[2], f"H:{uuid.uuid4()}", until),
                                   (session, seats[0], f"S:{owner}", until)])
    assert restored == 0
    await redis_client.delete(seat_key(session, seats[0]))
    assert await gate.restore([(session, seats[0], f"S:{owner}", until)]) == 1
    assert await redis_client.get(seat_key(session, seats[2])) == f"H:{live}".encode()


def test_keys_of_one_session_share_a_hash_tag() -> None:
    """Redis Cluster hashes only the {...} part: one session's seats land in one slot."""
    session = uuid.uuid4()
    tags = {seat_key(session, s).split("{", 1)[1].split("}", 1)[0] for s in ids(5)}
    assert tags == {f"s:{session}"}


# Keeps Redis busy for ARGV[1] microseconds: every other client's request waits behind it
BUSY_SCRIPT = """local t = redis.call('TIME'); local start = t[1] * 1000000 + t[2]
while true do
  local n = redis.call('TIME'); if n[1] * 1000000 + n[2] - start > tonumber(ARGV[1]) then return 1 end
end"""


async def test_a_slow_round_trip_fails_its_own_batch_not_the_holds_queued_behind_it(
        redis_client: Any, base_settings: Any) -> None:
    """Redis is busy for 0.3 s (a long script from another client). The holds whose round trip outlasts the
    gate's 0.2 s fail (the request answers 503 redis_unavailable) and are taken back once Redis answers; a
    hold queued behind them is not failed with them: it goes when a batch is free and is held.
    (TimeoutError is an OSError: the gate once took a timeout for a refused connection and failed every
    queued hold at once -- hundreds of 503s per slow batch in a rush on a saturated node.)"""
    gate = RedisGate(redis_client, timeout=0.2)
    session, seats, owners = uuid.uuid4(), ids(5), ids(5)
    other = Redis.from_url(base_settings.redis_url)
    try:
        busy = asyncio.create_task(other.eval(BUSY_SCRIPT, 0, 300_000))
        await asyncio.sleep(0.02)  # Redis is in the script
        in_flight = []
        for seat, owner in zip(seats[:4], owners[:4], strict=True):  # a batch each: all 4 of the gate's in flight
            in_flight.append(asyncio.create_task(gate.hold(session, [seat], owner, 30_000)))
            await asyncio.sleep(0.005)
        queued = asyncio.create_task(gate.hold(session, [seats[4]], owners[4], 30_000))
        outcomes = await asyncio.gather(*in_flight, return_exceptions=True)
        timed_out = [seat for seat, o in zip(seats, outcomes, strict=False) if isinstance(o, TimeoutError)]
        assert timed_out, outcomes  # the first batch, at least, outlasted the gate's time
        assert all(o == [] for o in outcomes if not isinstance(o, TimeoutError))
        assert await queued == []
        assert await redis_client.get(seat_key(session, seats[4])) == f"H:{owners[4]}".encode()
        await busy
        # the timed-out holds ran once Redis was free; their keys are taken back (compare-and-delete)
        async def taken_back() -> bool:
            return await redis_client.exists(*(seat_key(session, s) for s in timed_out)) == 0

        assert await wait_until(taken_back, within=3)
    finally:
        await gate.close()
        await other.aclose()
