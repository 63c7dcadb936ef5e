"""Best available seats: the reference chooser (pure Python) that `lua/hold_best.lua` implements in Redis.

The map is a list of rows; a row is its index in the room (counted from the front, 0-based) and its seats
in seat order, each taken or free. The choice of N seats, in order of preference:

1. **One block in one row that strands no seat.** A block of N free seats side by side whose left and right
   gaps (the free seats between the block and the next taken seat or the row's end) are never exactly one.
   Among those, the lowest *cost*, then the front-most row, then the left-most start.
2. Otherwise, **the fewest blocks that strand no seat**, then the lowest cost (at most one block per run of
   free seats: taking k of a run's L free seats strands none exactly when L - k is not 1).
3. Otherwise (every choice strands a seat): the single block of (1) with the fewest stranded seats; when no
   row has N free side by side, the best block of the longest run that fits, again and again.

The cost of a seat is `ROW_WEIGHT * |2*row - (rows - 1)| + |2*seat - (seats_in_row - 1)|` (doubled so it
stays an integer): zero at the centre of the middle row; one row away weighs as much as two seats aside.
A block's cost is the sum of its seats' costs. Fewer than N free seats: no choice (None).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

ROW_WEIGHT = 2

# a seat on the map: (index of the row in the map's list, index of the seat in its row)
Place = tuple[int, int]


@dataclass(frozen=True, slots=True)
class MapRow:
    index: int  # the row's place in the room, from the front (0-based): what its cost is measured by
    taken: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class LayoutRow:
    """One row of a session's seats in seat order, as the booking code knows it."""

    index: int
    label: str
    seat_ids: tuple[uuid.UUID, ...]


def seat_cost(row_index: int, total_rows: int, seat: int, row_length: int) -> int:
    return ROW_WEIGHT * abs(2 * row_index - (total_rows - 1)) + abs(2 * seat - (row_length - 1))


def _gap(taken: Sequence[bool], start: int, step: int) -> int:
    n, i = 0, start
    while 0 <= i < len(taken) and not taken[i]:
        n, i = n + 1, i + step
    return n


def _best_block(rows: Sequence[MapRow], taken: list[list[bool]], total_rows: int,
                size: int) -> tuple[int, int, int] | None:
    """(map row, start, stranded seats) of the best block of `size` free seats, or None."""
    best: tuple[int, int, int, int, int] | None = None  # (stranded, cost, map row, start, row index)
    for m, row in enumerate(rows):
        seats = taken[m]
        length = len(seats)
        run = 0
        for end in range(length):
            run = 0 if seats[end] else run + 1
            if run < size:
                continue
            start = end - size + 1
            stranded = (_gap(seats, start - 1, -1) == 1) + (_gap(seats, end + 1, 1) == 1)
            cost = sum(seat_cost(row.index, total_rows, c, length) for c in range(start, end + 1))
            key = (stranded, cost, row.index, start, m)
            if best is None or key < best:
                best = key
    if best is None:
        return None
    return best[4], best[3], best[0]


def _longest_run(taken: list[list[bool]]) -> int:
    longest = 0
    for seats in taken:
        run = 0
        for t in seats:
            run = 0 if t else run + 1
            longest = max(longest, run)
    return longest


def _greedy_blocks(rows: Sequence[MapRow], total_rows: int, quantity: int) -> list[Place] | None:
    """The best block of the longest run that fits, again and again (strands what it must)."""
    taken = [list(r.taken) for r in rows]
    chosen: list[Place] = []
    while len(chosen) < quantity:
        size = min(quantity - len(chosen), _longest_run(taken))
        if size == 0:
            return None
        block = _best_block(rows, taken, total_rows, size)
        assert block is not None
        m, start, _ = block
        for c in range(start, start + size):
            taken[m][c] = True
            chosen.append((m, c))
    return sorted(chosen)


def _runs(rows: Sequence[MapRow]) -> list[tuple[int, int, int]]:
    """Every run of free seats: (map row, first seat, length), row after row."""
    runs = []
    for m, row in enumerate(rows):
        c = 0
        while c < len(row.taken):
            if row.taken[c]:
                c += 1
                continue
            start = c
            while c < len(row.taken) and not row.taken[c]:
                c += 1
            runs.append((m, start, c - start))
    return runs


