"""Real-time seat channels: WebSockets per session, the outbox relay to Kafka, the consumer fan-out."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Register the WebSocket route and the relay/consumer cleanup contexts on a node."""
