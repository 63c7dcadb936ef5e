"""Embedded dev/test stack: real PostgreSQL, Redis and Kafka-protocol servers started from wheels.

Each service runs as a child process in a state folder (default `.boxoffice/`), on a free
loopback port. A service whose URL is already configured is not started. Every service can be
stopped and started again (the fault tests restart them mid-rush).
"""

from server.embedded.postgres import EmbeddedPostgres
from server.embedded.process import (
    Service,
    ServiceStartError,
    free_port,
    pid_alive,
    port_open,
    stop_group,
)
from server.embedded.stack import EmbeddedKafka, EmbeddedRedis, EmbeddedStack, find_haproxy

__all__ = [
    "EmbeddedKafka", "EmbeddedPostgres", "EmbeddedRedis", "EmbeddedStack", "Service", "ServiceStartError",
    "find_haproxy", "free_port", "pid_alive", "port_open", "stop_group",
]
