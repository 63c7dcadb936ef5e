"""A rush for best available in the biggest room (256 buyers at once on one node): the gate answers every buyer
within its timeout (0.5 s), not 503 for whole batches
of scripts that each cost milliseconds in a room of 5,000 seats."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from storage.best_seats import LayoutRow
from storage.redis_gate import RedisGate


async def test_256_buyers_at_once_in_a_5000_seat_room_are_all_answered(redis_client: Any) -> None:
    gate = RedisGate(redis_client)  # the node's default timeout
    session, rng = uuid.uuid4(), random.Random(18)
    layout = [LayoutRow(i, f"R{i}", tuple(uuid.uuid4() for _ in range(100))) for i in range(50)]
    ends = datetime.now(UTC) + timedelta(days=1)
    taken = [seat for row in layout for seat in row.seat_ids if rng.random() < 0.8]
    for start in range(0, len(taken), 200):
        assert await gate.hold(session, taken[start:start + 200], uuid.uuid4(), 60_000) == []
    await gate.write_layout(session, layout, ends)
    answers = await asyncio.gather(*(gate.hold_best(session, layout, ends, layout, 2, uuid.uuid4(), 30_000)
                                     for _ in range(256)), return_exceptions=True)
    failed = [repr(a) for a in answers if isinstance(a, BaseException)]
    assert not failed, (len(failed), failed[:3])
    chosen = [seat for a in answers if isinstance(a, list) for seat in a]
    assert len(chosen) == len(set(chosen)) == 512 and not set(chosen) & set(taken)
    await gate.close()
