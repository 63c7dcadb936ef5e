"""`boxoffice rush`: a bounded Locust run against a local cluster (or --host), then the invariant check and a report.

Steps: start the services (embedded unless URLs are set) and N nodes behind HAProxy -- or take --host --
create a fresh room and session(s) through the admin API, connect the runner's own audit watchers, run
Locust headless on every core for a bounded time and user count (printing progress), then check the
booking invariants straight from PostgreSQL and every watcher's seat map against the server's. Writes
a report folder (Locust's HTML report and CSVs, summary.json, chart.png) and exits non-zero if any
invariant broke.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import ipaddress
import json
import math
import os
import secrets
import shlex
import subprocess
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from loadtests.contract_client import ContractClient, SeatMap, SeatSocket, UrllibTransport
from loadtests.metrics import Metrics, percentile, percentiles
from loadtests.plan import METRICS_DIR, PLAN_ENV, STOP_FILE, WATCHER_MAPS_DIR, BuyerPlan, PickerPlan, Plan
from server.embedded import stop_group

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
PROGRESS_EVERY = 2.0  # seconds between progress lines
LOCUST_GRACE = 60.0  # beyond --duration: start-up, spawning and the final report, then Locust is stopped
EXPIRY_SLACK_SECONDS = 2.0  # a PENDING hold may outlive its TTL by the sweep interval plus this
SOLD_OUT_LINGER = 2.0  # after the last seat sold, let the buyers see it before ending the run


# ---- scenarios --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """What users face, and how hard: sizes, user mix and behaviour."""

    name: str
    description: str
    users: int
    spawn_rate: float
    duration: int  # seconds (the run ends earlier when a rush sells out)
    sessions: int
    rows: int
    seats_per_row: int
    weights: dict[str, int]
    watcher_share: float = 0.0  # fraction of the users that only watch (Watcher)
    stop_when_sold_out: bool = False
    hold_ttl_seconds: int = 30  # the server's default; HOLD_TTL_SECONDS in the environment overrides it
    audit_watchers_per_session: int = 2
    max_audit_watchers: int = 16
    buyer: BuyerPlan = field(default_factory=BuyerPlan)
    picker: PickerPlan = field(default_factory=PickerPlan)


SCENARIOS: dict[str, Scenario] = {
    "rush": Scenario(
        name="rush",
        description="the 10:00 rush: 5,000 buyers race for one 160-seat screening until it is sold out",
        users=5000, spawn_rate=500, duration=90, sessions=1, rows=10, seats_per_row=16,
        weights={"RushBuyer": 1}, stop_when_sold_out=True,
        buyer=BuyerPlan(confirm_probability=0.8, cancel_probability=0.1, buy_once=True,
                        wait_seconds=(0.5, 2.0), pay_seconds=(0.5, 2.0), best_seat_jitter=2.0),
    ),
    "steady": Scenario(
        name="steady",
        description="an ordinary afternoon: buyers spread over 30 screenings at a moderate pace",
        users=200, spawn_rate=40, duration=60, sessions=30, rows=10, seats_per_row=16,
        weights={"RushBuyer": 1},
        buyer=BuyerPlan(confirm_probability=0.7, cancel_probability=0.15, buy_once=False,
                        wait_seconds=(2.0, 5.0), pay_seconds=(1.0, 3.0), best_seat_jitter=4.0),
    ),
    "mixed": Scenario(
        name="mixed",
        description="REST buyers, WebSocket seat pickers and watchers on the same 8 screenings",
        users=300, spawn_rate=60, duration=60, sessions=8, rows=10, seats_per_row=16,
        weights={"RushBuyer": 5, "SeatPicker": 3}, watcher_share=1 / 6,
        buyer=BuyerPlan(confirm_probability=0.1, cancel_probability=0.6, buy_once=False,
                        wait_seconds=(1.0, 3.0), pay_seconds=(0.5, 2.0), best_seat_jitter=3.0),
        picker=PickerPlan(confirm_probability=0.05, hold_seconds=(0.5, 2.0), wait_seconds=(0.5, 2.0)),
    ),
}


@dataclass(frozen=True)
class RushOptions:
    scenario: Scenario
    users: int
    duration: int
    nodes: int
    host: str | None
    out: Path
    processes: int
    command: str

    @classmethod
    def from_args(cls, args: argparse.Namespace, argv: list[str] | None = None) -> RushOptions:
        scenario = SCENARIOS[args.scenario]
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(args.out) if args.out else ROOT / "reports" / "rush" / f"{scenario.name}-{stamp}"
        return cls(scenario=scenario, users=args.users or scenario.users, duration=args.duration or scenario.duration,
                   nodes=args.nodes, host=args.host, out=out.resolve(), processes=max(1, os.cpu_count() or 1),
                   command=shlex.join(["boxoffice", *(argv if argv is not None else sys.argv[1:])]))


class RushError(RuntimeError):
    """The run could not be set up or did not run (not an invariant failure)."""


def say(message: str) -> None:
    print(message, flush=True)


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---- set-up through the admin API -----------------------------------------------------------------


def create_sessions(base_url: str, admin_token: str, scenario: Scenario) -> tuple[list[str], int]:
    """A fresh room and the scenario's sessions in it; returns (session ids, seats per session)."""
    admin = ContractClient(UrllibTransport(base_url), admin_token)
    tag = uuid.uuid4().hex[:6]
    room = admin.create_room(f"Rush room {tag}", scenario.rows, scenario.seats_per_row)
    if room.status != 201:
        raise RushError(f"POST /rooms answered {room.status} {room.body}")
    ids = []
    for i in range(scenario.sessions):
        session = admin.create_session(room.body["id"], f"Rush {scenario.name} {tag} #{i + 1}")
        if session.status != 201:
            raise RushError(f"POST /sessions answered {session.status} {session.body}")
        ids.append(session.body["id"])
    return ids, scenario.rows * scenario.seats_per_row


