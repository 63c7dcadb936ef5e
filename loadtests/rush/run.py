"""The rush's steps in order: target, sessions, audit watchers, Locust, settling, checks, report; the exit code."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from typing import Any

from loadtests.metrics import Metrics
from loadtests.plan import METRICS_DIR, Plan
from loadtests.rush.admin import create_sessions
from loadtests.rush.audit import AuditWatchers, check_watchers
from loadtests.rush.database import Database
from loadtests.rush.locust_run import run_locust
from loadtests.rush.options import RushOptions, say
from loadtests.rush.summary import GOALS, print_figures, print_summary, summarize, write_report
from loadtests.rush.system import SystemWatch
from loadtests.rush.target import Target, open_target


def run(options: RushOptions) -> int:
    """0 every invariant held, 1 one broke, 2 the run itself failed (RushError: it could not be set up).
    With --compare, two passes on the same system: the waiting room off, then on (--queue RATE)."""
    options.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        target = open_target(options, stack)
        if not options.compare:
            return run_against(options, target)[0]
        passes: dict[str, dict[str, Any]] = {}
        codes = []
        inlets = [("queue_off", 0.0, 0)]
        if options.queue_rate:
            inlets.append(("queue_on", options.queue_rate, 0))
        if options.queue_capacity:
            inlets.append(("queue_on_capacity", 0.0, options.queue_capacity))
        for label, rate, capacity in inlets:
            say(f"\n=== pass {label} ===")
            code, summary = run_against(dataclasses.replace(options, queue_rate=rate, queue_capacity=capacity,
                                                            out=options.out / label), target)
            codes.append(code)
            passes[label] = summary
        write_comparison(options, passes)
        return max(codes)


def write_comparison(options: RushOptions, passes: dict[str, dict[str, Any]]) -> None:
    """summary.json of a --compare run: both passes' figures side by side, and the goals with the queue on."""
    figures = {label: summary["rush_figures"] for label, summary in passes.items()}
    comparison = {
        "command": options.command,
        "scenario": options.scenario.name,
        "users": options.users,
        "nodes": options.nodes if options.host is None else None,
        "queue_rate": options.queue_rate,
        "queue_capacity": options.queue_capacity,
        "goals_with_the_queue_on": GOALS,
        "goals_met": {label: values["goals_met"] for label, values in figures.items() if label != "queue_off"},
        **figures,
        "invariants_ok": {label: summary["invariants_ok"] for label, summary in passes.items()},
        "double_sales": {label: summary["double_sales"] for label, summary in passes.items()},
        "passes": {label: f"{label}/summary.json" for label in passes},
    }
    (options.out / "summary.json").write_text(json.dumps(comparison, indent=2, default=str) + "\n")
    say("\nboxoffice rush -- the waiting room off, then on:")
    for label, values in figures.items():
        print_figures(label, values)
    say(f"  goals with the queue on: {comparison['goals_met']}")
    say(f"report: {options.out / 'summary.json'}")


def run_against(options: RushOptions, target: Target) -> tuple[int, dict[str, Any]]:
    options.out.mkdir(parents=True, exist_ok=True)
    base_url, dsn, admin_token = target.base_url, target.dsn, target.admin_token
    scenario = options.scenario
    session_ids, seats_per_session = create_sessions(base_url, admin_token, scenario, options.queue_rate,
                                                     options.queue_capacity)
    total_seats = seats_per_session * len(session_ids)
    watchers = int(round(options.users * scenario.watcher_share))
    plan = Plan(scenario=scenario.name, host=base_url, out_dir=str(options.out), session_ids=session_ids,
                weights=dict(scenario.weights), watchers=watchers, stop_when_sold_out=scenario.stop_when_sold_out,
                buyer=scenario.buyer, picker=scenario.picker, queue_rate=options.queue_rate,
                queue_capacity=options.queue_capacity)
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
    system = SystemWatch(target.redis_url, target.haproxy_log)
    try:
        system.start()
        load = run_locust(options, plan, db, total_seats)
        system_figures = system.figures()
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
                        base_url, system_figures)
    write_report(options, summary, metrics, load)
    print_summary(summary)
    say(f"report: {options.out}")
    if load.exit_code not in (0, 1) or not (options.out / "locust-report.html").exists():
        return 2, summary
    if summary["hold_requests"] == 0:
        say("boxoffice rush: not one hold was attempted -- the run proves nothing (see locust.log)")
        return 2, summary
    return (0 if summary["invariants_ok"] else 1), summary


def wait_for_settled(db: Database, session_ids: list[str], timeout: float = 60.0) -> None:
    """Until no hold of these sessions is PENDING (they expire after their TTL) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while db.pending(session_ids) and time.monotonic() < deadline:
        time.sleep(0.5)
