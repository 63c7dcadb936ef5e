"""The Redis fast gate: all-or-nothing seat holds in one Lua call, turning losers away before PostgreSQL.

The gate can be wrong (expired, flushed, restarted); PostgreSQL is the arbiter. The gate only has to
be right often enough to keep losers off the database, and it is rebuilt from PostgreSQL whenever
Redis comes back empty. With REDIS_GATE=false the booking code is given `NoGate`, which has the same
interface and turns nobody away.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from storage.batching import Batcher
from storage.best_seats import LayoutRow
from storage.faults import REDIS_FAULTS
from storage.redis_keys import GATE_EPOCH, layout_key, seat_key, seat_key_prefix, sold_until_ms, taken_key

LUA = Path(__file__).parent / "lua"
log = logging.getLogger("boxoffice.gate")
TAKE_BACK_DELAYS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)  # seconds between tries to undo holds Redis did not answer
# Best-available scripts per round trip, and round trips in flight: a script costs milliseconds in a big room
# (O(seats)), and a round trip must end within the gate's timeout behind the others in flight, or a rush's holds
# all time out (503) and each one's take-back runs over every seat of the room. 8 scripts of 5 ms is 40 ms.
BEST_BATCH = 8
BEST_INFLIGHT = 1
# A room of at most SMALL_ROOM seats (a cinema's: 0.4-1 ms a script) is batched like the named holds, 32 scripts
# a round trip with 4 in flight: in 10 x 16 rooms 8 x 1 made a best-available hold 1.77x a named one.
SMALL_ROOM = 1000
SMALL_BEST_BATCH = 32
SMALL_BEST_INFLIGHT = 4


# (session_id, seat_id, value, expire_at_ms): one seat key as the gate should have it
GateEntry = tuple[uuid.UUID, uuid.UUID, str, int]


@dataclass
class Watch:
    """Seats a hold looks at without holding (a held seat's neighbours, for the no-orphan rule): after a hold the
    gate let through, `taken` holds those of them the gate has held or sold; None when the gate did not look."""

    seats: Sequence[uuid.UUID]
    taken: set[uuid.UUID] | None = None


class GateInconsistent(RedisError):
    """The session's taken set kept disagreeing with its seat keys (lua/hold_best.lua): repair, then retry."""


class SeatGate(Protocol):
    """What the booking code asks of a gate."""

    screens_holds: bool  # whether holds reach PostgreSQL screened (their seats then almost always free)

    async def hold(self, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID], owner: uuid.UUID,
                   ttl_ms: int, watch: Watch | None = None) -> list[uuid.UUID]: ...

    async def release(self, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID], owner: uuid.UUID) -> int: ...

    async def mark_sold(self, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID], owner: uuid.UUID,
                        until_ms: int) -> None: ...

    async def repair(self, true_owners: Callable[[], Awaitable[Sequence[GateEntry]]]) -> int: ...

    async def taken_among(self, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID]) -> set[uuid.UUID] | None:
        """Which of these seats the gate has held or sold; None when this gate cannot tell."""
        ...

    async def hold_best(self, session_id: uuid.UUID, layout: Sequence[LayoutRow], show_ends: datetime,
                        rows: Sequence[LayoutRow], quantity: int, owner: uuid.UUID,
                        ttl_ms: int) -> list[uuid.UUID] | None:
        """Choose the best `quantity` free seats of `rows` (of the session's `layout`) and hold them for `owner`;
        [] when fewer are free, None when this gate cannot choose (the booking code then chooses from
        PostgreSQL)."""
        ...


class NoGate:
    """REDIS_GATE=false: every hold goes to PostgreSQL, nothing is written to Redis."""

    screens_holds = False

    async def hold(self, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID], owner: uuid.UUID,
                   ttl_ms: int, watch: Watch | None = None) -> list[uuid.UUID]:
        return []

    async def release(self, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID], owner: uuid.UUID) -> int:
        return 0

    async def mark_sold(self, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID], owner: uuid.UUID,
                        until_ms: int) -> None:
        return None

    async def repair(self, true_owners: Callable[[], Awaitable[Sequence[GateEntry]]]) -> int:
        return 0

    async def taken_among(self, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID]) -> set[uuid.UUID] | None:
        return None

    async def hold_best(self, session_id: uuid.UUID, layout: Sequence[LayoutRow], show_ends: datetime,
                        rows: Sequence[LayoutRow], quantity: int, owner: uuid.UUID,
                        ttl_ms: int) -> list[uuid.UUID] | None:
        return None