# ---- the runner's own watchers ----------------------------------------------------------------------


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


# ---- PostgreSQL -------------------------------------------------------------------------------------


SEAT_COUNTS_SQL = """
    SELECT status, count(*)::int AS n FROM session_seats WHERE session_id = ANY($1::uuid[]) GROUP BY status"""
OVERDUE_SQL = """
    SELECT count(*)::int AS n, coalesce(extract(epoch FROM max(now() - expires_at)), 0)::float AS worst
    FROM reservations WHERE status = 'PENDING' AND session_id = ANY($1::uuid[])
      AND expires_at < now() - make_interval(secs => $2)"""
SOLD_TIMES_SQL = """
    SELECT extract(epoch FROM sa.confirmed_at - (SELECT min(created_at) FROM reservations
                                                 WHERE session_id = ANY($1::uuid[])))::float AS after
    FROM sale_seats x JOIN sales sa ON sa.id = x.sale_id
    WHERE x.session_id = ANY($1::uuid[]) ORDER BY sa.confirmed_at"""
SELL_MILESTONES = {"50%": 0.5, "90%": 0.9, "100%": 1.0}
PENDING_SQL = "SELECT count(*)::int FROM reservations WHERE status = 'PENDING' AND session_id = ANY($1::uuid[])"
SELL_OUT_SQL = """
    SELECT (SELECT min(created_at) FROM reservations WHERE session_id = ANY($1::uuid[])) AS first_hold,
           (SELECT max(confirmed_at) FROM sales WHERE session_id = ANY($1::uuid[])) AS last_sale,
           (SELECT count(*)::int FROM sales WHERE session_id = ANY($1::uuid[])) AS sales"""


