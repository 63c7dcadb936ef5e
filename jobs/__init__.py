"""Background jobs of every node: hold expiry, outbox sweeping, Redis reconciliation."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Register the jobs' cleanup contexts on a node."""
