"""Where the load goes: a local cluster started here (services, N nodes, HAProxy), or a server named by --host."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from loadtests.rush.options import RushError, RushOptions, say
from server.cluster import LOAD_TEST_LIMITS, ClusterError, LocalCluster, cluster_services


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Target:
    """The system under load: where to send it, where to check it, and what the runner can read of it."""

    base_url: str
    dsn: str
    admin_token: str
    redis_url: str | None = None  # INFO commandstats before and after (REDIS_URL with --host, if set)
    haproxy_log: Path | None = None  # its DOWN events (a cluster started here only)


def open_target(options: RushOptions, stack: contextlib.ExitStack) -> Target:
    """The system under load; what it starts is stopped with `stack`."""
    if not options.host:
        return start_local_cluster(options, stack)
    if not is_loopback(options.host) and not os.environ.get("BOXOFFICE_RUSH_ALLOW_REMOTE"):
        raise RushError(f"--host {options.host} is not a loopback address; load is only sent to "
                        "127.0.0.1 (set BOXOFFICE_RUSH_ALLOW_REMOTE=1 to target your own remote test system)")
    dsn, admin_token = os.environ.get("DATABASE_URL"), os.environ.get("ADMIN_TOKEN")
    if not dsn or not admin_token:
        raise RushError("with --host, set DATABASE_URL (the invariants are checked from PostgreSQL) and "
                        "ADMIN_TOKEN (to create the sessions)")
    return Target(options.host.rstrip("/"), dsn, admin_token, os.environ.get("REDIS_URL") or None)


def start_local_cluster(options: RushOptions, stack: contextlib.ExitStack) -> Target:
    say(f"starting services and {options.nodes} node(s) behind HAProxy ...")
    urls = stack.enter_context(cluster_services("rush"))
    admin_token = os.environ.get("ADMIN_TOKEN") or secrets.token_urlsafe(24)
    hold_ttl = os.environ.get("HOLD_TTL_SECONDS") or str(options.scenario.hold_ttl_seconds)
    env = {**urls, "ADMIN_TOKEN": admin_token, "HOLD_TTL_SECONDS": hold_ttl, "LOG_LEVEL": "WARNING",
           **LOAD_TEST_LIMITS}  # every simulated buyer comes from 127.0.0.1
    try:
        cluster = stack.enter_context(LocalCluster(options.nodes, env=env, state_dir=options.out / "cluster"))
    except ClusterError as exc:
        raise RushError(f"the cluster did not start: {exc}") from exc
    say(f"cluster up: {cluster.url} ({', '.join(cluster.node_ids)}; logs in {cluster.state_dir})")
    return Target(cluster.url, urls["DATABASE_URL"], admin_token, urls["REDIS_URL"], cluster.haproxy_log)
