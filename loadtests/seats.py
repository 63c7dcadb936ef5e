"""Seats as a client sees them: how a buyer picks the best free seats, and the seat map a client keeps
from a snapshot and versioned changes (the contract's convergence rule). Pure functions and data: no I/O."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# ---- choosing seats --------------------------------------------------------------------------------


def seat_place(seat: Mapping[str, Any]) -> tuple[str, int]:
    """(rowLabel, seatNumber) of a seat from the REST seat map (nested `seat`) or a socket snapshot (flat)."""
    inner = seat.get("seat") or seat
    return str(inner["rowLabel"]), int(inner["seatNumber"])


def pick_best_seats(seats: Sequence[Mapping[str, Any]], count: int, rng: random.Random,
                    jitter: float = 2.0, all_seats: Sequence[Mapping[str, Any]] | None = None) -> list[str]:
    """`count` available seats as a buyer picks them: the best free seat (middle rows, centre of the row,
    loosened by `jitter` so not everybody wants the very same one) and its free neighbours in that row.

    `seats` are the available seats; `all_seats` (default: `seats`) gives the room's shape, so "middle"
    means the middle of the room even when the centre is already gone. Everybody aims at the same
    few seats: that is where the contention of a rush comes from.
    """
    if not seats or count <= 0:
        return []
    shape = all_seats or seats
    rows = sorted({seat_place(s)[0] for s in shape})
    row_index = {label: i for i, label in enumerate(rows)}
    numbers = [seat_place(s)[1] for s in shape]
    mid_row = (len(rows) - 1) / 2
    mid_seat = (min(numbers) + max(numbers)) / 2

    def score(seat: Mapping[str, Any]) -> float:
        row, number = seat_place(seat)
        return abs(row_index.get(row, 0) - mid_row) + 0.6 * abs(number - mid_seat) + rng.uniform(0, jitter)

    by_place = {seat_place(s): str(s["id"]) for s in seats}
    anchor_row, anchor_number = seat_place(min(seats, key=score))
    chosen = [by_place[(anchor_row, anchor_number)]]
    # grow the group left and right in the anchor's row, nearest first
    for step in range(1, max(numbers) + 1):
        for number in (anchor_number - step, anchor_number + step):
            if len(chosen) < count and (anchor_row, number) in by_place:
                chosen.append(by_place[(anchor_row, number)])
    if len(chosen) < count:  # the row is full around the anchor: take the next best seats anywhere
        rest = sorted((s for s in seats if str(s["id"]) not in chosen), key=score)
        chosen += [str(s["id"]) for s in rest[: count - len(chosen)]]
    return chosen


# ---- seat maps kept by clients ---------------------------------------------------------------------


@dataclass
class SeatMap:
    """A client's picture of one session: seat id -> (status, version), built the way the contract says:
    a snapshot, then changes applied only when their version is newer than the one held."""

    seats: dict[str, tuple[str, int]] = field(default_factory=dict)
    places: dict[str, tuple[str, int]] = field(default_factory=dict)  # seat id -> (rowLabel, seatNumber)
    applied: int = 0
    stale: int = 0  # changes that arrived with a version not newer than the one held (duplicates, reordering)

    def load(self, seats: Iterable[Mapping[str, Any]]) -> None:
        seats = list(seats)
        self.seats = {str(s["id"]): (str(s["status"]), int(s["version"])) for s in seats}
        self.places = {str(s["id"]): seat_place(s) for s in seats if "rowLabel" in s or "seat" in s}

    def with_status(self, status: str) -> list[dict[str, Any]]:
        """The seats in `status`, shaped like a snapshot's seats (for `pick_best_seats`)."""
        return [{"id": seat_id, "rowLabel": self.places[seat_id][0], "seatNumber": self.places[seat_id][1]}
                for seat_id, (state, _) in self.seats.items() if state == status and seat_id in self.places]

    def shape(self) -> list[dict[str, Any]]:
        return [{"id": i, "rowLabel": row, "seatNumber": n} for i, (row, n) in self.places.items()]

    def apply(self, changes: Iterable[Mapping[str, Any]]) -> None:
        for change in changes:
            seat_id, version = str(change["id"]), int(change["version"])
            held = self.seats.get(seat_id)
            if held is not None and held[1] >= version:
                self.stale += 1
                continue
            self.seats[seat_id] = (str(change["status"]), version)
            self.applied += 1

    def differences(self, truth: Mapping[str, tuple[str, int]]) -> list[dict[str, Any]]:
        """Every seat where this map and `truth` (e.g. GET /sessions/{id}/seats) disagree."""
        out = []
        for seat_id in sorted(set(self.seats) | set(truth)):
            mine, real = self.seats.get(seat_id), truth.get(seat_id)
            if mine != real:
                out.append({"seat": seat_id, "client": mine, "server": real})
        return out

    @staticmethod
    def from_rest(body: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
        return {str(s["id"]): (str(s["status"]), int(s["version"])) for s in body["seats"]}
