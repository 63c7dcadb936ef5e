"""storage.batching.Batcher: concurrent calls coalesced into batches, no call ever left behind."""

from __future__ import annotations

import asyncio

import pytest

from storage.batching import Batcher


async def test_calls_made_the_moment_the_previous_ones_are_answered_are_all_run() -> None:
    """Callers that ask again the moment they are answered are all run, in batches of at most max_batch.
    (The lost-call bug itself is pinned by the next test's last call, which hung on the old code.)"""
    sizes: list[int] = []

    async def echo(items: list[int]) -> list[int | BaseException]:
        sizes.append(len(items))
        await asyncio.sleep(0)
        return list(items)

    batcher: Batcher[int, int] = Batcher(echo, max_batch=4, max_inflight=2, name="test")

    async def chain(n: int) -> None:
        for i in range(n):
            assert await batcher.submit(i) == i

    await asyncio.wait_for(asyncio.gather(*(chain(100) for _ in range(5))), 5)
    assert sum(sizes) == 500 and max(sizes) <= 4
    assert max(sizes) > 1  # callers queued behind the two runners were batched
    # and a call right after everything was answered, while the runners may be just ending
    async with asyncio.timeout(2):
        assert await batcher.submit(7) == 7


async def test_each_call_gets_its_own_outcome_and_a_failed_batch_fails_each_caller() -> None:
    async def run(items: list[int]) -> list[int | BaseException]:
        if 13 in items:
            raise RuntimeError("batch broke")
        return [ValueError(i) if i % 2 else i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(run, max_batch=8, max_inflight=1, name="test")
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
    assert outcomes[0::2] == [0, 20, 40]
    assert [str(e) for e in outcomes[1::2]] == ["1", "3", "5"]
    with pytest.raises(RuntimeError, match="batch broke"):
        async with asyncio.timeout(2):  # not wait_for: its extra task would give the old runner time to go
            await batcher.submit(13)
    async with asyncio.timeout(2):
        assert await batcher.submit(2) == 20  # and it goes on. Calls here hung when the
    # last runner counted itself out one loop turn after ending (the call sat queued with no runner)
