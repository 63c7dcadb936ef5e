"""Coalescing of concurrent calls into batches (group commit), for the hot paths' round trips.

A `Batcher` keeps up to `max_inflight` batches going. A call that arrives while all of them are busy
waits for the next one and shares it with every other call that arrived meanwhile (at most `max_batch`).
At low load a call runs at once, alone, so batching adds no waiting of its own; under load the cost of a
round trip (a PostgreSQL transaction and its commit, a Redis request) is shared by the batch.

`run_batch(items)` returns one outcome per item, in order: a result, or an exception for that item alone.
If it raises, every item of the batch gets that exception.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(self, run_batch: Callable[[list[T]], Awaitable[list[R | BaseException]]], *, max_batch: int,
                 max_inflight: int, name: str, on_batch: Callable[[int], None] | None = None) -> None:
        self.run_batch = run_batch
        self.max_batch = max(1, max_batch)
        self.max_inflight = max(1, max_inflight)
        self.name = name
        self.on_batch = on_batch or (lambda size: None)
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._runners: set[asyncio.Task[None]] = set()  # references, so no runner is garbage-collected
        # Runners still draining. Counted down by the runner itself the moment it finds the queue empty:
        # a task's done-callback runs later, and a call queued in between would find every runner
        # "busy" and wait with none left to run it.
        self._active = 0

    async def submit(self, item: T) -> R:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, done))
        if self._active < self.max_inflight:
            self._active += 1
            task = asyncio.create_task(self._drain(), name=self.name)
            self._runners.add(task)
            task.add_done_callback(self._runners.discard)
        return await done

    def fail_waiting(self, exc: BaseException) -> int:
        """Fail every call still queued (not yet in a batch) with `exc`: when the service behind has just
        failed a batch, the calls behind it are answered now instead of each waiting to fail in turn."""
        failed = 0
        while self._queue:
            _, done = self._queue.popleft()
            if not done.done():
                done.set_exception(exc)
                failed += 1
        return failed

    async def _drain(self) -> None:
        try:
            await self._drain_queue()
        finally:
            self._active -= 1

    async def _drain_queue(self) -> None:
        while self._queue:
            taken = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            batch = [(item, done) for item, done in taken if not done.done()]  # callers that gave up: skipped
            if not batch:
                continue
            self.on_batch(len(batch))
            try:
                outcomes = await self.run_batch([item for item, _ in batch])
            except BaseException as exc:  # noqa: BLE001 - every waiting caller hears of it, then the next batch
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, done), outcome in zip(batch, outcomes, strict=True):
                if done.done():
                    continue
                if isinstance(outcome, BaseException):
                    done.set_exception(outcome)
                else:
                    done.set_result(outcome)
