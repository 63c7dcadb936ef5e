"""The nodes of a local cluster: N `<python> -m server.cli serve` processes on free loopback ports, behind one
HAProxy (server.cluster.haproxy), for `boxoffice cluster`, the multi-node tests and the rush runner.

HAProxy reaches the nodes over Unix sockets (`link="unix"`, the default): everything runs on one machine,
and a Unix socket moves a frame for 40-60 % of a loopback TCP connection's CPU (a throwaway
measurement here, 667 sockets, 1.5 kB writes: 5.5 against 14 us per send, 7.7 against 13 us per
receive). Every broadcast frame crosses that link once, so it is a large share of what a seat change costs
the machine. Each node keeps its TCP port too (direct access: tests, metrics, the benchmark's probes).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from core.settings import WS_FRAMES_PER_MACHINE
from server.cluster.haproxy import MAX_NODES, backend_servers, haproxy_env, start_haproxy
from server.cluster.probe import PROBE_ERRORS, ROOT, ClusterError, http_get, tail
from server.embedded import find_haproxy, free_port, stop_group

log = logging.getLogger("boxoffice.cluster")

SERVICE_URLS = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")
STOP_TIMEOUT = 10.0
LINKS = ("unix", "tcp")  # how HAProxy reaches the nodes
SUN_PATH_MAX = 100  # a Unix socket's path must fit in sockaddr_un.sun_path (108 bytes on Linux)


# The rush, the benchmarks and the multi-node tests run every client from one address (127.0.0.1): they turn
# the per-caller limits off, explicitly (docs/security.md has the defaults a real deployment keeps).
LOAD_TEST_LIMITS = {"RATE_LIMIT_PER_SECOND": "0", "RATE_LIMIT_ANON_PER_SECOND": "0", "MAX_SEATS_PER_ADDRESS": "0",
                    "WS_MAX_SOCKETS_PER_ADDRESS": "0", "HAPROXY_MAX_SOCKETS_PER_ADDRESS": "1000000"}


def _unique_free_ports(count: int, taken: set[int]) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    return ports


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # each child leads its own process group (start_new_session): signal the group, so nothing it
    # may have started is left behind
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _terminate(proc: subprocess.Popen[bytes] | None, timeout: float, sig: int = signal.SIGTERM) -> int | None:
    """Send `sig` to the process group, wait up to `timeout`, then SIGKILL; return the exit code."""
    return stop_group(proc, timeout, sig)


class LocalCluster:
    """N boxoffice nodes and one HAProxy in front of them, as local processes.

    `env` must carry the service URLs (DATABASE_URL, REDIS_URL, KAFKA_BOOTSTRAP_SERVERS) -- the caller
    owns the backing services -- plus any setting the nodes should share (ADMIN_TOKEN,
    HOLD_TTL_SECONDS, ...). Node `i` (0-based) is `node_ids[i]` == "node-<i+1>", listens on
    `node_urls[i]` and is HAProxy's server `node<i+1>`; its port is kept across restarts. With `link="unix"`
    HAProxy reaches node i on the Unix socket `node_sockets[i]`, in a folder of its own that only this user
    can enter (a node believes X-Forwarded-For from that socket, as from a loopback peer).
    """

    def __init__(self, nodes: int, port: int = 0, env: Mapping[str, str] | None = None,
                 state_dir: Path | str = Path(".boxoffice") / "cluster", *, python: str | None = None,
                 haproxy: str | None = None, ready_timeout: float = 60.0, link: str = "unix") -> None:
        if not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"nodes must be between 1 and {MAX_NODES} (haproxy.cfg has {MAX_NODES} server slots)")
        if link not in LINKS:
            raise ValueError(f"link must be one of {LINKS}, not {link!r}")
        self.env: dict[str, str] = {**os.environ, **(env or {})}
        missing = [k for k in SERVICE_URLS if not self.env.get(k)]
        if missing:
            # a node without the URLs would start its own embedded stack: N private databases
            raise ClusterError(f"set {', '.join(missing)} (e.g. from EmbeddedStack.start()) before starting a cluster")
        self.nodes = nodes
        self.state_dir = Path(state_dir).resolve()
        self.python = python or sys.executable
        self.haproxy_bin = haproxy or find_haproxy()
        self.ready_timeout = ready_timeout
        self.port = port or free_port()
        self.node_ports = _unique_free_ports(nodes, {self.port})
        self.stats_port = _unique_free_ports(1, {self.port, *self.node_ports})[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.stats_url = f"http://127.0.0.1:{self.stats_port}/stats"
        self.node_urls = [f"http://127.0.0.1:{p}" for p in self.node_ports]
        self.node_ids = [f"node-{i + 1}" for i in range(nodes)]
        self.link = link
        self.socket_dir: Path | None = None  # made by start(), removed by stop()
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * nodes
        self.haproxy_proc: subprocess.Popen[bytes] | None = None
        self._stopping = False

    # ---- paths and environments -------------------------------------------------------------

    def log_path(self, i: int) -> Path:
        return self.state_dir / f"{self.node_ids[i]}.log"

    @property
    def haproxy_log(self) -> Path:
        return self.state_dir / "haproxy.log"

    @property
    def node_sockets(self) -> list[Path]:
        """The nodes' Unix sockets (none with link="tcp", or before start())."""
        if self.socket_dir is None:
            return []
        return [self.socket_dir / f"{node_id}.sock" for node_id in self.node_ids]

    def node_addr(self, i: int) -> str:
        """Where HAProxy reaches node i: `unix@<path>` or `127.0.0.1:<port>` (haproxy.cfg's NODEn_ADDR)."""
        sockets = self.node_sockets
        return f"unix@{sockets[i]}" if sockets else f"127.0.0.1:{self.node_ports[i]}"

    def node_env(self, i: int) -> dict[str, str]:
        env = {**self.env, "NODE_ID": self.node_ids[i], "HOST": "127.0.0.1", "PORT": str(self.node_ports[i])}
        env.pop("UNIX_SOCKET", None)
        if self.node_sockets:
            env["UNIX_SOCKET"] = str(self.node_sockets[i])
        # the nodes share this machine's cores, and with them what it can carry in broadcast frames
        if not env.get("WS_MAX_FRAMES_PER_SECOND", "").strip():
            env["WS_MAX_FRAMES_PER_SECOND"] = str(WS_FRAMES_PER_MACHINE // self.nodes)
        return env

    def haproxy_env(self) -> dict[str, str]:
        return haproxy_env(self.env, [self.node_addr(i) for i in range(self.nodes)], self.port, self.stats_port)

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        """Start every node and HAProxy; return when each node is ready and HAProxy routes to all of them."""
        if self.haproxy_bin is None:
            raise ClusterError("haproxy is not installed (Debian: apt-get install haproxy)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._stopping = False
        if self.link == "unix" and self.socket_dir is None:
            self.socket_dir = self._make_socket_dir()
        atexit.register(self.stop)
        try:
            for i in range(self.nodes):  # spawn all first: their start-ups overlap
                self._spawn_node(i)
            for i in range(self.nodes):
                self.wait_node_ready(i)
            self._start_haproxy()
            self.wait_routed()
        except BaseException:
            self.stop()
            raise
        log.info("cluster of %d nodes behind %s", self.nodes, self.url)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop HAProxy and every node (SIGTERM, SIGKILL after `timeout`); leaves no process behind."""
        self._stopping = True
        atexit.unregister(self.stop)
        _terminate(self.haproxy_proc, timeout)
        for proc in self.procs:  # SIGTERM to all first so their graceful shutdowns overlap
            if proc is not None and proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        for proc in self.procs:
            _terminate(proc, timeout)
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            self.socket_dir = None

    def _make_socket_dir(self) -> Path | None:
        """A private folder (mode 0700) for the nodes' sockets, short enough for sun_path; else TCP."""
        for parent in (None, "/tmp"):  # noqa: S108 - a private mkdtemp folder, not a fixed name
            folder = Path(tempfile.mkdtemp(prefix="boxoffice-", dir=parent))
            if len(str(folder / f"{self.node_ids[-1]}.sock")) <= SUN_PATH_MAX:
                return folder
            folder.rmdir()
        log.warning("no short enough folder for Unix sockets: HAProxy reaches the nodes over TCP")
        return None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- nodes ----------------------------------------------------------------------------------

    def _spawn_node(self, i: int) -> None:
        with open(self.log_path(i), "ab") as logf:
            self.procs[i] = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [self.python, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(self.node_ports[i])],
                cwd=ROOT, env=self.node_env(i), stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches the launcher, which stops nodes in order
            )

    def alive(self, i: int) -> bool:
        proc = self.procs[i]
        return proc is not None and proc.poll() is None

    def pid(self, i: int) -> int:
        proc = self.procs[i]
        if proc is None:
            raise ClusterError(f"{self.node_ids[i]} was never started")
        return proc.pid

    def wait_node_ready(self, i: int, timeout: float | None = None) -> None:
        """Until node i answers 200 on /ready; ClusterError (with its log) if it exits or times out."""
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        url = self.node_urls[i] + "/ready"
        status: int | str = "no answer"
        while time.monotonic() < deadline:
            proc = self.procs[i]
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise ClusterError(f"{self.node_ids[i]} exited with code {code} while starting; "
                                   f"last lines of {self.log_path(i)}:\n{tail(self.log_path(i))}")
            try:
                status, _, _ = http_get(url)
                if status == 200:
                    return
            except PROBE_ERRORS:
                pass
            time.sleep(0.1)
        raise ClusterError(f"{self.node_ids[i]} not ready on {url} within the timeout (last: {status}); "
                           f"last lines of {self.log_path(i)}:\n{tail(self.log_path(i))}")

    def kill_node(self, i: int, sig: int = signal.SIGKILL, timeout: float = STOP_TIMEOUT) -> int | None:
        """Send `sig` to node i and wait for it to exit (SIGKILL after `timeout`); return its exit code."""
        proc = self.procs[i]
        if proc is None:
            return None
        return _terminate(proc, timeout, sig)

    def start_node(self, i: int, wait_routed: bool = True) -> None:
        """(Re)start node i on its port; wait until it is ready and, by default, HAProxy routes to it again."""
        if self.alive(i):
            return
        self._spawn_node(i)
        self.wait_node_ready(i)
        if wait_routed and self.haproxy_proc is not None:
            self.wait_server_status(i, "UP")

    # ---- HAProxy --------------------------------------------------------------------------------

    def _start_haproxy(self) -> None:
        assert self.haproxy_bin is not None
        self.haproxy_proc = start_haproxy(self.haproxy_bin, self.haproxy_env(), self.port, self.haproxy_log)

    def servers(self) -> dict[str, dict[str, str]]:
        """HAProxy's stats of the `nodes` backend: node id -> its CSV row (status, addr, check_status, ...)."""
        return backend_servers(self.stats_url, self.node_ids)

    def server_status(self) -> dict[str, str]:
        """HAProxy's view of the `nodes` backend: node id -> status (UP, DOWN, MAINT, 'UP 1/2', ...)."""
        return {node: row["status"] for node, row in self.servers().items()}

    def wait_server_status(self, i: int, status: str, timeout: float = 15.0) -> None:
        """Until HAProxy's health checks put node i in `status` ("UP" or "DOWN")."""
        deadline = time.monotonic() + timeout
        seen = "?"
        while time.monotonic() < deadline:
            with contextlib.suppress(*PROBE_ERRORS):
                seen = self.server_status().get(self.node_ids[i], "?")
                if seen == status:
                    return
            time.sleep(0.1)
        raise ClusterError(f"haproxy still sees {self.node_ids[i]} as {seen!r}, not {status!r}")

    def wait_routed(self, timeout: float | None = None) -> None:
        """Until a request through HAProxy has reached every live node (round robin)."""
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        wanted = {self.node_ids[i] for i in range(self.nodes) if self.alive(i)}
        seen: set[str] = set()
        while time.monotonic() < deadline:
            if self.haproxy_proc is None or self.haproxy_proc.poll() is not None:
                raise ClusterError(f"haproxy exited; last lines of {self.haproxy_log}:\n{tail(self.haproxy_log)}")
            with contextlib.suppress(*PROBE_ERRORS):
                status, headers, _ = http_get(self.url + "/ready")
                if status == 200:
                    seen.add(headers.get("X-Node-Id", ""))
                    if wanted <= seen:
                        return
                    continue
            time.sleep(0.05)
        raise ClusterError(f"haproxy on {self.url} reached only {sorted(seen)} of {sorted(wanted)}")

    # ---- foreground ------------------------------------------------------------------------------

    def watch(self, poll: float = 0.5) -> int:
        """Block until HAProxy exits (or Ctrl-C); report nodes that exit on their own meanwhile."""
        reported: set[int] = set()
        while True:
            if self.haproxy_proc is None or self.haproxy_proc.poll() is not None:
                print(f"haproxy exited; see {self.haproxy_log}", file=sys.stderr, flush=True)
                return 1
            for i, proc in enumerate(self.procs):
                if proc is not None and proc.poll() is not None and i not in reported:
                    reported.add(i)
                    print(f"{self.node_ids[i]} exited with code {proc.returncode}; HAProxy routes around it "
                          f"(log: {self.log_path(i)})", file=sys.stderr, flush=True)
                elif proc is not None and proc.poll() is None:
                    reported.discard(i)
            time.sleep(poll)
