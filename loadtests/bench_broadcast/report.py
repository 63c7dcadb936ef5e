"""The benchmark's figures as printed: one block per run, with the command and the machine's speed probe."""

from __future__ import annotations

from typing import Any


def report(result: dict[str, Any]) -> str:
    lat, dl, miss, mem, ob = (result["latency_ms"], result["delivery"], result["missed"], result["memory"],
                              result["outbox"])
    return "\n".join([
        "",
        f"broadcast benchmark ({result['started']})",
        f"  command        : {result['command']}",
        f"  setup          : {result['setup']['nodes']} nodes behind HAProxy ({result['setup']['link']} link, "
        f"{result['setup']['frames_per_second_per_node']} frames/s each), "
        f"{result['sockets']['connected']} sockets {result['sockets']['by_node']}, "
        f"{result['load']['holds_per_second']} holds/s for {result['load']['seconds']} s",
        f"  latency        : p50 {lat['p50']:.0f} ms, p90 {lat['p90']:.0f} ms, p99 {lat['p99']:.0f} ms, "
        f"max {lat['max']:.0f} ms  ({lat['samples']} frames, commit -> receipt)",
        f"  delivered      : {dl['frames_per_second']:.0f} frames/s, {dl['changes_per_second']:.0f} changes/s",
        f"  every socket   : received at least {dl['changes_per_socket_min']} changes of the "
        f"{dl['outbox_changes_per_socket']} in the outbox (fewer only if a tick coalesced two versions of a seat)",
        f"  missed         : {miss['missed_seat_states']} seat states on {miss['sockets_not_converged']} sockets; "
        f"{miss['sockets_closed_during_run']} sockets closed {miss['close_codes']}, {miss['resyncs']} resyncs",
        f"  memory         : {mem['kib_per_socket']} KiB RSS per idle socket (the slope after a warm-up wave; "
        f"{mem['kib_per_socket_all_in']} KiB all-in, one-time costs included)",
        f"  outbox         : {ob['events']} events, commit -> relay claim "
        f"p50 {ob['commit_to_published_at_ms']['p50']} ms, p99 {ob['commit_to_published_at_ms']['p99']} ms",
        f"  node write     : commit -> the node's write p50 {result['commit_to_node_write']['p50']}, "
        f"p99 {result['commit_to_node_write']['p99']} (node histograms, per change batch)\n"
        f"  node consumers : {result.get('node_consumers') or 'no restart, no hole'}",
        f"  hold failures  : {result['load']['failed'] or 'none'}",
        f"  machine        : {result['machine']['cpus']} cores; speed probe {result['machine']['speed_probe_s']} s "
        "(5 million Python additions, best of 3: lower is faster)",
        "",
    ])
