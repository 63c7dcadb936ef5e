"""Settings: one dataclass read from the environment (and a `.env` file if present)."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path


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


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(env: dict[str, str], key: str, default: int) -> int:
    value = env.get(key, "")
    return int(value) if value.strip() else default


def _choice(env: dict[str, str], key: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first is the default); anything else stops the node at start."""
    value = env.get(key, "").strip().lower() or choices[0]
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _float(env: dict[str, str], key: str, default: float) -> float:
    value = env.get(key, "")
    return float(value) if value.strip() else default


def _networks(env: dict[str, str], key: str, default: str) -> tuple[str, ...]:
    """A comma-separated list of networks (a bare address is a /32 or /128); anything else stops the node."""
    raw = env.get(key)
    value = default if raw is None else raw
    try:
        return tuple(str(ipaddress.ip_network(n.strip(), strict=False)) for n in value.split(",") if n.strip())
    except ValueError as exc:
        raise ValueError(f"{key} must be a comma-separated list of networks (10.0.0.0/8, 172.18.0.5): {exc}") from None


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
    database_url: str = ""
    redis_url: str = ""
    kafka_bootstrap_servers: str = ""
    hold_ttl_seconds: int = 30
    max_seats_per_hold: int = 10
    max_seats_per_user: int = 20
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    admin_token_generated: bool = True
    auth_required: bool = True
    # a user's token is refused this many seconds after it was issued (the user's creation)
    token_ttl: int = 7 * 24 * 3600
    node_id: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    # a Unix socket the node also listens on, for a proxy on the same machine (see server.cluster)
    unix_socket: str = ""
    log_level: str = "INFO"
    log_format: str = "json"
    allowed_origins: tuple[str, ...] = ()
    # Kafka
    kafka_topic: str = "seat-events"
    kafka_partitions: int = 6
    kafka_idempotence: bool = False
    kafka_fetch_max_wait_ms: int = 10
    # Jobs
    expiry_sweep_interval: float = 0.25
    outbox_sweep_interval: float = 1.0
    outbox_publish: str = "relay"  # relay | direct (see realtime.relay)
    # Realtime
    ws_broadcast_tick_ms: int = 20
    ws_max_frames_per_second: int = WS_FRAMES_PER_MACHINE
    ws_queue_size: int = 256
    ws_max_msg_size: int = 16 * 1024
    ws_rate_per_second: float = 20.0
    ws_rate_burst: int = 40
    ws_heartbeat: float = 20.0
    ws_idle_timeout: float = 300.0
    ws_max_sockets_per_address: int = 50  # open sockets per client address on one node; 0: no cap
    # HTTP
    max_body_bytes: int = 64 * 1024
    db_pool_min: int = 2
    db_pool_max: int = 20
    redis_gate: bool = True
    redis_timeout: float = 0.5
    hold_batch_max: int = 32  # holds written to PostgreSQL in one transaction at most (1: no batching)
    hold_writers: int = 4  # hold writes in flight at once per node; holds arriving meanwhile are batched
    event_loop: str = "uvloop"  # "asyncio" for the standard library's loop
    # Limits, on by default (docs/security.md); 0 turns one off. Writes per second per user (REST writes and
    # socket holds and releases); writes per client address without a valid user token (guest sign-ups)
    rate_limit_per_second: float = 1.0
    rate_limit_burst: int = 10
    rate_limit_anon_per_second: float = 0.05
    rate_limit_anon_burst: int = 10
    # seats one client address may hold within one HOLD_TTL_SECONDS, counted in Redis across every node
    max_seats_per_address: int = 40
    # whose X-Forwarded-For is believed (a node's Unix socket always is: only local processes reach it)
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        if env is None:
            read_dotenv()
            env = dict(os.environ)
        port = _int(env, "PORT", 8080)
        admin = env.get("ADMIN_TOKEN", "")
        origins = tuple(o.strip() for o in env.get("ALLOWED_ORIGINS", "").split(",") if o.strip())
        settings = cls(
            database_url=env.get("DATABASE_URL", ""),
            redis_url=env.get("REDIS_URL", ""),
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", ""),
            hold_ttl_seconds=_int(env, "HOLD_TTL_SECONDS", 30),
            max_seats_per_hold=_int(env, "MAX_SEATS_PER_HOLD", 10),
            max_seats_per_user=_int(env, "MAX_SEATS_PER_USER", 20),
            admin_token=admin or secrets.token_urlsafe(24),
            admin_token_generated=not admin,
            auth_required=_bool(env.get("AUTH_REQUIRED"), True),
            token_ttl=_int(env, "TOKEN_TTL", 7 * 24 * 3600),
            node_id=env.get("NODE_ID", ""),
            host=env.get("HOST", "127.0.0.1"),
            port=port,
            unix_socket=env.get("UNIX_SOCKET", "").strip(),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            log_format=env.get("LOG_FORMAT", "json"),
            allowed_origins=origins,
            kafka_topic=env.get("KAFKA_TOPIC", "seat-events"),
            kafka_partitions=_int(env, "KAFKA_PARTITIONS", 6),
            kafka_idempotence=_bool(env.get("KAFKA_IDEMPOTENCE"), False),
            kafka_fetch_max_wait_ms=_int(env, "KAFKA_FETCH_MAX_WAIT_MS", 10),
            expiry_sweep_interval=_float(env, "EXPIRY_SWEEP_INTERVAL", 0.25),
            outbox_sweep_interval=_float(env, "OUTBOX_SWEEP_INTERVAL", 1.0),
            outbox_publish=_choice(env, "OUTBOX_PUBLISH", ("relay", "direct")),
            ws_broadcast_tick_ms=_int(env, "WS_BROADCAST_TICK_MS", 20),
            ws_max_frames_per_second=_int(env, "WS_MAX_FRAMES_PER_SECOND", WS_FRAMES_PER_MACHINE),
            ws_rate_per_second=_float(env, "WS_RATE_PER_SECOND", 20.0),
            ws_rate_burst=_int(env, "WS_RATE_BURST", 40),
            db_pool_min=_int(env, "DB_POOL_MIN", 2),
            db_pool_max=_int(env, "DB_POOL_MAX", 20),
            redis_gate=_bool(env.get("REDIS_GATE"), True),
            redis_timeout=_float(env, "REDIS_TIMEOUT", 0.5),
            hold_batch_max=_int(env, "HOLD_BATCH_MAX", 32),
            hold_writers=_int(env, "HOLD_WRITERS", 4),
            event_loop=env.get("EVENT_LOOP", "uvloop").lower(),
            rate_limit_per_second=_float(env, "RATE_LIMIT_PER_SECOND", 1.0),
            rate_limit_burst=_int(env, "RATE_LIMIT_BURST", 10),
            rate_limit_anon_per_second=_float(env, "RATE_LIMIT_ANON_PER_SECOND", 0.05),
            rate_limit_anon_burst=_int(env, "RATE_LIMIT_ANON_BURST", 10),
            max_seats_per_address=_int(env, "MAX_SEATS_PER_ADDRESS", 40),
            ws_max_sockets_per_address=_int(env, "WS_MAX_SOCKETS_PER_ADDRESS", 50),
            trusted_proxies=_networks(env, "TRUSTED_PROXIES", "127.0.0.1/32,::1/128"),
        )
        return replace(settings, **overrides) if overrides else settings  # type: ignore[arg-type]

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
