"""HAProxy in front of a local cluster: the one `haproxy.cfg` (the same file docker-compose.yml mounts), the
environment that fills it in (node addresses NODE1_ADDR .. NODE8_ADDR, the binds), its start, and its view of
the nodes (the stats page). Nothing is generated per run."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from server.cluster.probe import ROOT, ClusterError, http_get, tail
from server.embedded import port_open

MAX_NODES = 8  # haproxy.cfg has a conditional server line for NODE1_ADDR .. NODE8_ADDR
START_TIMEOUT = 10.0


def haproxy_config_path() -> Path:
    """The one haproxy.cfg: $HAPROXY_CFG, else the repository root, else the current folder."""
    candidates = [Path(os.environ["HAPROXY_CFG"])] if os.environ.get("HAPROXY_CFG") else []
    candidates += [ROOT / "haproxy.cfg", Path.cwd() / "haproxy.cfg"]
    for path in candidates:
        if path.is_file():
            return path.resolve()
    raise ClusterError("haproxy.cfg not found (looked in: " + ", ".join(map(str, candidates)) + ")")


def haproxy_env(base: Mapping[str, str], node_addrs: Sequence[str], port: int, stats_port: int) -> dict[str, str]:
    """`base` with the nodes' addresses (server i+1 at node_addrs[i]; no stale NODEn_ADDR of the caller's) and
    the binds of the front end and the stats page."""
    env = {k: v for k, v in base.items() if not (k.startswith("NODE") and k.endswith("_ADDR"))}
    env.update({f"NODE{i + 1}_ADDR": addr for i, addr in enumerate(node_addrs)})
    env["HAPROXY_BIND"] = f"127.0.0.1:{port}"
    env["HAPROXY_STATS_BIND"] = f"127.0.0.1:{stats_port}"
    return env


def start_haproxy(binary: str, env: Mapping[str, str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """HAProxy on haproxy.cfg, in the foreground of its own process group; returns once it listens on `port`."""
    config = haproxy_config_path()
    with open(log_path, "ab") as logf:
        # -db: stay in the foreground, so this Popen is HAProxy itself and SIGTERM stops it
        proc = subprocess.Popen(  # noqa: S603
            [binary, "-db", "-f", str(config)], cwd=config.parent, env=dict(env),
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ClusterError(f"haproxy did not start on port {port}; last lines of {log_path}:\n{tail(log_path)}")
        time.sleep(0.05)
    return proc


def backend_servers(stats_url: str, node_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """HAProxy's stats of the `nodes` backend: node id -> its CSV row (status, addr, check_status, ...); server
    `node<i+1>` is node_ids[i]."""
    _, _, body = http_get(stats_url + ";csv", timeout=2.0)
    rows = csv.DictReader(io.StringIO(body.decode().lstrip("# ")))
    by_server = {f"node{i + 1}": node_id for i, node_id in enumerate(node_ids)}
    return {by_server[r["svname"]]: r for r in rows if r.get("pxname") == "nodes" and r.get("svname") in by_server}
