"""The runner's own WebSocket watchers, and the check of every watcher's map against the server's."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from loadtests.contract_client import ContractClient, SeatSocket, UrllibTransport
from loadtests.metrics import Metrics
from loadtests.plan import WATCHER_MAPS_DIR
from loadtests.seats import SeatMap


class AuditWatchers:
    """Sockets the runner keeps open from before the load until after the stream is quiet.

    Locust users are killed when the run ends, possibly before the last changes arrive (and pending
    holds still expire later); these watchers outlive the load, so their final maps can be compared
    with GET /sessions/{id}/seats exactly as the contract promises.
    """

    def __init__(self, base_url: str, session_ids: list[str], per_session: int, cap: int) -> None:
        self.base_url = base_url
        self.metrics = Metrics()
        self.sockets: list[SeatSocket] = []
        self.reopened: list[SeatSocket] = []
        self.failures: list[str] = []
        self.plan = [sid for sid in session_ids for _ in range(per_session)][:cap]

    def open(self) -> bool:
        for session_id in self.plan:
            sock = SeatSocket(self.base_url, session_id, on_seats=lambda _m, d: self.metrics.broadcast(d))
            try:
                sock.open()
            except Exception as exc:  # noqa: BLE001 - reported, and the run goes on without this watcher
                self.failures.append(f"{session_id}: {type(exc).__name__}: {exc}")
                sock.close()
                continue
            self.sockets.append(sock)
        return bool(self.sockets)

    def compare(self, attempts: int = 6) -> list[dict[str, Any]]:
        """Once every socket is quiet, compare each map with the server's (again, for a while, if they differ)."""
        api = ContractClient(UrllibTransport(self.base_url))
        results: dict[int, dict[str, Any]] = {}
        sockets = [self._reopen_if_dropped(i, results) for i in range(len(self.sockets))]
        pending = [i for i, sock in enumerate(sockets) if sock is not None]
        for _ in range(attempts):
            wait_all_quiet([s for s in sockets if s is not None], quiet_seconds=1.0, timeout=10.0)
            truth: dict[str, dict[str, tuple[str, int]] | None] = {}
            still = []
            for i in pending:
                sock = sockets[i]
                assert sock is not None
                if sock.session_id not in truth:
                    reply = api.seat_map(sock.session_id)
                    truth[sock.session_id] = SeatMap.from_rest(reply.body) if reply.status == 200 else None
                server = truth[sock.session_id]
                diffs = ([{"error": "GET /sessions/{id}/seats failed"}] if server is None
                         else sock.map.differences(server))
                results[i] = {"sessionId": sock.session_id, "nodeId": sock.node_id, "ok": not diffs,
                              "differences": len(diffs), "examples": diffs[:3], "changesApplied": sock.map.applied,
                              "staleChanges": sock.map.stale, "reconnected": sock is not self.sockets[i]}
                if diffs:
                    still.append(i)
            pending = still
            if not pending:
                break
            time.sleep(1.0)
        return [results[i] for i in sorted(results)]

    def _reopen_if_dropped(self, i: int, results: dict[int, dict[str, Any]]) -> SeatSocket | None:
        """A socket dropped during the run gets what the contract promises after a reconnect: a fresh snapshot."""
        sock = self.sockets[i]
        if sock.open_:
            return sock
        fresh = SeatSocket(self.base_url, sock.session_id, on_seats=lambda _m, d: self.metrics.broadcast(d))
        try:
            fresh.open()
        except Exception as exc:  # noqa: BLE001
            results[i] = {"sessionId": sock.session_id, "nodeId": sock.node_id, "ok": False,
                          "error": f"dropped ({sock.close_reason}) and could not reconnect: {exc}"}
            return None
        self.metrics.count("audit_watcher_reconnects")
        self.reopened.append(fresh)
        return fresh

    def close(self) -> None:
        for sock in self.sockets + self.reopened:
            sock.close()


def wait_all_quiet(sockets: list[SeatSocket], quiet_seconds: float, timeout: float) -> bool:
    """Until no socket has received a frame for `quiet_seconds` (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(time.monotonic() - s.last_message_at >= quiet_seconds for s in sockets):
            return True
        time.sleep(0.1)
    return False


def check_locust_watchers(folder: Path, truth: dict[str, dict[str, tuple[str, int]]]) -> dict[str, Any]:
    """The Locust Watchers' last maps: never ahead of PostgreSQL, never a different status at the same version.

    (Seats behind are expected: a Watcher stops with the run, and later changes -- expiries -- are not
    in its map. The exact equality check is the audit watchers' job.)
    """
    checked, wrong, behind = 0, 0, 0
    examples: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        record = json.loads(path.read_text())
        server = truth.get(record["sessionId"], {})
        checked += 1
        for seat_id, (status, version) in record["seats"].items():
            real = server.get(seat_id)
            if real is None or version > real[1] or (version == real[1] and status != real[0]):
                wrong += 1
                if len(examples) < 3:
                    examples.append({"watcher": path.stem, "seat": seat_id, "watcher_saw": [status, version],
                                     "server": real})
            elif version < real[1]:
                behind += 1
    return {"watchers": checked, "ok": wrong == 0, "seats_wrong": wrong, "seats_behind_at_stop": behind,
            "examples": examples}


def check_watchers(audit: AuditWatchers, websockets: bool, out: Path, base_url: str,
                   session_ids: list[str]) -> dict[str, Any]:
    if not websockets:
        return {"ok": None, "note": "no WebSocket endpoint answered", "failures": audit.failures[:3]}
    audit_results = audit.compare()
    api = ContractClient(UrllibTransport(base_url))
    truth = {}
    for sid in session_ids:
        reply = api.seat_map(sid)
        if reply.status == 200:
            truth[sid] = SeatMap.from_rest(reply.body)
    locust_watchers = check_locust_watchers(out / WATCHER_MAPS_DIR, truth)
    failed = sum(1 for r in audit_results if not r["ok"]) + (0 if locust_watchers["ok"] else 1)
    return {
        "ok": failed == 0 and not audit.failures,
        "failed": failed + len(audit.failures),
        "audit_watchers": len(audit_results),
        "audit_nodes": sorted({r["nodeId"] for r in audit_results if r.get("nodeId")}),
        "audit": audit_results,
        "connect_failures": audit.failures,
        "locust_watchers": locust_watchers,
        "examples": [e for r in audit_results for e in r.get("examples", [])][:3] + locust_watchers["examples"][:2],
    }
