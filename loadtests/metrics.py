"""Counters of a load run that Locust's own statistics do not keep, merged across processes afterwards.

Each Locust process (and the runner's own watchers) records into a `Metrics`: hold outcomes and
latencies per second, errors by code, commit->arrival delays of broadcasts, and a few named counts.
Each process writes its `Metrics` as JSON into the report folder; the runner merges the files. Latencies
are kept as histograms of whole milliseconds, so merging is exact and files stay small.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

CONFLICT_CODE = "seats_unavailable"
PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}


SPEED_PROBE_STEPS = 5_000_000


def speed_probe() -> float:
    """Seconds this machine takes for a fixed pure-Python loop (5 million additions), best of three.

    Benchmarks print it and store it with their figures: a shared machine's speed drifts by 2-4x from
    hour to hour (docs/performance.md), so figures from different runs are compared with it in view.
    """
    best = float("inf")
    for _ in range(3):
        started, total = time.perf_counter(), 0
        for step in range(SPEED_PROBE_STEPS):
            total += step
        best = min(best, time.perf_counter() - started)
    return round(best, 3)


def percentile(hist: Mapping[int, int], q: float) -> float | None:
    """The q-quantile of a histogram {value: count} (None when empty)."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return float(value)
    return float(max(hist))


def percentiles(hist: Mapping[int, int]) -> dict[str, float | None]:
    return {name: percentile(hist, q) for name, q in PERCENTILES.items()} | {"samples": sum(hist.values())}


class Metrics:
    """One process's counters (thread/greenlet safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # epoch second -> {"ok", "conflict", "error": counts, "lat": {ms: count}} of hold attempts
        self.timeline: dict[int, dict[str, Any]] = {}
        self.hold_latency: dict[str, Counter[int]] = {}  # transport ("REST", "WS") -> {ms: count}
        self.errors: Counter[str] = Counter()  # "409 seats_unavailable" / "WS seats_unavailable" -> count
        self.errors_by_request: dict[str, Counter[str]] = {}
        self.broadcast_ms: Counter[int] = Counter()
        self.counts: Counter[str] = Counter()
        # the waiting room, per buyer: [session, position, last "not admitted" asked at, admitted answered at]
        # (epoch seconds; 0: never) -- what `queue_out_of_order` judges
        self.queue_places: list[list[Any]] = []

    def hold(self, transport: str, ok: bool, code: str, latency_ms: float, error_key: str = "") -> None:
        """One hold attempt: `code` is the contract's error code ("" when it succeeded)."""
        ms = max(0, round(latency_ms))
        with self._lock:
            bucket = self.timeline.setdefault(int(time.time()), {"ok": 0, "conflict": 0, "error": 0, "lat": Counter()})
            kind = "ok" if ok else "conflict" if code == CONFLICT_CODE else "error"
            bucket[kind] += 1
            bucket["lat"][ms] += 1
            self.hold_latency.setdefault(transport, Counter())[ms] += 1

    def error(self, request: str, key: str) -> None:
        with self._lock:
            self.errors[key] += 1
            self.errors_by_request.setdefault(request, Counter())[key] += 1

    def broadcast(self, delay_ms: float) -> None:
        with self._lock:
            self.broadcast_ms[max(0, round(delay_ms))] += 1

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def queue_place(self, session_id: str, position: int, last_waiting_sent: float, admitted_at: float) -> None:
        with self._lock:
            self.queue_places.append([session_id, position, round(last_waiting_sent, 3), round(admitted_at, 3)])

    # ---- files ----

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "timeline": {str(s): {**b, "lat": dict(b["lat"])} for s, b in self.timeline.items()},
                "hold_latency": {t: dict(h) for t, h in self.hold_latency.items()},
                "errors": dict(self.errors),
                "errors_by_request": {r: dict(c) for r, c in self.errors_by_request.items()},
                "broadcast_ms": dict(self.broadcast_ms),
                "counts": dict(self.counts),
                "queue_places": list(self.queue_places),
            }

    def write(self, folder: Path, name: str | None = None) -> None:
        """Write (atomically) as <folder>/<name or pid>.json."""
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{name or os.getpid()}.json"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json()))
        tmp.replace(target)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Metrics:
        m = cls()
        m.merge(raw)
        return m

    def merge(self, raw: Mapping[str, Any]) -> None:
        """Add another process's counters (as written by `to_json`)."""
        with self._lock:
            for second, b in raw.get("timeline", {}).items():
                mine = self.timeline.setdefault(int(second), {"ok": 0, "conflict": 0, "error": 0, "lat": Counter()})
                for kind in ("ok", "conflict", "error"):
                    mine[kind] += int(b.get(kind, 0))
                mine["lat"].update({int(k): int(v) for k, v in b.get("lat", {}).items()})
            for transport, hist in raw.get("hold_latency", {}).items():
                self.hold_latency.setdefault(transport, Counter()).update({int(k): int(v) for k, v in hist.items()})
            self.errors.update(raw.get("errors", {}))
            for request, codes in raw.get("errors_by_request", {}).items():
                self.errors_by_request.setdefault(request, Counter()).update(codes)
            self.broadcast_ms.update({int(k): int(v) for k, v in raw.get("broadcast_ms", {}).items()})
            self.counts.update(raw.get("counts", {}))
            self.queue_places.extend(raw.get("queue_places", []))

    @classmethod
    def read_folder(cls, folder: Path, extra: Iterable[Metrics] = ()) -> Metrics:
        merged = cls()
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            merged.merge(json.loads(path.read_text()))
        for m in extra:
            merged.merge(m.to_json())
        return merged


def queue_out_of_order(places: Iterable[Sequence[Any]]) -> int:
    """Buyers admitted out of join order, as the clients saw it: a buyer told "not admitted yet" by an answer
    asked for after a buyer who joined later (same session) had been told "admitted". Judged on the times the
    clients saw (the ask of the "not yet", the answer of the "admitted"), so a late look is never counted."""
    by_session: dict[str, list[tuple[int, float, float]]] = {}
    for session_id, position, waiting_sent, admitted_at in places:
        by_session.setdefault(str(session_id), []).append((int(position), float(waiting_sent), float(admitted_at)))
    wronged = 0
    for rows in by_session.values():
        rows.sort()
        earliest_later = float("inf")  # the first "admitted" seen by any buyer who joined later
        for _, waiting_sent, admitted_at in reversed(rows):
            if waiting_sent and waiting_sent > earliest_later:
                wronged += 1
            if admitted_at:
                earliest_later = min(earliest_later, admitted_at)
    return wronged
