"""Locust in the background, headless on every core; progress lines and the sold-out stop in the foreground."""

from __future__ import annotations

import csv
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from loadtests.metrics import Metrics, percentile
from loadtests.plan import METRICS_DIR, PLAN_ENV, STOP_FILE, Plan
from loadtests.rush.database import Database
from loadtests.rush.options import ROOT, RushOptions, say
from server.embedded import free_port, stop_group

LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
PROGRESS_EVERY = 2.0  # seconds between progress lines
LOCUST_GRACE = 60.0  # beyond --duration: start-up, spawning and the final report, then Locust is stopped
SOLD_OUT_LINGER = 2.0  # after the last seat sold, let the buyers see it before ending the run


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
