"""`boxoffice rush --queue RATE --queue-capacity N --compare`: the waiting room off, then on with each inlet, on
the same cluster, and the figures of every pass in summary.json (docs/waiting-room.md, "Measured")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from server.embedded import EmbeddedStack
from tests.cluster_support import haproxy_binary
from tests.test_rush import ROOT, rush_env

FIGURES = {"queue", "admitted_buyers", "admitted_hold_latency_ms", "admitted_hold_p99_ms", "arrival_s",
           "admitted_hold_latency_after_arrival_ms", "broadcast_p99_ms", "haproxy_down_events",
           "haproxy_down_events_liveness", "answers_5xx", "answers_5xx_by_code", "dropped_connections",
           "time_to_sell_out_s", "admitted_out_of_join_order", "position_updates", "position_updates_per_second",
           "redis_calls", "redis_calls_per_admitted_buyer", "redis_calls_by_command", "holds_pending_past_expiry",
           "load_average_before", "load_average_after", "haproxy_down_lines", "goals_met"}


def test_compare_needs_a_queue_rate(stack: EmbeddedStack, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "server.cli", "rush", "--compare", "--out", str(tmp_path)],
                          cwd=ROOT, env=rush_env(stack), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--compare needs --queue" in proc.stdout + proc.stderr


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_tiny_rush_with_the_queue_off_then_on_reports_both(stack: EmbeddedStack, tmp_path: Path) -> None:
    haproxy_binary()
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "server.cli", "rush", "--scenario", "rush", "--users", "40", "--duration", "12",
         "--nodes", "2", "--queue", "10", "--queue-capacity", "8", "--compare", "--out", str(out)],
        cwd=ROOT, env=rush_env(stack), capture_output=True, text=True, timeout=290,
    )
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, output
    summary = json.loads((out / "summary.json").read_text())
    passes = ("queue_off", "queue_on", "queue_on_capacity")
    assert summary["queue_rate"] == 10 and summary["queue_capacity"] == 8
    assert summary["command"].startswith("boxoffice rush")
    assert summary["invariants_ok"] == dict.fromkeys(passes, True)
    assert summary["double_sales"] == dict.fromkeys(passes, 0)
    off, on, capacity = (summary[label] for label in passes)
    assert set(off) == set(on) == set(capacity) == FIGURES
    assert (off["queue"], on["queue"], capacity["queue"]) == ("off", {"rate": 10}, {"capacity": 8})
    for figures in (on, capacity):
        assert figures["admitted_buyers"] > 0
        assert figures["admitted_out_of_join_order"] == 0
        assert figures["redis_calls"] > 0 and figures["redis_calls_per_admitted_buyer"] > 0
        assert "evalsha" in figures["redis_calls_by_command"]
        assert set(figures["goals_met"]) == set(summary["goals_with_the_queue_on"])
    assert on["position_updates"] > 0 and off["position_updates"] == 0
    assert off["admitted_buyers"] > 0 and off["admitted_out_of_join_order"] is None and off["goals_met"] is None
    assert all(isinstance(summary[label]["haproxy_down_events"], int) for label in passes)
    assert set(summary["goals_met"]) == {"queue_on", "queue_on_capacity"}
    for label in passes:
        assert json.loads((out / label / "summary.json").read_text())["rush_figures"] == summary[label]


def test_out_of_order_counts_a_buyer_told_not_yet_after_a_later_joiner_was_admitted() -> None:
    from loadtests.metrics import queue_out_of_order

    # [session, position, last "not yet" asked at, admitted answered at]
    fair = [["s", 1, 0.0, 5.0], ["s", 2, 4.0, 6.0], ["s", 3, 5.5, 7.0]]
    assert queue_out_of_order(fair) == 0
    # buyer 1 asked at 6.5 and heard "not yet", though buyer 2 (joined later) had heard "admitted" at 6.0
    assert queue_out_of_order([["s", 1, 6.5, 8.0], ["s", 2, 4.0, 6.0]]) == 1
    # a late look is not a wrong: buyer 1's "not yet" was asked before buyer 2's "admitted" came
    assert queue_out_of_order([["s", 1, 5.9, 8.0], ["s", 2, 4.0, 6.0]]) == 0
    # sessions are separate lines
    assert queue_out_of_order([["a", 1, 6.5, 8.0], ["b", 2, 4.0, 6.0]]) == 0


def test_down_events_are_haproxys_log_lines_once_each(tmp_path: Path) -> None:
    from loadtests.rush.system import down_events

    log = tmp_path / "haproxy.log"
    log.write_text(
        "[WARNING]  (1) : Server nodes/node2 is DOWN, reason: Layer7 timeout\n"
        "Server nodes/node2 is DOWN, reason: Layer7 timeout, check duration: 3001ms.\n"
        "Server nodes_alive/node2 is DOWN, reason: Layer7 timeout\n"
        "127.0.0.1:1 [02/Dec/2026:10:00:00.000] boxoffice nodes/node1 0/0/0/1/1 200 10 - - ---- \"GET /ready\"\n")
    assert [line.split(",")[0] for line in down_events(log, 0) or []] == [
        "Server nodes/node2 is DOWN", "Server nodes_alive/node2 is DOWN"]
    assert down_events(log, log.stat().st_size) == [] and down_events(tmp_path / "none.log", 0) is None
