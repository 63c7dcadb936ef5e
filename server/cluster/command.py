"""`boxoffice cluster`: the backing services, migrated and seeded once, N nodes and HAProxy in the foreground until
Ctrl-C; and the services of a local cluster for the rush runner."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
from collections.abc import Iterator, Mapping
from types import FrameType

from server.cluster.haproxy import MAX_NODES
from server.cluster.local import LocalCluster
from server.cluster.probe import ClusterError
from server.embedded import find_haproxy, port_open


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    # `kill <launcher pid>` then stops everything exactly like Ctrl-C does
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cluster_banner(cluster: LocalCluster, admin_token: str, ids: Mapping[str, str]) -> str:
    session = ids.get("sessionId")
    lines = [
        "",
        f"boxoffice cluster: {cluster.nodes} node(s) behind HAProxy",
        f"  url         : {cluster.url}",
        f"  seat picker : {cluster.url}/" + (f"?session={session}" if session else ""),
        f"  API docs    : {cluster.url}/api-docs",
        f"  admin token : {admin_token}",
        f"  haproxy     : {cluster.stats_url} (stats)",
        *(f"  {nid:<11} : {url}  (pid {cluster.pid(i)})"
          for i, (nid, url) in enumerate(zip(cluster.node_ids, cluster.node_urls, strict=True))),
        "  node link   : " + (f"Unix sockets in {cluster.socket_dir}" if cluster.socket_dir else "TCP"),
        f"  logs        : {cluster.state_dir}",
        "  stop        : Ctrl-C (stops every process it started)",
        "",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def cluster_services(name: str) -> Iterator[dict[str, str]]:
    """The backing services of a local cluster, as `boxoffice` starts them: embedded unless their URLs are set
    (state in $BOXOFFICE_STATE_DIR/`name`), migrated; their URLs also in os.environ; stopped on exit."""
    from server.cli import STATE_DIR, prepare_database, services  # cli imports us lazily

    with services(STATE_DIR / name, embed=True) as urls:
        prepare_database(urls["DATABASE_URL"], demo=False)
        yield urls


def run_cluster(nodes: int, port: int = 8080) -> int:
    """`boxoffice cluster`: services (embedded unless URLs are set), migrate + seed once, N nodes + HAProxy."""
    from server.cli import STATE_DIR, prepare_database, services  # cli imports us lazily

    if not 1 <= nodes <= MAX_NODES:
        print(f"boxoffice cluster: --nodes must be between 1 and {MAX_NODES}", file=sys.stderr)
        return 2
    if find_haproxy() is None:
        print("boxoffice cluster: haproxy is not installed (Debian: apt-get install haproxy)", file=sys.stderr)
        return 2
    if port and port_open(port):
        print(f"boxoffice cluster: port {port} is already in use (choose another with --port)", file=sys.stderr)
        return 2
    try:
        with _sigterm_as_interrupt(), services(STATE_DIR, embed=True) as urls:
            admin_token = os.environ.get("ADMIN_TOKEN") or secrets.token_urlsafe(24)
            ids = prepare_database(urls["DATABASE_URL"], demo=True)
            env = {**urls, "ADMIN_TOKEN": admin_token}
            with LocalCluster(nodes, port, env, STATE_DIR / "cluster") as cluster:
                print(cluster_banner(cluster, admin_token, ids), flush=True)
                try:
                    code = cluster.watch()
                except KeyboardInterrupt:
                    print("\nboxoffice cluster: stopping", flush=True)
                    code = 0
                # a second Ctrl-C while stopping must not leave half of the processes running
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            return code
    except ClusterError as exc:
        print(f"boxoffice cluster: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while starting: everything started so far is already stopped
        print("\nboxoffice cluster: interrupted", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