def _split_without_stranding(rows: Sequence[MapRow], total_rows: int, quantity: int) -> list[Place] | None:
    """The fewest blocks (then the lowest cost) that strand no seat, at most one block per run of free seats
    (taking k of a run's L seats strands none exactly when L - k != 1, so one block per run always suffices)."""
    # dp[j]: (blocks, cost, [(run, start, k)]) taking j seats from the runs seen so far
    dp: list[tuple[int, int, list[tuple[int, int, int]]] | None] = [None] * (quantity + 1)
    dp[0] = (0, 0, [])
    for m, first, length in _runs(rows):
        row = rows[m]
        options = []  # (k, cost, start) of the best stranding-free block of k seats in this run
        for k in range(1, min(length, quantity) + 1):
            if length - k == 1:
                continue
            best: tuple[int, int] | None = None
            for start in range(first, first + length - k + 1):
                if start - first == 1 or first + length - (start + k) == 1:
                    continue
                cost = sum(seat_cost(row.index, total_rows, c, len(row.taken)) for c in range(start, start + k))
                if best is None or cost < best[0]:
                    best = (cost, start)
            if best is not None:
                options.append((k, best[0], best[1]))
        new = list(dp)
        for j in range(quantity + 1):
            here = dp[j]
            if here is None:
                continue
            for k, cost, start in options:
                if j + k > quantity:
                    continue
                candidate = (here[0] + 1, here[1] + cost, here[2] + [(m, start, k)])
                current = new[j + k]
                if current is None or candidate[:2] < current[:2]:
                    new[j + k] = candidate
        dp = new
    done = dp[quantity]
    if done is None:
        return None
    return sorted((m, c) for m, start, k in done[2] for c in range(start, start + k))


def choose(rows: Sequence[MapRow], total_rows: int, quantity: int) -> list[Place] | None:
    """The seats to hold, as (map row, seat) places, or None when fewer than `quantity` are free."""
    if quantity < 1 or sum(not t for r in rows for t in r.taken) < quantity:
        return None
    taken = [list(r.taken) for r in rows]
    single = _best_block(rows, taken, total_rows, quantity)
    if single is not None and single[2] == 0:
        return [(single[0], c) for c in range(single[1], single[1] + quantity)]
    split = _split_without_stranding(rows, total_rows, quantity)
    if split is not None:
        return split
    if single is not None:
        return [(single[0], c) for c in range(single[1], single[1] + quantity)]
    return _greedy_blocks(rows, total_rows, quantity)


# ------------------------------------------------------------ brute force (for the tests)

def stranded_after(rows: Sequence[MapRow], chosen: Sequence[Place]) -> int:
    """Free seats a choice leaves alone between taken seats or a taken seat and the row's end that were not
    alone before."""
    picked = set(chosen)
    count = 0
    for m, row in enumerate(rows):
        before = list(row.taken)
        after = [t or (m, c) in picked for c, t in enumerate(before)]
        for c in range(len(before)):
            if not after[c] and _alone(after, c) and not _alone(before, c):
                count += 1
    return count


def _alone(taken: Sequence[bool], c: int) -> bool:
    left = c == 0 or taken[c - 1]
    right = c == len(taken) - 1 or taken[c + 1]
    return left and right and len(taken) > 1  # a row of one seat strands nobody


def block_count(chosen: Sequence[Place]) -> int:
    places = sorted(chosen)
    return sum(1 for i, p in enumerate(places) if i == 0 or p != (places[i - 1][0], places[i - 1][1] + 1))


def brute_force(rows: Sequence[MapRow], total_rows: int, quantity: int) -> list[Place] | None:
    """Every set of `quantity` free seats, ranked by (stranded seats, blocks, cost, places)."""
    free = [(m, c) for m, r in enumerate(rows) for c, t in enumerate(r.taken) if not t]
    best: tuple[int, int, int, list[Place]] | None = None
    for combo in combinations(free, quantity):
        places = sorted(combo)
        cost = sum(seat_cost(rows[m].index, total_rows, c, len(rows[m].taken)) for m, c in places)
        key = (stranded_after(rows, places), block_count(places), cost,
               [(rows[m].index, c) for m, c in places])
        if best is None or key < best:
            best = key
    if best is None:
        return None
    index_to_map = {r.index: m for m, r in enumerate(rows)}
    return [(index_to_map[i], c) for i, c in best[3]]
