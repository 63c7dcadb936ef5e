"""The Lua scripts of the Redis gate, run directly against a real Redis."""

from __future__ import annotations

import time
import uuid
from typing import Any

from storage.redis_gate import RedisGate
from storage.redis_keys import seat_key


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
