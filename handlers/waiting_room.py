"""REST handlers of the waiting room: join the line, read your place, and (admin) open or close it."""

from __future__ import annotations

import uuid

from aiohttp import web
from aiohttp_apigami import docs, match_info_schema, request_schema, response_schema

from contract import shapes
from core.appkeys import PG_POOL, WAITING_ROOM
from core.errors import ValidationFailed
from handlers import schemas as s
from handlers.auth import acting_user, admin_only, signed_in
from handlers.openapi import ADMIN_ONLY, INVALID, USER_ONLY, E
from storage.catalog import get_session_row
from storage.waiting_room import Inlet, NotInQueue

SESSION_404 = {404: {"schema": E, "description": "session_not_found"}}


async def buyer_and_session(request: web.Request) -> tuple[uuid.UUID, uuid.UUID]:
    """(session id, the calling user's id), once the session is known to exist (else 404 session_not_found). A
    session with a waiting room exists (its row references the session's): no query of its own then, so the
    thousands of buyers asking for their place cost PostgreSQL nothing but the room's switch, read once a second."""
    session_id: uuid.UUID = request["match_info"]["id"]
    user_id = await acting_user(request)
    if await request.app[WAITING_ROOM].inlet(session_id) is None:
        await get_session_row(request.app[PG_POOL], session_id)
    return session_id, user_id


@docs(tags=["waiting room"], summary="Join the session's waiting room (the same place if already in line)",
      responses={**USER_ONLY, **SESSION_404})
@match_info_schema(s.IdPathSchema)
@response_schema(s.QueuePlaceSchema, 200)
@signed_in
async def join_queue(request: web.Request) -> web.Response:
    session_id, user_id = await buyer_and_session(request)
    place = await request.app[WAITING_ROOM].join(session_id, user_id)
    return web.json_response(shapes.queue_place(session_id, place))


@docs(tags=["waiting room"], summary="Your place in the session's waiting room (keeps it while you wait)",
      responses={**USER_ONLY, 404: {"schema": E, "description": "session_not_found, not_in_queue"}})
@match_info_schema(s.IdPathSchema)
@response_schema(s.QueuePlaceSchema, 200)
@signed_in
async def get_queue_place(request: web.Request) -> web.Response:
    session_id, user_id = await buyer_and_session(request)
    room = request.app[WAITING_ROOM]
    if await room.inlet(session_id) is None:
        return web.json_response(shapes.queue_place(session_id, None))
    place = await room.place_of(session_id, user_id)
    if place is None:
        raise NotInQueue()
    return web.json_response(shapes.queue_place(session_id, place))


@docs(tags=["waiting room"], summary="Leave the session's waiting room (or, with the capacity inlet, your place "
      "inside: the next buyer goes in)", produces=[],  # a 204 carries no body
      responses={204: {"description": "left"}, **USER_ONLY, **SESSION_404})
@match_info_schema(s.IdPathSchema)
@signed_in
async def leave_queue(request: web.Request) -> web.Response:
    session_id, user_id = await buyer_and_session(request)
    await request.app[WAITING_ROOM].leave(session_id, user_id)
    return web.Response(status=204)


@docs(tags=["waiting room"], summary="Open the session's waiting room with an inlet (a rate, or a capacity), or "
      "close it (admin)", responses={**INVALID, **ADMIN_ONLY, **SESSION_404}, security=[{"bearer": []}])
@match_info_schema(s.IdPathSchema)
@request_schema(s.QueueConfigSchema, required=True)
@response_schema(s.QueueStateSchema, 200)
@admin_only
async def configure_queue(request: web.Request) -> web.Response:
    session_id = request["match_info"]["id"]
    body = request["data"]
    rate, capacity = body.get("rate"), body.get("capacity")
    if body["enabled"] and (rate is None) == (capacity is None):
        message = ["Give exactly one of rate and capacity when enabled."]
        raise ValidationFailed(details={"fields": {"rate": message, "capacity": message}})
    inlet = Inlet(rate, capacity) if body["enabled"] else None
    await get_session_row(request.app[PG_POOL], session_id)
    await request.app[WAITING_ROOM].configure(session_id, inlet)
    return web.json_response(shapes.queue_state(session_id, inlet))


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/sessions/{id}/queue", join_queue)
    app.router.add_get("/sessions/{id}/queue", get_queue_place)
    app.router.add_delete("/sessions/{id}/queue", leave_queue)
    app.router.add_put("/sessions/{id}/queue", configure_queue)