class RedisGate:
    screens_holds = True

    def __init__(self, client: Redis | RedisCluster, timeout: float = 0.5) -> None:
        self.client = client
        self.timeout = timeout  # a hold's Redis round trip; beyond it the hold fails fast (and is taken back)
        self._take_backs: set[asyncio.Task[None]] = set()
        # register_script keeps the SHA and reloads the source on NOSCRIPT (after a restart or failover)
        self._hold = client.register_script((LUA / "hold.lua").read_text())
        self._release = client.register_script((LUA / "release.lua").read_text())
        self._mark_sold = client.register_script((LUA / "mark_sold.lua").read_text())
        self._restore = client.register_script((LUA / "restore.lua").read_text())
        self._hold_best = client.register_script((LUA / "hold_best.lua").read_text())
        # best-available scripts: pipelined like the holds, in smaller batches (BEST_BATCH, BEST_INFLIGHT)
        self._bests: Batcher[tuple[list[str], list[str | int]], Any] = Batcher(
            self._best_many, max_batch=BEST_BATCH, max_inflight=BEST_INFLIGHT, name="gate-bests")
        self._small_bests: Batcher[tuple[list[str], list[str | int]], Any] = Batcher(
            self._best_many, max_batch=SMALL_BEST_BATCH, max_inflight=SMALL_BEST_INFLIGHT, name="gate-bests-small")
        # holds asked for while others are in flight share one pipelined round trip (storage.batching)
        self._holds: Batcher[tuple[list[str], list[str | int]], list[int]] = Batcher(
            self._hold_many, max_batch=64, max_inflight=4, name="gate-holds")

    @staticmethod
    def keys(session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID]) -> list[str]:
        """The keys a gate script gets: the session's taken set, then the seats' keys."""
        return [taken_key(session_id), *(seat_key(session_id, s) for s in seat_ids)]

    async def hold(self, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID], owner: uuid.UUID,
                   ttl_ms: int, watch: Watch | None = None) -> list[uuid.UUID]:
        """Hold every seat for `owner`, or none; return the seats already taken (empty on success). With `watch`,
        the same script says which of its seats have a key, in the same round trip."""
        keys = self.keys(session_id, seat_ids)
        args: list[str | int] = [str(owner), ttl_ms]
        if watch is not None and watch.seats:
            keys += [seat_key(session_id, s) for s in watch.seats]
            args.append(len(watch.seats))
        answer = await self._holds.submit((keys, args))
        if watch is not None and not any(int(i) > 0 for i in answer):
            watch.taken = {watch.seats[-int(i) - 1] for i in answer}
        return [seat_ids[int(i) - 1] for i in answer if int(i) > 0]

    async def _hold_many(self, holds: list[tuple[list[str], list[str | int]]]) -> list[list[int] | BaseException]:
        """Run hold.lua for each (keys, args), in one round trip.

        The time limit covers the round trip, not the wait in the queue before it. When Redis does not
        answer in time, the holds of this batch may have run all the same: they are taken back in the
        background. When Redis cannot be reached at all, every hold still queued fails at once too.
        """
        try:
            async with asyncio.timeout(self.timeout):
                return await self._run_each(self._hold, holds)
        except (TimeoutError, RedisConnectionError, RedisTimeoutError, OSError) as exc:
            # Redis is not there (refused, reset): nobody queued waits. Not after a timeout -- TimeoutError is
            # an OSError too, and one slow batch is no reason to fail every hold queued behind it (a rush
            # on a saturated node answered hundreds of holds 503 `redis_unavailable` per slow batch).
            if isinstance(exc, (RedisConnectionError, OSError)) and not isinstance(exc, TimeoutError):
                self._holds.fail_waiting(exc)
            task = asyncio.create_task(self._take_back([(keys, [args[0]]) for keys, args in holds]))
            self._take_backs.add(task)
            task.add_done_callback(self._take_backs.discard)
            raise

    async def hold_best(self, session_id: uuid.UUID, layout: Sequence[LayoutRow], show_ends: datetime,
                        rows: Sequence[LayoutRow], quantity: int, owner: uuid.UUID,
                        ttl_ms: int) -> list[uuid.UUID] | None:
        """Choose and hold in one script (lua/hold_best.lua), so the choice is never stale. The script reads the
        session's taken set and its layout (written here the first time, or again after a flush)."""
        keys = [taken_key(session_id), layout_key(session_id)]
        if sold_until_ms(show_ends) <= time.time() * 1000:
            # the show is long over: its layout key would expire as it is written. PostgreSQL answers
            # (session_started), not a gate that cannot hold the layout (503)
            return None
        args: list[str | int] = [str(owner), ttl_ms, quantity, seat_key_prefix(session_id)]
        if len(rows) != len(layout):
            args += [row.index for row in rows]
        batcher = self._small_bests if sum(len(row.seat_ids) for row in layout) <= SMALL_ROOM else self._bests
        for _ in range(2):
            try:
                chosen = await batcher.submit((keys, args))
            except (TimeoutError, RedisConnectionError, RedisTimeoutError, OSError):
                # the script may have run all the same: take back whatever it held (compare-and-delete by owner)
                every_seat = [s for row in layout for s in row.seat_ids]
                task = asyncio.create_task(self._take_back([(self.keys(session_id, every_seat), [str(owner)])]))
                self._take_backs.add(task)
                task.add_done_callback(self._take_backs.discard)
                raise
            if chosen == -1:
                await self.write_layout(session_id, layout, show_ends)
                continue
            if chosen == -2:
                raise GateInconsistent("the taken set disagrees with the seat keys")
            return [uuid.UUID(i.decode() if isinstance(i, bytes) else i) for i in chosen]
        raise GateInconsistent("the layout could not be written")

    async def write_layout(self, session_id: uuid.UUID, layout: Sequence[LayoutRow], show_ends: datetime) -> None:
        """The session's seats for lua/hold_best.lua: row lengths, the ids in seat order, each id's position.
        Kept until the show is over (as sold seats' keys are)."""
        mapping: dict[str, str | int] = {"rows": ",".join(str(len(row.seat_ids)) for row in layout),
                                         "ids": "".join(str(s) for row in layout for s in row.seat_ids)}
        position = 0
        for row in layout:
            for seat in row.seat_ids:
                mapping[str(seat)] = position
                position += 1
        key = layout_key(session_id)
        async with asyncio.timeout(self.timeout):
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
            pipe.pexpireat(key, sold_until_ms(show_ends))
            await pipe.execute()

    async def _best_many(self, calls: list[tuple[list[str], list[str | int]]]) -> list[Any]:
        """Run hold_best.lua for each call, pipelined in one round trip (each script still atomic on its own,
        so each choice sees the seats the previous one took). A lost answer is taken back by `hold_best`."""
        async with asyncio.timeout(self.timeout):
            return await self._run_each(self._hold_best, calls)

    async def _run_each(self, script: AsyncScript, calls: Sequence[tuple[list[str], list[str | int]]]) -> list[Any]:
        """Run `script` once per (keys, args): alone, or pipelined (each call still atomic on its own).
        A call refused with NOSCRIPT (Redis restarted or flushed its scripts) is run again alone, which
        loads the script."""
        if len(calls) == 1:
            keys, args = calls[0]
            return [await script(keys=keys, args=args)]
        if isinstance(self.client, RedisCluster):
            return await self._run_each_on_cluster(script, calls)
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        outcomes: list[Any] = await pipe.execute(raise_on_error=False)
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, NoScriptError):
                keys, args = calls[i]
                outcomes[i] = await script(keys=keys, args=args)
        return outcomes

    @staticmethod
    async def _run_each_on_cluster(script: AsyncScript,
                                   calls: Sequence[tuple[list[str], list[str | int]]]) -> list[Any]:
        """A cluster pipeline refuses scripts (each call may go to another master): the calls run concurrently
        instead, each on its own slot's master. A master that cannot be reached fails the batch, as a pipeline's
        lost connection would; any other refusal (OOM, CLUSTERDOWN) is that call's own outcome."""
        outcomes: list[Any] = await asyncio.gather(*(script(keys=keys, args=args) for keys, args in calls),
                                                   return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, (RedisConnectionError, RedisTimeoutError, OSError)):
                raise outcome
        return outcomes

    async def _take_back(self, holds: list[tuple[list[str], list[str | int]]]) -> None:
        """Delete the keys holds whose answer never came may have set, once Redis answers again (retried with
        backoff for as long as a hold lives); a key of another owner is never touched (compare-and-delete)."""
        for delay in TAKE_BACK_DELAYS:
            await asyncio.sleep(max(delay, self.timeout))
            try:
                async with asyncio.timeout(self.timeout):
                    await self._run_each(self._release, holds)
                return
            except REDIS_FAULTS:
                continue
        log.warning("could not take back the gate keys of %d holds; they expire with their TTL", len(holds))

    async def close(self) -> None:
        """Stop the take-backs still waiting (the app is stopping; the keys expire with their TTL)."""
        for task in list(self._take_backs):
            task.cancel()
        await asyncio.gather(*self._take_backs, return_exceptions=True)

    async def release(self, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID], owner: uuid.UUID) -> int:
        """Delete only the keys `owner` has (compare-and-delete), and their taken-set entries."""
        if not seat_ids:
            return 0
        return int(await self._release(keys=self.keys(session_id, seat_ids), args=[str(owner)]))

    async def taken_among(self, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID]) -> set[uuid.UUID] | None:
        """Which of these seats have a key (held or sold): one MGET, bounded by the gate's timeout."""
        if not seat_ids:
            return set()
        async with asyncio.timeout(self.timeout):
            values = await self.client.mget([seat_key(session_id, s) for s in seat_ids])
        return {seat for seat, value in zip(seat_ids, values, strict=True) if value is not None}

    async def mark_sold(self, session_id: uuid.UUID, seat_ids: Sequence[uuid.UUID], owner: uuid.UUID,
                        until_ms: int) -> None:
        if seat_ids:
            await self._mark_sold(keys=self.keys(session_id, seat_ids), args=[str(owner), until_ms])

    async def repair(self, true_owners: Callable[[], Awaitable[Sequence[GateEntry]]]) -> int:
        """Write the seat keys PostgreSQL says the gate should have (`true_owners`, read only here)."""
        return await self.restore(await true_owners())

    async def restore(self, entries: Sequence[GateEntry], batch: int = 500) -> int:
        """Re-create keys from (session_id, seat_id, value, expire_at_ms) without overwriting live ones."""
        restored = 0
        for start in range(0, len(entries), batch):
            chunk = entries[start:start + batch]
            # group by session so each call stays within one hash slot
            by_session: dict[uuid.UUID, list[GateEntry]] = {}
            for entry in chunk:
                by_session.setdefault(entry[0], []).append(entry)
            for session_id, items in by_session.items():
                args: list[str | int] = []
                for _, _, value, expire_at in items:
                    args += [value, expire_at]
                restored += int(await self._restore(keys=self.keys(session_id, [i[1] for i in items]), args=args))
        return restored

    async def epoch_keys(self) -> list[str]:
        """Where the rebuild's mark lives: one key on a single Redis; on a cluster one key on every master
        (hash tags picked for the slots each one serves), since any master may come back empty alone."""
        client = self.client
        if not isinstance(client, RedisCluster):
            return [GATE_EPOCH]
        await client.initialize()  # the map of masters (read once, on first use)
        masters = {node.name for node in client.get_primaries()}
        keys: dict[str, str] = {}
        tag = 0
        while len(keys) < len(masters) and tag < 100_000:
            key = f"{GATE_EPOCH}:{{e{tag}}}"
            node = client.get_node_from_key(key)
            if node is not None:
                keys.setdefault(node.name, key)
            tag += 1
        return sorted(keys.values())

    async def epoch(self) -> str | None:
        """The mark of the last rebuild, or None if any Redis (any master of a cluster) has lost it."""
        values = [await self.client.get(key) for key in await self.epoch_keys()]
        if any(value is None for value in values):
            return None
        value = values[0]
        return value.decode() if isinstance(value, bytes) else str(value)

    async def new_epoch(self) -> str:
        epoch = f"{int(time.time() * 1000)}-{secrets.token_hex(4)}"
        for key in await self.epoch_keys():
            await self.client.set(key, epoch)
        return epoch
