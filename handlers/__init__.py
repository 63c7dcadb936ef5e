"""REST handlers, their marshmallow schemas and the OpenAPI description."""

from __future__ import annotations

from aiohttp import web

from handlers import catalog, ops, reservations, waiting_room, waitlist


def setup_routes(app: web.Application) -> None:
    ops.setup_routes(app)
    catalog.setup_routes(app)
    reservations.setup_routes(app)
    waiting_room.setup_routes(app)
    waitlist.setup_routes(app)
