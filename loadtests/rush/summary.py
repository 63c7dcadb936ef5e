"""The run's summary: summary.json, the lines printed at the end, and the chart."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from loadtests.metrics import Metrics, percentiles, queue_out_of_order
from loadtests.plan import Plan
from loadtests.rush.database import EXPIRY_SLACK_SECONDS
from loadtests.rush.locust_run import LoadResult
from loadtests.rush.options import RushOptions, say


def summarize(options: RushOptions, plan: Plan, metrics: Metrics, load: LoadResult, db_report: dict[str, Any],
              sell_out: dict[str, Any], seats: dict[str, int], total_seats: int, watchers: dict[str, Any],
              base_url: str, system: dict[str, Any] | None = None) -> dict[str, Any]:
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
    summary = {
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
    arrival_s = options.users / max(1e-9, min(options.scenario.spawn_rate, options.users))
    summary["rush_figures"] = rush_figures(summary, plan, metrics, load, system or {}, arrival_s)
    return summary


# The goals with the waiting room on, while 5,000 buyers wait (issue 16): each a figure of `rush_figures`
GOALS = {"admitted_hold_p99_ms": 500, "broadcast_p99_ms": 1000, "haproxy_down_events": 0, "answers_5xx": 0,
         "admitted_out_of_join_order": 0}


def latency_after(metrics: Metrics, since: float) -> dict[str, float | None]:
    """Hold latency percentiles of the holds made from epoch second `since` on."""
    hist: dict[int, int] = {}
    for second, bucket in metrics.timeline.items():
        if second >= since:
            for ms, n in bucket["lat"].items():
                hist[ms] = hist.get(ms, 0) + n
    return percentiles(hist)


def rush_figures(summary: dict[str, Any], plan: Plan, metrics: Metrics, load: LoadResult,
                 system: dict[str, Any], arrival_s: float = 0.0) -> dict[str, Any]:
    """The figures the queue-off/queue-on comparison is read by. With a waiting room, every hold is an admitted
    buyer's; without one, every buyer who reached the seat map counts as admitted (nobody waits)."""
    seconds = max(1e-9, load.ended - load.started)
    errors: dict[str, int] = summary["errors_by_code"]
    answers_5xx = {k: v for k, v in errors.items() if k[:1] == "5"}
    dropped = {k: v for k, v in errors.items() if k.startswith("0 ")}
    admitted = metrics.counts.get("queue_admitted", 0) if plan.queued else metrics.counts.get("buyers_at_hold", 0)
    redis_calls = system.get("redis_calls")
    figures = {
        "queue": ({"capacity": plan.queue_capacity} if plan.queue_capacity else {"rate": plan.queue_rate})
        if plan.queued else "off",
        "admitted_buyers": admitted,
        "admitted_hold_latency_ms": summary["hold_latency_ms"],
        "admitted_hold_p99_ms": summary["hold_latency_ms"]["p99"],
        # the same once every buyer has arrived (Locust spawns them at the scenario's rate): the holds made
        # while the line is long, without the arrival's own sign-ups and joins beside them
        "arrival_s": round(arrival_s, 1),
        "admitted_hold_latency_after_arrival_ms": latency_after(metrics, load.started + arrival_s + 2),
        "broadcast_p99_ms": summary["broadcast_p99_ms"],
        "haproxy_down_events": system.get("haproxy_down_events"),  # a node out of rotation (/ready failed)
        "haproxy_down_events_liveness": system.get("haproxy_down_events_liveness"),  # /health failed too
        "answers_5xx": sum(answers_5xx.values()),
        "answers_5xx_by_code": answers_5xx,
        "dropped_connections": sum(dropped.values()),
        "time_to_sell_out_s": summary["time_to_sell_out_s"],
        "admitted_out_of_join_order": queue_out_of_order(metrics.queue_places) if plan.queued else None,
        "position_updates": metrics.counts.get("queue_position_answers", 0),
        "position_updates_per_second": round(metrics.counts.get("queue_position_answers", 0) / seconds, 1),
        "redis_calls": redis_calls,
        "redis_calls_per_admitted_buyer": round(redis_calls / admitted, 1) if redis_calls and admitted else None,
        "redis_calls_by_command": system.get("redis_calls_by_command", {}),
        "holds_pending_past_expiry": {"most_at_once": load.overdue_holds_max,
                                      "worst_s": round(load.overdue_worst_seconds, 2)},
        "load_average_before": system.get("load_average_before"),
        "load_average_after": system.get("load_average_after"),
        "haproxy_down_lines": system.get("haproxy_down_lines", []),
    }
    figures["goals_met"] = {name: figures[name] is not None and figures[name] <= bound
                            for name, bound in GOALS.items()} if plan.queued else None
    return figures


def print_figures(label: str, figures: dict[str, Any]) -> None:
    lat = figures["admitted_hold_latency_ms"]
    after = figures["admitted_hold_latency_after_arrival_ms"]
    say(f"  [{label}] admitted {figures['admitted_buyers']}, hold p50 {lat['p50']} ms p99 {lat['p99']} ms "
        f"(after the arrival: p50 {after['p50']} ms p99 {after['p99']} ms), "
        f"broadcast p99 {figures['broadcast_p99_ms']} ms, DOWN {figures['haproxy_down_events']}, "
        f"5xx {figures['answers_5xx']}, dropped {figures['dropped_connections']}, "
        f"sold out at {figures['time_to_sell_out_s']} s, out of order {figures['admitted_out_of_join_order']}, "
        f"position updates {figures['position_updates_per_second']}/s, "
        f"Redis calls per admitted buyer {figures['redis_calls_per_admitted_buyer']}, "
        f"holds PENDING past expiry {figures['holds_pending_past_expiry']}")


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
    print_figures("queue " + ("off" if summary["rush_figures"]["queue"] == "off" else "on"), summary["rush_figures"])


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
