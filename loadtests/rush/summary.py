"""The run's summary: summary.json, the lines printed at the end, and the chart."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from loadtests.metrics import Metrics, percentiles
from loadtests.plan import Plan
from loadtests.rush.database import EXPIRY_SLACK_SECONDS
from loadtests.rush.locust_run import LoadResult
from loadtests.rush.options import RushOptions, say


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
        # --queue: with a waiting room every hold above is an admitted buyer's
        "queue": {"rate": plan.queue_rate, "admitted": metrics.counts.get("queue_admitted", 0),
                  "position_polls": metrics.counts.get("queue_polls", 0),
                  "position_polls_per_second": round(metrics.counts.get("queue_polls", 0)
                                                     / max(1e-9, load.ended - load.started), 1)},
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


def write_report(options: RushOptions, summary: dict[str, Any], metrics: Metrics, load: LoadResult) -> None:
    from loadtests.report import write_chart  # matplotlib is slow to import: only when a report is written

    seconds = sorted(metrics.timeline)
    sold_out_at = None
    if summary["time_to_sell_out_s"] is not None and seconds:
        sold_out_at = summary["time_to_sell_out_s"]
    title = (f"boxoffice rush -- {summary['scenario']}: {summary['users']} users, "
             f"{summary['nodes'] or 'remote'} node(s), {summary['holds_per_second']} holds/s")
    write_chart(metrics, options.out / "chart.png", title, sold_out_at=sold_out_at)
    (options.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