class Database:
    """One asyncpg connection driven from this synchronous runner."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.loop = asyncio.new_event_loop()
        self.con: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(dsn))

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def seat_counts(self, session_ids: list[str]) -> dict[str, int]:
        rows = self.run(self.con.fetch(SEAT_COUNTS_SQL, session_ids))
        return {r["status"]: r["n"] for r in rows}

    def overdue_holds(self, session_ids: list[str]) -> tuple[int, float]:
        row = self.run(self.con.fetchrow(OVERDUE_SQL, session_ids, EXPIRY_SLACK_SECONDS))
        return row["n"], row["worst"]

    def pending(self, session_ids: list[str]) -> int:
        return int(self.run(self.con.fetchval(PENDING_SQL, session_ids)))

    def sell_out(self, session_ids: list[str]) -> dict[str, Any]:
        return dict(self.run(self.con.fetchrow(SELL_OUT_SQL, session_ids)))

    def time_to_sell(self, session_ids: list[str], total_seats: int) -> dict[str, float | None]:
        """Seconds from the first hold until 50 %, 90 % and 100 % of the seats were sold (None: not reached)."""
        after = [r["after"] for r in self.run(self.con.fetch(SOLD_TIMES_SQL, session_ids))]
        out: dict[str, float | None] = {}
        for label, share in SELL_MILESTONES.items():
            needed = max(1, math.ceil(round(total_seats * share, 6)))
            out[label] = round(after[needed - 1], 2) if len(after) >= needed else None
        return out

    def invariants(self, session_ids: list[str], timeout: float) -> dict[str, list[dict[str, Any]]]:
        from storage.invariants import wait_for_invariants  # noqa: PLC0415 - the runner's only server import

        return self.run(wait_for_invariants(self.con, session_ids, timeout=timeout,  # type: ignore[no-any-return]
                                            expiry_slack_seconds=EXPIRY_SLACK_SECONDS))

    def close(self) -> None:
        self.run(self.con.close())
        self.loop.close()


# ---- Locust -----------------------------------------------------------------------------------------


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def locust_command(options: RushOptions, plan: Plan, spawn_rate: float) -> list[str]:
    out = options.out
    port = str(free_port())  # not the default 5557: another Locust may be running on this machine
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--processes", str(options.processes), "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
        "--master-host", "127.0.0.1", "--master-port", port,
        "-u", str(options.users), "-r", f"{spawn_rate:g}", "-t", f"{options.duration}s", "--stop-timeout", "0",
        "--host", plan.host, "--csv", str(out / "locust"), "--csv-full-history",
        "--html", str(out / "locust-report.html"),
        "--only-summary", "--loglevel", "INFO", "--logfile", str(out / "locust.log"),
        *plan.user_classes,
    ]


def read_history(path: Path) -> list[dict[str, str]]:
    """The rows of Locust's stats history written at its latest timestamp."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error):
        return []
    rows = [r for r in rows if r.get("Timestamp") and r.get("99%") is not None]
    if not rows:
        return []
    latest = rows[-1]["Timestamp"]
    return [r for r in rows if r["Timestamp"] == latest]


