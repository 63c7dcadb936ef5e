"""Background jobs of every node: hold expiry, outbox sweeping, Redis reconciliation, retention,
the waiting lists' backstop."""

from __future__ import annotations

from aiohttp import web

from jobs.expiry import expiry_ctx
from jobs.outbox import outbox_ctx
from jobs.reconcile import reconcile_ctx
from jobs.retention import retention_ctx
from jobs.waitlist import waitlist_ctx


def setup(app: web.Application) -> None:
    """Register the jobs' cleanup contexts on a node (after the resources they use)."""
    app.cleanup_ctx.extend([expiry_ctx, reconcile_ctx, outbox_ctx, retention_ctx, waitlist_ctx])
