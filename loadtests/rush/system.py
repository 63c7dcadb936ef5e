"""What the runner reads of the system under load around a pass: Redis's command counts (INFO commandstats)
and HAProxy's DOWN events (its log), so a summary can say what a pass cost and whether a node left rotation."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import redis

# HAProxy says each event twice (its own warning on stderr, and the log line), once per backend: the log line of
# the `nodes` backend (checked on /ready) is the one counted; `nodes_alive` (checked on /health) is kept apart
DOWN = re.compile(r"^Server (nodes|nodes_alive)/\S+ is DOWN")


def redis_calls(url: str | None) -> dict[str, int]:
    """Calls per Redis command so far (commands run inside Lua scripts are counted too); {} when unknown."""
    if not url:
        return {}
    try:
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
    except redis.RedisError:
        return {}
    return {name.removeprefix("cmdstat_"): int(values.get("calls", 0)) for name, values in stats.items()
            if isinstance(values, dict)}


def log_size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path else 0
    except OSError:
        return 0


def down_events(path: Path | None, since: int) -> list[str] | None:
    """HAProxy's "Server <backend>/<node> is DOWN" log lines written after byte `since` of its log; None when there
    is no log."""
    if path is None or not path.exists():
        return None
    with path.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    return [line.strip()[:160] for line in text.splitlines() if DOWN.search(line.strip())]


@dataclass
class SystemWatch:
    """Before and after one pass."""

    redis_url: str | None
    haproxy_log: Path | None
    redis_before: dict[str, int] = field(default_factory=dict)
    log_offset: int = 0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def start(self) -> None:
        self.redis_before = redis_calls(self.redis_url)
        self.log_offset = log_size(self.haproxy_log)
        self.load_before = os.getloadavg()

    def figures(self) -> dict[str, object]:
        after = redis_calls(self.redis_url)
        delta = {name: calls - self.redis_before.get(name, 0) for name, calls in after.items()}
        delta = {name: calls for name, calls in sorted(delta.items(), key=lambda kv: -kv[1]) if calls > 0}
        downs = down_events(self.haproxy_log, self.log_offset)
        return {
            "redis_calls": sum(delta.values()) if after else None,
            "redis_calls_by_command": dict(list(delta.items())[:12]),
            "haproxy_down_events": None if downs is None else sum(d.startswith("Server nodes/") for d in downs),
            "haproxy_down_events_liveness": None if downs is None else sum(d.startswith("Server nodes_alive/")
                                                                          for d in downs),
            "haproxy_down_lines": (downs or [])[:20],
            "load_average_before": [round(v, 2) for v in self.load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        }