def _num(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


def live_holds(folder: Path, now: float, window: int = 3) -> tuple[float, float, float | None, float | None]:
    """(holds/s, refused/s, p50 ms, p99 ms) over the last complete seconds the Locust processes have written
    (each writes its counters every 2 s, so the window ends 2 s ago)."""
    try:
        merged = Metrics.read_folder(folder)
    except (OSError, ValueError):  # a file being replaced right now: next time
        return 0.0, 0.0, None, None
    seconds = range(int(now) - 2 - window, int(now) - 2)
    buckets = [merged.timeline[s] for s in seconds if s in merged.timeline]
    lat: dict[int, int] = {}
    for b in buckets:
        for ms, n in b["lat"].items():
            lat[ms] = lat.get(ms, 0) + n
    attempts = sum(b["ok"] + b["conflict"] + b["error"] for b in buckets)
    refused = sum(b["conflict"] for b in buckets)
    return attempts / window, refused / window, percentile(lat, 0.5), percentile(lat, 0.99)


def progress_line(elapsed: float, history: list[dict[str, str]], holds: tuple[float, float, float | None, float | None],
                  seats: dict[str, int], total_seats: int) -> str:
    aggregated = next((r for r in history if r.get("Name") == "Aggregated"), {})
    rate, refused, p50, p99 = holds
    return (f"[{elapsed:5.0f}s] users {int(_num(aggregated.get('User Count'))):>5} | "
            f"req/s {_num(aggregated.get('Requests/s')):7.1f} | holds/s {rate:6.1f} (refused {refused:6.1f}) "
            f"| hold p50 {p50 or 0:5.0f} ms p99 {p99 or 0:6.0f} ms | sold {seats.get('SOLD', 0)}/{total_seats} "
            f"held {seats.get('RESERVED', 0)}")


def terminate_group(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    stop_group(proc, timeout)


@dataclass
class LoadResult:
    exit_code: int
    started: float
    ended: float
    sold_out_seen_at: float | None = None  # wall clock when the runner saw every seat SOLD
    overdue_holds_max: int = 0
    overdue_worst_seconds: float = 0.0


def run_locust(options: RushOptions, plan: Plan, db: Database, total_seats: int) -> LoadResult:
    """Locust in the background; progress lines and the sold-out stop in the foreground."""
    scenario = options.scenario
    spawn_rate = min(scenario.spawn_rate, options.users) if options.users else scenario.spawn_rate
    command = locust_command(options, plan, spawn_rate)
    (options.out / "locust-command.txt").write_text(shlex.join(command) + "\n")
    env = {**os.environ, PLAN_ENV: str(options.out / "plan.json"), "PYTHONPATH": str(ROOT),
           "PYTHONWARNINGS": "ignore"}
    with open(options.out / "locust.out", "wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                stdin=subprocess.DEVNULL, start_new_session=True)
    result = LoadResult(exit_code=-1, started=time.time(), ended=0.0)
    deadline = time.monotonic() + options.duration + LOCUST_GRACE
    history_path = options.out / "locust_stats_history.csv"
    try:
        while proc.poll() is None:
            time.sleep(PROGRESS_EVERY)
            seats = db.seat_counts(plan.session_ids)
            overdue, worst = db.overdue_holds(plan.session_ids)
            result.overdue_holds_max = max(result.overdue_holds_max, overdue)
            result.overdue_worst_seconds = max(result.overdue_worst_seconds, worst)
            now = time.time()
            holds = live_holds(options.out / METRICS_DIR, now)
            say(progress_line(now - result.started, read_history(history_path), holds, seats, total_seats))
            if seats.get("SOLD", 0) >= total_seats and result.sold_out_seen_at is None:
                result.sold_out_seen_at = time.time()
                say(f"sold out: all {total_seats} seats SOLD")
            if (plan.stop_when_sold_out and result.sold_out_seen_at is not None
                    and time.time() - result.sold_out_seen_at >= SOLD_OUT_LINGER):
                (options.out / STOP_FILE).touch()  # the locustfile's master ends the run (as --run-time does)
            if time.monotonic() > deadline:
                say("locust overran its time budget; stopping it")
                terminate_group(proc)
    except KeyboardInterrupt:
        say("interrupted: stopping locust")
        terminate_group(proc)
        raise
    finally:
        terminate_group(proc)
    result.exit_code = proc.returncode
    result.ended = time.time()
    return result


# ---- summary ----------------------------------------------------------------------------------------


def summarize(options: RushOptions, plan: Plan, metrics: Metrics, load: LoadResult, db_report: dict[str, Any],
              sell_out: dict[str, Any], seats: dict[str, int], total_seats: int, watchers: dict[str, Any],
              base_url: str) -> dict[str, Any]:
    seconds = sorted(metrics.timeline)
    buckets = [metrics.timeline[s] for s in seconds]
    ok = sum(b["ok"] for b in buckets)
    conflicts = sum(b["conflict"] for b in buckets)
    errors = sum(b["error"] for b in buckets)
    attempts = ok + conflicts + errors
    active = (seconds[-1] - seconds[0] + 1) if seconds else 0
    all_latency: dict[int, int] = {}
    for hist in metrics.hold_latency.values():
        for ms, n in hist.items():
            all_latency[ms] = all_latency.get(ms, 0) + n
    sold_out = seats.get("SOLD", 0) >= total_seats
    time_to_sell = sell_out.get("time_to_sell_s", {})
    broadcast = percentiles(metrics.broadcast_ms)
    invariants = {name: {"ok": not rows, "violations": len(rows), "examples": rows[:3]}
                  for name, rows in db_report.items()}
    extra_checks = {
        "confirm_idempotent": metrics.counts.get("idempotency_mismatch", 0),
        "purchases_list_the_sale": metrics.counts.get("purchase_missing", 0),
    }
    for name, violations in extra_checks.items():
        invariants[name] = {"ok": violations == 0, "violations": violations, "examples": []}
    if watchers.get("ok") is not None:
        invariants["watchers_converge"] = {"ok": bool(watchers["ok"]), "violations": watchers.get("failed", 0),
                                           "examples": watchers.get("examples", [])}
    return {
        "scenario": options.scenario.name,
        "description": options.scenario.description,
        "command": options.command,
        "locust_command": (options.out / "locust-command.txt").read_text().strip(),
        "target": base_url,
        "nodes": options.nodes if options.host is None else None,
        "users": options.users,
        "user_classes": plan.user_classes,
        "watchers": plan.watchers,
        "duration_s": options.duration,
        "locust_processes": options.processes,
        "started_at": datetime.fromtimestamp(load.started).isoformat(timespec="seconds"),
        "run_seconds": round(load.ended - load.started, 1),
        "sessions": len(plan.session_ids),
        "seats": total_seats,
        "seats_by_status": seats,
        "sales": sell_out.get("sales", 0),
        "hold_requests": attempts,
        "holds_granted": ok,
        "holds_refused": conflicts,
        "hold_errors": errors,
        "hold_active_seconds": active,
        "holds_per_second": round(attempts / active, 1) if active else 0.0,
        "granted_holds_per_second": round(ok / active, 1) if active else 0.0,
        "hold_latency_ms": percentiles(all_latency),
        "hold_latency_ms_by_transport": {t: percentiles(h) for t, h in metrics.hold_latency.items()},
        "conflict_share": round(conflicts / attempts, 4) if attempts else 0.0,
        "sold_out": sold_out,
        "time_to_sell_out_s": time_to_sell.get("100%"),
        "time_to_sell_s": time_to_sell,
        "broadcast_ms": broadcast,
        "broadcast_p99_ms": broadcast["p99"],
        "errors_by_code": dict(sorted(metrics.errors.items(), key=lambda kv: -kv[1])),
        "errors_by_request": {r: dict(c) for r, c in sorted(metrics.errors_by_request.items())},
        "counts": dict(sorted(metrics.counts.items())),
        "expiry_during_run": {"overdue_holds_max": load.overdue_holds_max,
                              "worst_overdue_s": round(load.overdue_worst_seconds, 2),
                              "slack_s": EXPIRY_SLACK_SECONDS},
        "double_sales": len(db_report.get("no_double_sale", [])),
        "invariants": invariants,
        "invariants_ok": all(v["ok"] for v in invariants.values()),
        "watchers_check": watchers,
        "locust_exit_code": load.exit_code,
        "files": {"locust_html": "locust-report.html", "chart": "chart.png", "locust_csv": "locust_stats.csv",
                  "locust_log": "locust.log"},
    }


def print_summary(summary: dict[str, Any]) -> None:
    lat = summary["hold_latency_ms"]
    lines = [
        "",
        f"boxoffice rush -- scenario {summary['scenario']}: {summary['users']} users, {summary['run_seconds']} s",
        f"  holds/s            : {summary['holds_per_second']} requests "
        f"({summary['granted_holds_per_second']} granted)",
        f"  hold latency       : p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms "
        f"({lat['samples']} holds)",
        f"  conflict share     : {summary['conflict_share']:.1%}",
        f"  sold               : {summary['seats_by_status'].get('SOLD', 0)}/{summary['seats']} seats, "
        f"{summary['sales']} sales; seconds from the first hold to 50/90/100 % sold: "
        + " / ".join(str(v) for v in summary["time_to_sell_s"].values()),
        f"  broadcast p99      : {summary['broadcast_p99_ms']} ms ({summary['broadcast_ms']['samples']} messages)",
        f"  errors by code     : {summary['errors_by_code'] or 'none'}",
        f"  double sales       : {summary['double_sales']}",
        "  invariants         : " + ", ".join(f"{n} {'ok' if v['ok'] else 'BROKEN (' + str(v['violations']) + ')'}"
                                             for n, v in summary["invariants"].items()),
        f"  verdict            : {'all invariants hold' if summary['invariants_ok'] else 'INVARIANT BROKEN'}",
        "",
    ]
    say("\n".join(lines))


# ---- the run ----------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    """`boxoffice rush`: returns the exit code (0 all invariants hold, 1 one broke, 2 the run failed)."""
    if args.scenario not in SCENARIOS:
        say(f"boxoffice rush: unknown scenario {args.scenario!r} (choose from {', '.join(SCENARIOS)})")
        return 2
    options = RushOptions.from_args(args)
    if options.users < 1 or options.duration < 1 or not 1 <= options.nodes <= 8:
        say("boxoffice rush: --users and --duration must be positive, --nodes between 1 and 8")
        return 2
    try:
        return run(options)
    except RushError as exc:
        say(f"boxoffice rush: {exc}")
        return 2


def run(options: RushOptions) -> int:
    options.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if options.host:
            if not is_loopback(options.host) and not os.environ.get("BOXOFFICE_RUSH_ALLOW_REMOTE"):
                raise RushError(f"--host {options.host} is not a loopback address; load is only sent to "
                                "127.0.0.1 (set BOXOFFICE_RUSH_ALLOW_REMOTE=1 to target your own remote test system)")
            dsn, admin_token = os.environ.get("DATABASE_URL"), os.environ.get("ADMIN_TOKEN")
            if not dsn or not admin_token:
                raise RushError("with --host, set DATABASE_URL (the invariants are checked from PostgreSQL) and "
                                "ADMIN_TOKEN (to create the sessions)")
            base_url = options.host.rstrip("/")
        else:
            base_url, dsn, admin_token = start_local_cluster(options, stack)
        return run_against(options, base_url, dsn, admin_token)
    return 2  # unreachable; keeps type checkers content


def start_local_cluster(options: RushOptions, stack: contextlib.ExitStack) -> tuple[str, str, str]:
    from server.cli import STATE_DIR, prepare_database, services  # noqa: PLC0415
    from server.cluster import LOAD_TEST_LIMITS, ClusterError, LocalCluster  # noqa: PLC0415

    say(f"starting services and {options.nodes} node(s) behind HAProxy ...")
    urls = stack.enter_context(services(STATE_DIR / "rush", embed=True))
    prepare_database(urls["DATABASE_URL"], demo=False)
    admin_token = os.environ.get("ADMIN_TOKEN") or secrets.token_urlsafe(24)
    hold_ttl = os.environ.get("HOLD_TTL_SECONDS") or str(options.scenario.hold_ttl_seconds)
    env = {**urls, "ADMIN_TOKEN": admin_token, "HOLD_TTL_SECONDS": hold_ttl, "LOG_LEVEL": "WARNING",
           **LOAD_TEST_LIMITS}  # every simulated buyer comes from 127.0.0.1
    try:
        cluster = stack.enter_context(LocalCluster(options.nodes, env=env, state_dir=options.out / "cluster"))
    except ClusterError as exc:
        raise RushError(f"the cluster did not start: {exc}") from exc
    say(f"cluster up: {cluster.url} ({', '.join(cluster.node_ids)}; logs in {cluster.state_dir})")
    return cluster.url, urls["DATABASE_URL"], admin_token


def run_against(options: RushOptions, base_url: str, dsn: str, admin_token: str) -> int:
    scenario = options.scenario
    session_ids, seats_per_session = create_sessions(base_url, admin_token, scenario)
    total_seats = seats_per_session * len(session_ids)
    watchers = int(round(options.users * scenario.watcher_share))
    plan = Plan(scenario=scenario.name, host=base_url, out_dir=str(options.out), session_ids=session_ids,
                weights=dict(scenario.weights), watchers=watchers, stop_when_sold_out=scenario.stop_when_sold_out,
                buyer=scenario.buyer, picker=scenario.picker)
    plan.write(options.out / "plan.json")
    say(f"scenario {scenario.name}: {scenario.description}")
    say(f"  {len(session_ids)} session(s) x {seats_per_session} seats; {options.users} users "
        f"({', '.join(plan.user_classes)}), at most {options.duration} s; report folder {options.out}")

    audit = AuditWatchers(base_url, session_ids, scenario.audit_watchers_per_session, scenario.max_audit_watchers)
    websockets = audit.open()
    if not websockets:
        say("  note: no WebSocket watcher could connect (" + "; ".join(audit.failures[:2]) + "); "
            "the watchers' check is skipped")
    db = Database(dsn)
    try:
        load = run_locust(options, plan, db, total_seats)
        if load.exit_code not in (0, 1):
            say(f"locust exited with code {load.exit_code}; see {options.out / 'locust.log'} and locust.out")
        say("load stopped; waiting for pending holds to expire and the outbox to drain ...")
        wait_for_settled(db, session_ids)
        db_report = db.invariants(session_ids, timeout=20.0)
        watchers_check = check_watchers(audit, websockets, options.out, base_url, session_ids)
        seats = db.seat_counts(session_ids)
        sell_out = db.sell_out(session_ids)
        sell_out["time_to_sell_s"] = db.time_to_sell(session_ids, total_seats)
    finally:
        audit.close()
        db.close()
    metrics = Metrics.read_folder(options.out / METRICS_DIR, extra=[audit.metrics])
    summary = summarize(options, plan, metrics, load, db_report, sell_out, seats, total_seats, watchers_check,
                        base_url)
    write_report(options, summary, metrics, load)
    print_summary(summary)
    say(f"report: {options.out}")
    if load.exit_code not in (0, 1) or not (options.out / "locust-report.html").exists():
        return 2
    if summary["hold_requests"] == 0:
        say("boxoffice rush: not one hold was attempted -- the run proves nothing (see locust.log)")
        return 2
    return 0 if summary["invariants_ok"] else 1


def wait_for_settled(db: Database, session_ids: list[str], timeout: float = 60.0) -> None:
    """Until no hold of these sessions is PENDING (they expire after their TTL) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while db.pending(session_ids) and time.monotonic() < deadline:
        time.sleep(0.5)


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


def write_report(options: RushOptions, summary: dict[str, Any], metrics: Metrics, load: LoadResult) -> None:
    from loadtests.report import write_chart  # noqa: PLC0415 - matplotlib is slow to import

    seconds = sorted(metrics.timeline)
    sold_out_at = None
    if summary["time_to_sell_out_s"] is not None and seconds:
        sold_out_at = summary["time_to_sell_out_s"]
    title = (f"boxoffice rush -- {summary['scenario']}: {summary['users']} users, "
             f"{summary['nodes'] or 'remote'} node(s), {summary['holds_per_second']} holds/s")
    write_chart(metrics, options.out / "chart.png", title, sold_out_at=sold_out_at)
    (options.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """For `python -m loadtests.rush` (the same options as `boxoffice rush`)."""
    parser = argparse.ArgumentParser(prog="boxoffice rush", description=__doc__)
    parser.add_argument("--scenario", default="rush", choices=sorted(SCENARIOS))
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--duration", type=int, default=None)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--host", default=None)
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main(parse_args(sys.argv[1:])))

