"""The two deployment files every cluster uses, haproxy.cfg and docker-compose.yml, and how the local cluster fills
in the first (node addresses, Unix sockets or TCP, the machine's broadcast frame budget)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import WS_FRAMES_PER_MACHINE
from server.cluster import ROOT, SERVICE_URLS, LocalCluster, haproxy_config_path
from tests.cluster_support import (
    docker_compose_binary,
    haproxy_binary,
)

pytestmark = pytest.mark.cluster



def haproxy_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not re.fullmatch(r"NODE\d+_ADDR|HAPROXY_.*", k)}
    return subprocess.run([haproxy_binary(), "-c", "-f", str(haproxy_config_path())],  # noqa: S603
                          env={**clean, **env}, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("nodes", [1, 3, 8])
def test_haproxy_cfg_is_valid_for_one_to_eight_nodes(nodes: int) -> None:
    env = {f"NODE{i}_ADDR": f"127.0.0.1:{18080 + i}" for i in range(1, nodes + 1)}
    env["HAPROXY_STATS_BIND"] = "127.0.0.1:18404"
    result = haproxy_check(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ALERT" not in result.stdout + result.stderr


def test_haproxy_cfg_refuses_to_run_without_a_node() -> None:
    result = haproxy_check({})
    assert result.returncode != 0


def test_nodes_on_one_machine_share_its_broadcast_frame_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """`boxoffice cluster` runs its nodes on one machine: each gets its share of what the machine carries,
    unless WS_MAX_FRAMES_PER_SECOND says otherwise."""
    monkeypatch.delenv("WS_MAX_FRAMES_PER_SECOND", raising=False)
    urls = {key: "set-but-unused" for key in SERVICE_URLS}  # nothing is started here

    def budgets(nodes: int, **env: str) -> set[str]:
        cluster = LocalCluster(nodes, env={**urls, **env})
        return {cluster.node_env(i)["WS_MAX_FRAMES_PER_SECOND"] for i in range(nodes)}

    assert budgets(1) == {str(WS_FRAMES_PER_MACHINE)}
    assert budgets(3) == {str(WS_FRAMES_PER_MACHINE // 3)}
    assert budgets(3, WS_MAX_FRAMES_PER_SECOND="9000") == {"9000"}


def test_the_local_cluster_links_haproxy_to_its_nodes_by_unix_socket_or_tcp() -> None:
    """The environment each process gets: HAProxy's NODEn_ADDR and the node's UNIX_SOCKET agree (nothing started)."""
    urls = {key: "set-but-unused" for key in SERVICE_URLS}
    tcp = LocalCluster(2, env={**urls, "UNIX_SOCKET": "/tmp/inherited.sock"}, link="tcp")  # noqa: S108
    assert [tcp.haproxy_env()[f"NODE{i + 1}_ADDR"] for i in range(2)] == [
        f"127.0.0.1:{port}" for port in tcp.node_ports]
    assert all("UNIX_SOCKET" not in tcp.node_env(i) for i in range(2))  # never one the caller's env had

    unix = LocalCluster(2, env=urls)
    folder = unix.socket_dir = unix._make_socket_dir()  # what start() does first
    try:
        assert folder is not None and stat.S_IMODE(folder.stat().st_mode) == 0o700
        for i in range(2):
            path = unix.node_env(i)["UNIX_SOCKET"]
            assert unix.haproxy_env()[f"NODE{i + 1}_ADDR"] == f"unix@{path}"
            assert Path(path).parent == unix.socket_dir and len(path) <= 100  # fits sockaddr_un
            assert unix.node_env(i)["PORT"] == str(unix.node_ports[i])  # the TCP port stays
    finally:
        unix.stop()
    assert unix.socket_dir is None and not folder.exists()  # stop() removes the folder
    with pytest.raises(ValueError, match="link"):
        LocalCluster(1, env=urls, link="carrier-pigeon")


def test_docker_compose_config_is_valid() -> None:
    result = subprocess.run([docker_compose_binary(), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],  # noqa: S603
                            capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
                            env={**os.environ, "ADMIN_TOKEN": "a-secret-of-32-characters-or-more!",
                                 "POSTGRES_PASSWORD": "compose-test-password"})
    assert result.returncode == 0, result.stderr


def test_docker_compose_runs_three_nodes_behind_the_same_haproxy_cfg() -> None:
    result = subprocess.run([docker_compose_binary(), "-f", str(ROOT / "docker-compose.yml"), "config"],  # noqa: S603
                            capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
                            env={**os.environ, "ADMIN_TOKEN": "compose-test-token",
                                 "POSTGRES_PASSWORD": "compose-test-password"})
    services: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    apps = {name: svc for name, svc in services.items() if name.startswith("app")}
    assert sorted(apps) == ["app1", "app2", "app3"]
    for name, svc in apps.items():
        env = svc["environment"]
        assert env["NODE_ID"] == name
        assert env["ADMIN_TOKEN"] == "compose-test-token"
        assert env["KAFKA_IDEMPOTENCE"] == "true"
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"].startswith("redis://redis:6379")
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert Path(svc["build"]["context"]).resolve() == ROOT
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    proxy = services["haproxy"]
    assert {f"NODE{i}_ADDR": f"app{i}:8080" for i in (1, 2, 3)}.items() <= proxy["environment"].items()
    # docker-compose 1.x prints short syntax ("src:dst:ro", "8080:8080/tcp"), 2.x long syntax (mappings)
    volumes = [v if isinstance(v, dict) else dict(zip(("source", "target"), v.split(":"), strict=False))
               for v in proxy["volumes"]]
    mounted = [Path(v["source"]).resolve() for v in volumes if v["target"].endswith("haproxy.cfg")]
    assert mounted == [ROOT / "haproxy.cfg"]
    published = [str(p["published"]) if isinstance(p, dict) else str(p).split(":")[-2] for p in proxy["ports"]]
    assert "8080" in published
