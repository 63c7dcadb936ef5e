"""Settings: one dataclass read from the environment (and a `.env` file if present)."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


def read_dotenv(path: Path = Path(".env")) -> None:
    """Load KEY=VALUE lines from `path` into os.environ without overriding what is already set."""
    if not path.is_file():
        return
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip().strip('"').strip("'")
        os.environ.setdefault(key, value)


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _origins(value: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in value.split(",") if o.strip())


def env(name: str, parse: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """A field's metadata: read from the environment variable `name` (blank or unset: the field's default),
    with `parse` (by default the type of the default: int, float, bool or str)."""
    return {"env": name, "parse": parse}


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def is_cluster_url(url: str) -> bool:
    return url.strip().lower().startswith(CLUSTER_SCHEMES)


def plain_redis_url(url: str) -> str:
    """`redis+cluster://host:port` -> `redis://host:port` (the form redis-py reads; any node of the cluster)."""
    scheme, sep, rest = url.strip().partition("://")
    return f"{scheme.lower().removesuffix('+cluster')}{sep}{rest}"


def _networks(value: str) -> tuple[str, ...]:
    """TRUSTED_PROXIES: comma-separated networks (a bare address is a /32 or /128); anything else stops the node."""
    try:
        return tuple(str(ipaddress.ip_network(n.strip(), strict=False)) for n in value.split(",") if n.strip())
    except ValueError as exc:
        raise ValueError(f"TRUSTED_PROXIES must be a comma-separated list of networks (10.0.0.0/8, 172.18.0.5): "
                         f"{exc}") from None


MIN_ADMIN_TOKEN = 32  # characters: shorter admin tokens are refused unless the node listens on loopback only
LOOPBACK_HOSTS = frozenset({"localhost", "ip6-localhost"})


def loopback_only(host: str) -> bool:
    """True if binding `host` opens no port to other machines (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# Broadcast frames per second one machine carries best, node, proxy and clients together (bench_broadcast,
# 2,000 sockets on the 2-core box: one node at this budget, or three nodes at a third of it each, gave the
# lowest p99; one node is CPU-bound near 21,000 frames/s there). A node alone on its machine gets all of it;
# nodes sharing one machine (`boxoffice cluster`) share it.
WS_FRAMES_PER_MACHINE = 21_000


@dataclass(frozen=True)
class Settings:
    """Every setting of a node, each default written once; `from_env` reads the fields that name a variable."""

    database_url: str = field(default="", metadata=env("DATABASE_URL"))
    redis_url: str = field(default="", metadata=env("REDIS_URL"))
    # the Redis Cluster client (so does a redis+cluster:// URL: see uses_redis_cluster)
    redis_cluster: bool = field(default=False, metadata=env("REDIS_CLUSTER"))
    kafka_bootstrap_servers: str = field(default="", metadata=env("KAFKA_BOOTSTRAP_SERVERS"))
    hold_ttl_seconds: int = field(default=30, metadata=env("HOLD_TTL_SECONDS"))
    max_seats_per_hold: int = field(default=10, metadata=env("MAX_SEATS_PER_HOLD"))
    max_seats_per_user: int = field(default=20, metadata=env("MAX_SEATS_PER_USER"))
    # a PENDING hold may be extended once by this many seconds (at most 300; 0: no extension), unless buyers
    # wait for its session (docs/waiting-list.md)
    hold_extension_seconds: int = field(default=30, metadata=env("HOLD_EXTENSION_SECONDS"))
    # ADMIN_TOKEN; when unset, a random one for the life of the process (and admin_token_generated)
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    admin_token_generated: bool = True
    auth_required: bool = field(default=True, metadata=env("AUTH_REQUIRED"))
    # a user's token is refused this many seconds after it was issued (the user's creation)
    token_ttl: int = field(default=7 * 24 * 3600, metadata=env("TOKEN_TTL"))
    node_id: str = field(default="", metadata=env("NODE_ID"))
    host: str = field(default="127.0.0.1", metadata=env("HOST"))
    port: int = field(default=8080, metadata=env("PORT"))
    # a Unix socket the node also listens on, for a proxy on the same machine (see server.cluster)
    unix_socket: str = field(default="", metadata=env("UNIX_SOCKET", str.strip))
    log_level: str = field(default="INFO", metadata=env("LOG_LEVEL", str.upper))
    log_format: str = field(default="json", metadata=env("LOG_FORMAT"))
    # with LOG_DIR set, each node also logs JSON lines to <LOG_DIR>/boxoffice-<node>.log, rolled over daily
    # (midnight UTC) into boxoffice-<node>-YYYY-MM-DD.log.gz, of which the newest LOG_RETENTION_DAYS are kept
    log_dir: str = field(default="", metadata=env("LOG_DIR", str.strip))
    log_retention_days: int = field(default=14, metadata=env("LOG_RETENTION_DAYS"))
    allowed_origins: tuple[str, ...] = field(default=(), metadata=env("ALLOWED_ORIGINS", _origins))
    # Kafka
    kafka_topic: str = field(default="seat-events", metadata=env("KAFKA_TOPIC"))
    kafka_partitions: int = field(default=6, metadata=env("KAFKA_PARTITIONS"))
    kafka_idempotence: bool = field(default=False, metadata=env("KAFKA_IDEMPOTENCE"))
    kafka_fetch_max_wait_ms: int = field(default=10, metadata=env("KAFKA_FETCH_MAX_WAIT_MS"))
    # the StarSoft API's business events on its topics, beside seat-events (realtime.integration)
    integration_events: bool = field(default=False, metadata=env("INTEGRATION_EVENTS"))
    # Jobs
    expiry_sweep_interval: float = field(default=0.25, metadata=env("EXPIRY_SWEEP_INTERVAL"))
    outbox_sweep_interval: float = field(default=1.0, metadata=env("OUTBOX_SWEEP_INTERVAL"))
    # the waiting lists' backstop: lines that wait while seats are free are served again this often
    waitlist_sweep_interval: float = field(default=1.0, metadata=env("WAITLIST_SWEEP_INTERVAL"))
    # Retention (jobs.retention): how long records nobody needs any more are kept; 0 keeps them forever
    retention_interval: float = field(default=600.0, metadata=env("RETENTION_INTERVAL_SECONDS"))
    outbox_retention_hours: int = field(default=72, metadata=env("OUTBOX_RETENTION_HOURS"))
    idempotency_retention_hours: int = field(default=24, metadata=env("IDEMPOTENCY_RETENTION_HOURS"))
    reservation_retention_days: int = field(default=30, metadata=env("RESERVATION_RETENTION_DAYS"))
    # Realtime
    ws_broadcast_tick_ms: int = field(default=20, metadata=env("WS_BROADCAST_TICK_MS"))
    ws_max_frames_per_second: int = field(default=WS_FRAMES_PER_MACHINE, metadata=env("WS_MAX_FRAMES_PER_SECOND"))
    ws_queue_size: int = 256
    ws_max_msg_size: int = 16 * 1024
    ws_rate_per_second: float = field(default=20.0, metadata=env("WS_RATE_PER_SECOND"))
    ws_rate_burst: int = field(default=40, metadata=env("WS_RATE_BURST"))
    ws_heartbeat: float = 20.0
    ws_idle_timeout: float = 300.0
    # open sockets per client address on one node; 0: no cap
    ws_max_sockets_per_address: int = field(default=50, metadata=env("WS_MAX_SOCKETS_PER_ADDRESS"))
    # HTTP
    max_body_bytes: int = 64 * 1024
    db_pool_min: int = field(default=2, metadata=env("DB_POOL_MIN"))
    db_pool_max: int = field(default=20, metadata=env("DB_POOL_MAX"))
    # the longest a request waits for a free database connection (then 503 database_unavailable)
    db_pool_timeout: float = field(default=5.0, metadata=env("DB_POOL_TIMEOUT"))
    redis_gate: bool = field(default=True, metadata=env("REDIS_GATE"))
    redis_timeout: float = field(default=0.5, metadata=env("REDIS_TIMEOUT"))
    # holds written to PostgreSQL in one transaction at most (1: no batching)
    hold_batch_max: int = field(default=32, metadata=env("HOLD_BATCH_MAX"))
    # hold writes in flight at once per node; holds arriving meanwhile are batched
    hold_writers: int = field(default=4, metadata=env("HOLD_WRITERS"))
    # "asyncio" for the standard library's loop
    event_loop: str = field(default="uvloop", metadata=env("EVENT_LOOP", str.lower))
    # Limits, on by default (docs/security.md); 0 turns one off. Writes per second per user (REST writes and
    # socket holds and releases); writes per client address without a valid user token (guest sign-ups)
    rate_limit_per_second: float = field(default=1.0, metadata=env("RATE_LIMIT_PER_SECOND"))
    rate_limit_burst: int = field(default=10, metadata=env("RATE_LIMIT_BURST"))
    rate_limit_anon_per_second: float = field(default=0.05, metadata=env("RATE_LIMIT_ANON_PER_SECOND"))
    rate_limit_anon_burst: int = field(default=10, metadata=env("RATE_LIMIT_ANON_BURST"))
    # seats one client address may hold within one HOLD_TTL_SECONDS, counted in Redis across every node
    max_seats_per_address: int = field(default=40, metadata=env("MAX_SEATS_PER_ADDRESS"))
    # whose X-Forwarded-For is believed (a node's Unix socket always is: only local processes reach it)
    trusted_proxies: tuple[str, ...] = field(default=("127.0.0.1/32", "::1/128"),
                                             metadata=env("TRUSTED_PROXIES", _networks))
    # Load shedding: requests a node works on at once (WebSocket upgrades and /health, /ready, /metrics are not
    # counted); beyond it a request is answered 503 `overloaded` at once. 0 turns it off.
    max_inflight_requests: int = field(default=1024, metadata=env("MAX_INFLIGHT_REQUESTS"))
    # holds (REST and socket together) a node has taken and not yet answered; beyond it 503 `overloaded`
    max_pending_holds: int = field(default=1024, metadata=env("MAX_PENDING_HOLDS"))
    # Waiting rooms (storage.waiting_room): the secret admissions are signed with (unset: a random one kept in
    # PostgreSQL, shared by every node), how long an admission lets a buyer hold, and how long a buyer who
    # stops watching keeps their place
    queue_secret: str = field(default="", repr=False, metadata=env("QUEUE_SECRET"))
    queue_admission_ttl_seconds: int = field(default=600, metadata=env("QUEUE_ADMISSION_TTL_SECONDS"))
    queue_grace_seconds: float = field(default=60.0, metadata=env("QUEUE_GRACE_SECONDS"))
    # The waiting room that turns itself on (storage.queue_auto): when hold attempts on one session without a
    # waiting room reach this many per second over the window, cluster-wide, its line opens at QUEUE_AUTO_RATE
    # buyers per second. 0 (the default): never by itself -- clients that know nothing of admissions keep working
    queue_auto_holds_per_second: float = field(default=0.0, metadata=env("QUEUE_AUTO_HOLDS_PER_SECOND"))
    queue_auto_window_seconds: int = field(default=5, metadata=env("QUEUE_AUTO_WINDOW_SECONDS"))
    queue_auto_rate: float = field(default=25.0, metadata=env("QUEUE_AUTO_RATE"))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        if env is None:
            read_dotenv()
            env = dict(os.environ)
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata.get("env")
            raw = env.get(name, "") if name else ""
            if raw.strip():
                parse = f.metadata["parse"] or _PARSERS[type(f.default)]
                values[f.name] = parse(raw)
        admin = env.get("ADMIN_TOKEN", "")
        if admin:
            values.update(admin_token=admin, admin_token_generated=False)
        values.update(overrides)
        return cls(**values)

    @property
    def uses_redis_cluster(self) -> bool:
        return self.redis_cluster or is_cluster_url(self.redis_url)

    def admin_token_problem(self) -> str | None:
        """Why this admin token must not guard a node reachable from other machines (None: it may)."""
        if len(self.admin_token) >= MIN_ADMIN_TOKEN or loopback_only(self.host):
            return None
        return (f"ADMIN_TOKEN is {len(self.admin_token)} characters long; a node listening on {self.host} needs "
                f"{MIN_ADMIN_TOKEN} or more (make one: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'), "
                f"or listen on 127.0.0.1 only")

    def with_node_id(self) -> Settings:
        if self.node_id:
            return self
        return replace(self, node_id=f"{socket.gethostname()}:{self.port}")


_PARSERS: dict[type, Callable[[str], Any]] = {int: int, float: float, bool: _bool, str: str}
