"""REST handlers of the catalog: users, rooms, sessions and seat maps."""

from __future__ import annotations

from aiohttp import web
from aiohttp_apigami import docs, match_info_schema, querystring_schema, request_schema, response_schema

from contract import shapes
from core.appkeys import PG_POOL, TOKENS
from handlers import schemas as s
from handlers.auth import admin_only, require_owner_or_admin, signed_in
from handlers.openapi import ADMIN_ONLY, INVALID, OWNER_ONLY, TOO_LARGE, E, not_found
from storage import catalog
from storage.auth import revoke_token
from storage.catalog import UserNotFound


def data(request: web.Request) -> dict:  # type: ignore[type-arg]
    return request["data"]  # type: ignore[no-any-return]


@docs(tags=["users"], summary="Create a user (returns its bearer token, once)",
      responses={409: {"schema": E, "description": "email_taken"}, **INVALID, **TOO_LARGE})
@request_schema(s.UserCreateSchema, required=True)
@response_schema(s.UserCreatedSchema, 201)
async def create_user(request: web.Request) -> web.Response:
    body = data(request)
    user, token = await catalog.create_user(request.app[PG_POOL], body["name"], body["email"])
    request.app[TOKENS].remember(token, user.id, user.created_at)
    return web.json_response({**shapes.user(user), "token": token}, status=201)


@docs(tags=["users"], summary="List users, newest first (admin)", responses={**INVALID, **ADMIN_ONLY},
      security=[{"bearer": []}])
@querystring_schema(s.PageQuerySchema)
@response_schema(s.UserSchema(many=True), 200)
@admin_only
async def list_users(request: web.Request) -> web.Response:
    page = request["querystring"]
    users = await catalog.list_users(request.app[PG_POOL], page["limit"], page["offset"])
    return web.json_response([shapes.user(user) for user in users])


@docs(tags=["users"], summary="Read a user with their newest reservations (owner or admin)",
      responses={**INVALID, **OWNER_ONLY, **not_found("user_not_found")})
@match_info_schema(s.IdPathSchema)
@response_schema(s.UserDetailSchema, 200)
@signed_in
async def get_user(request: web.Request) -> web.Response:
    user_id = request["match_info"]["id"]
    await require_owner_or_admin(request, user_id)
    user, reservations = await catalog.get_user_detail(request.app[PG_POOL], user_id)
    return web.json_response(shapes.user_detail(user, reservations))


@docs(tags=["users"], summary="Revoke a user's token (owner or admin): every node refuses it within a second",
      produces=[],  # a 204 carries no body (Swagger 2: an empty list overrides the spec-wide JSON)
      responses={204: {"description": "revoked"}, **INVALID, **OWNER_ONLY, **not_found("user_not_found")})
@match_info_schema(s.IdPathSchema)
@signed_in
async def revoke_user_token(request: web.Request) -> web.Response:
    user_id = request["match_info"]["id"]
    await require_owner_or_admin(request, user_id)
    if not await revoke_token(request.app[PG_POOL], user_id):
        raise UserNotFound()
    return web.Response(status=204)


@docs(tags=["rooms"], summary="Create a room (admin): rows x seatsPerRow, or capacity",
      responses={**INVALID, **ADMIN_ONLY, **TOO_LARGE}, security=[{"bearer": []}])
@request_schema(s.RoomCreateSchema, required=True)
@response_schema(s.RoomSchema, 201)
@admin_only
async def create_room(request: web.Request) -> web.Response:
    body = data(request)
    layout = catalog.seat_layout(body.get("rows"), body.get("seatsPerRow"), body.get("capacity"))
    room = await catalog.create_room(request.app[PG_POOL], body["name"], layout)
    return web.json_response(shapes.room(room), status=201)


@docs(tags=["rooms"], summary="List rooms", responses=INVALID)
@querystring_schema(s.PageQuerySchema)
@response_schema(s.RoomSchema(many=True), 200)
async def list_rooms(request: web.Request) -> web.Response:
    page = request["querystring"]
    rooms = await catalog.list_rooms(request.app[PG_POOL], page["limit"], page["offset"])
    return web.json_response([shapes.room(room) for room in rooms])


@docs(tags=["rooms"], summary="Read a room with its seats", responses={**INVALID, **not_found("room_not_found")})
@match_info_schema(s.IdPathSchema)
@response_schema(s.RoomSchema, 200)
async def get_room(request: web.Request) -> web.Response:
    return web.json_response(shapes.room(await catalog.get_room(request.app[PG_POOL], request["match_info"]["id"])))


@docs(tags=["sessions"], summary="Create a session (admin); the room needs at least 16 seats",
      responses={422: {"schema": E, "description": "room_too_small, invalid_show_times"},
                 **not_found("room_not_found"), **INVALID, **ADMIN_ONLY, **TOO_LARGE},
      security=[{"bearer": []}])
@request_schema(s.SessionCreateSchema, required=True)
@response_schema(s.SessionSchema, 201)
@admin_only
async def create_session(request: web.Request) -> web.Response:
    body = data(request)
    session = await catalog.create_session(
        request.app[PG_POOL], body["movieTitle"], body["startShowTime"], body["endShowTime"],
        body["roomId"], body["ticketPrice"],
    )
    return web.json_response(shapes.session(session), status=201)


@docs(tags=["sessions"], summary="List sessions", responses=INVALID)
@querystring_schema(s.PageQuerySchema)
@response_schema(s.SessionDetailSchema(many=True), 200)
async def list_sessions(request: web.Request) -> web.Response:
    page = request["querystring"]
    sessions = await catalog.list_sessions(request.app[PG_POOL], page["limit"], page["offset"])
    return web.json_response([shapes.session(session) for session in sessions])


@docs(tags=["sessions"], summary="Read a session", responses={**INVALID, **not_found("session_not_found")})
@match_info_schema(s.IdPathSchema)
@response_schema(s.SessionDetailSchema, 200)
async def get_session(request: web.Request) -> web.Response:
    session = await catalog.get_session(request.app[PG_POOL], request["match_info"]["id"])
    return web.json_response(shapes.session(session))


@docs(tags=["sessions"], summary="The seat map of a session, optionally filtered by status",
      responses={**INVALID, **not_found("session_not_found")})
@match_info_schema(s.IdPathSchema)
@querystring_schema(s.SeatMapQuerySchema)
@response_schema(s.SeatMapSchema, 200)
async def seat_map(request: web.Request) -> web.Response:
    status = request["querystring"].get("status")
    return web.json_response(shapes.seat_map(await catalog.seat_map(request.app[PG_POOL], request["match_info"]["id"],
                                                                     status)))


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/users", create_user)
    app.router.add_get("/users", list_users)
    app.router.add_get("/users/{id}", get_user)
    app.router.add_delete("/users/{id}/token", revoke_user_token)
    app.router.add_post("/rooms", create_room)
    app.router.add_get("/rooms", list_rooms)
    app.router.add_get("/rooms/{id}", get_room)
    app.router.add_post("/sessions", create_session)
    app.router.add_get("/sessions", list_sessions)
    app.router.add_get("/sessions/{id}", get_session)
    app.router.add_get("/sessions/{id}/seats", seat_map)
