"""REST of hold extension and the waiting list (docs/waiting-list.md): thin doors to storage/extension.py and
storage/waitlist.py, the same calls the socket's `extend` and `waitlist.*` commands make."""

from __future__ import annotations

from aiohttp import web
from aiohttp_apigami import docs, match_info_schema, querystring_schema, request_schema, response_schema
from marshmallow import Schema, fields, validate

from contract import shapes
from contract import waitlist as wire
from core.appkeys import EXTENDER, WAITLIST
from handlers import schemas as s
from handlers.auth import acting_user, actor, signed_in
from handlers.openapi import INVALID, OWNER_ONLY, USER_ONLY, E, not_found

MAX_QUANTITY = 100  # the parse bound; the booking rule (MAX_SEATS_PER_HOLD) is checked after


class WaitlistJoinSchema(s.StrictSchema):
    quantity = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=MAX_QUANTITY),
                              metadata={"description": "seats wanted, 1 to MAX_SEATS_PER_HOLD"})
    userId = fields.UUID(metadata={"description": "must be the token's user (required when AUTH_REQUIRED=false)"})


class WaitlistUserQuerySchema(s.LooseSchema):
    userId = fields.UUID(metadata={"description": "required when AUTH_REQUIRED=false"})


class WaitlistEntrySchema(Schema):
    id = fields.String(required=True, metadata={"description": "the place's id; lower ids joined earlier"})
    sessionId = fields.UUID(required=True)
    userId = fields.UUID(required=True)
    quantity = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("WAITING", "OFFERED")))
    position = fields.Integer(required=True, allow_none=True, metadata={"description": "1: next to be served"})
    ahead = fields.Integer(required=True, allow_none=True)
    waiting = fields.Integer(required=True, metadata={"description": "buyers waiting on this session in all"})
    reservationId = fields.UUID(required=True, allow_none=True, metadata={"description": "the hold, once OFFERED"})
    createdAt = s.Timestamp()
    updatedAt = s.Timestamp()


EXTEND_ERRORS = {
    **OWNER_ONLY, **not_found("reservation_not_found"),
    409: {"schema": E, "description": "not_pending, already_extended, extension_not_allowed (details.reason: "
                                      "waiting_list or waiting_room)"},
    410: {"schema": E, "description": "hold_expired"},
    422: {"schema": E, "description": "extension_disabled (HOLD_EXTENSION_SECONDS=0)"},
}


@docs(tags=["reservations"], summary="Extend a pending hold once by HOLD_EXTENSION_SECONDS", responses=EXTEND_ERRORS)
@match_info_schema(s.IdPathSchema)
@response_schema(s.ReservationSchema, 200)
@signed_in
async def extend_reservation(request: web.Request) -> web.Response:
    extended = await request.app[EXTENDER].extend(await actor(request), request["match_info"]["id"])
    return web.json_response(shapes.reservation(extended))


@docs(tags=["waiting list"], summary="Join the waiting list of a sold-out session for N seats (again: same place)",
      responses={**USER_ONLY, **INVALID, **not_found("session_not_found, user_not_found (AUTH_REQUIRED=false)"),
                 200: {"schema": WaitlistEntrySchema, "description": "already on the list: the same place"},
                 409: {"schema": E, "description": "seats_available (details.available): pick them instead"},
                 422: {"schema": E, "description": "session_started"}})
@match_info_schema(s.IdPathSchema)
@request_schema(WaitlistJoinSchema)
@response_schema(WaitlistEntrySchema, 201)
@signed_in
async def join_waitlist(request: web.Request) -> web.Response:
    body = request["data"]
    user_id = await acting_user(request, body.get("userId"))
    entry, created = await request.app[WAITLIST].join(user_id, request["match_info"]["id"], body["quantity"])
    return web.json_response(wire.entry(entry), status=201 if created else 200)


@docs(tags=["waiting list"], summary="One's place on the waiting list (or the hold it was offered)",
      responses={**USER_ONLY, **not_found("not_on_waitlist")})
@match_info_schema(s.IdPathSchema)
@querystring_schema(WaitlistUserQuerySchema)
@response_schema(WaitlistEntrySchema, 200)
@signed_in
async def get_waitlist_entry(request: web.Request) -> web.Response:
    user_id = await acting_user(request, request["querystring"].get("userId"))
    entry = await request.app[WAITLIST].entry(user_id, request["match_info"]["id"])
    return web.json_response(wire.entry(entry))


@docs(tags=["waiting list"], summary="Leave the waiting list",
      produces=[],  # a 204 carries no body (Swagger 2: an empty list overrides the spec-wide JSON)
      responses={204: {"description": "left"}, **USER_ONLY, **not_found("not_on_waitlist")})
@match_info_schema(s.IdPathSchema)
@querystring_schema(WaitlistUserQuerySchema)
@signed_in
async def leave_waitlist(request: web.Request) -> web.Response:
    user_id = await acting_user(request, request["querystring"].get("userId"))
    await request.app[WAITLIST].leave(user_id, request["match_info"]["id"])
    return web.Response(status=204)


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/reservations/{id}/extend", extend_reservation)
    app.router.add_post("/sessions/{id}/waitlist", join_waitlist)
    app.router.add_get("/sessions/{id}/waitlist", get_waitlist_entry)
    app.router.add_delete("/sessions/{id}/waitlist", leave_waitlist)
