"""Prometheus metrics of a node, declared once (the lowest layer, so every layer can count)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter("boxoffice_http_requests_total", "HTTP requests by route and status",
                        ["method", "route", "status"], registry=REGISTRY)
HTTP_LATENCY = Histogram("boxoffice_http_request_seconds", "HTTP request latency", ["route"], registry=REGISTRY,
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
HOLDS = Counter("boxoffice_holds_total", "Hold attempts by outcome", ["outcome"], registry=REGISTRY)
HOLD_BATCH_SIZE = Histogram("boxoffice_hold_batch_size", "Holds written to PostgreSQL together (group commit)",
                            registry=REGISTRY, buckets=(1, 2, 4, 8, 16, 32, 48))
HOLD_SET_BATCHES = Counter("boxoffice_hold_set_batches_total",
                           "Batches of holds written set-based (granted) or sent on hold by hold (refused)",
                           ["outcome"], registry=REGISTRY)
CONFIRMS = Counter("boxoffice_confirms_total", "Confirm attempts by outcome", ["outcome"], registry=REGISTRY)
EXPIRED = Counter("boxoffice_holds_expired_total", "Reservations expired by the sweeper", registry=REGISTRY)
CANCELLED = Counter("boxoffice_holds_cancelled_total", "Reservations cancelled by their owner", registry=REGISTRY)
OPEN_SOCKETS = Gauge("boxoffice_websockets_open", "Open WebSocket connections on this node", registry=REGISTRY)
OUTBOX_BACKLOG = Gauge("boxoffice_outbox_backlog", "Outbox rows not yet published", registry=REGISTRY)
CONSUMER_RESTARTS = Counter("boxoffice_kafka_consumer_restarts_total",
                            "Times the seat-event consumer started over, by reason (broke, stalled, unavailable, "
                            "unexpected)", ["reason"], registry=REGISTRY)
CONSUMER_GAPS = Counter("boxoffice_kafka_consumer_gaps_total",
                        "Holes in a partition's offsets the seat-event consumer met, by outcome (filled: read "
                        "again until the missing records came; skipped: they never came, sockets resynced)",
                        ["outcome"], registry=REGISTRY)
CONSUMER_GAP_SECONDS = Histogram("boxoffice_kafka_consumer_gap_seconds",
                                 "How long a hole in a partition's offsets stayed open before its records came",
                                 registry=REGISTRY, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2))
KAFKA_LAG = Gauge("boxoffice_kafka_consumer_lag", "Messages behind the end of seat-events", registry=REGISTRY)
BROADCAST_LATENCY = Histogram(
    "boxoffice_broadcast_latency_seconds", "Commit to socket write, per change batch", registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REDIS_REBUILDS = Counter("boxoffice_redis_rebuilds_total", "Times the Redis gate was rebuilt from PostgreSQL",
                         registry=REGISTRY)
SHED = Counter("boxoffice_shed_total", "Work refused at once with 503 overloaded, by what was refused (request, hold)",
               ["what"], registry=REGISTRY)
HOLD_EXTENSIONS = Counter("boxoffice_hold_extensions_total", "Hold extensions by outcome", ["outcome"],
                          registry=REGISTRY)
WAITLIST_OFFERS = Counter("boxoffice_waitlist_offers_total",
                          "Holds made for buyers on a waiting list when seats came back", registry=REGISTRY)
