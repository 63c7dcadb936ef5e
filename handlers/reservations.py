"""REST handlers of booking: reservations (holds), confirm, cancel, sales and purchase history."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_apigami import docs, headers_schema, match_info_schema, querystring_schema, request_schema, response_schema
from marshmallow import Schema

from contract import shapes
from contract.limits import hold_within_limits
from core.appkeys import BOOKING, LIMITS
from handlers import schemas as s
from handlers.auth import acting_user, actor, require_owner_or_admin, signed_in
from handlers.openapi import INVALID, OWNER_ONLY, USER_ONLY, E, not_found

HOLD_ERRORS = {
    **USER_ONLY,
    400: {"schema": E, "description": "validation_error, malformed_json, invalid_seat_count, duplicate_seats,"
                                      " invalid_hold_request"},
    404: {"schema": E, "description": "session_not_found, user_not_found (AUTH_REQUIRED=false)"},
    403: {"schema": E, "description": "not_admitted (the session has a waiting room: X-Admission missing, "
                                      "forged, expired or another's), not_owner, forbidden"},
    409: {"schema": E, "description": "seats_unavailable (details.conflicts lists the seat ids)"},
    422: {"schema": E, "description": "session_started, seats_not_in_session, idempotency_key_reused,"
                                      " rows_not_in_session"},
    429: {"schema": E, "description": "hold_quota_exceeded, rate_limited, address_quota_exceeded"},
    503: {"schema": E, "description": "overloaded, redis_unavailable, database_unavailable (Retry-After)"},
}


def idempotency_key(request: web.Request) -> str | None:
    headers = request.get("headers", {})
    return headers.get("idempotency_key") or headers.get("x_idempotency_key")  # type: ignore[no-any-return]


@docs(tags=["reservations"], summary="Hold seats for 30 s (all or nothing): named, or the best N available",
      responses=HOLD_ERRORS)
@request_schema(s.ReservationCreateSchema)
@headers_schema(s.HoldHeaderSchema)
@response_schema(s.HeldReservationSchema, 201)
@signed_in
async def create_reservation(request: web.Request) -> web.Response:
    body = request["data"]
    user_id = await acting_user(request, body.get("userId"))
    limits = request.app[LIMITS]
    held = await hold_within_limits(limits, request.app[BOOKING], limits.client_ip(request), user_id,
                                    body["sessionId"], body.get("sessionSeatIds"), idempotency_key(request),
                                    quantity=body.get("quantity"), rows=body.get("rows"),
                                    admission=request["headers"].get("admission"))
    return web.json_response(shapes.held(held.reservation, held.stranded), status=201)


@docs(tags=["reservations"], summary="Read a reservation (owner or admin)",
      responses={**OWNER_ONLY, **not_found("reservation_not_found")})
@match_info_schema(s.IdPathSchema)
@response_schema(s.ReservationSchema, 200)
@signed_in
async def get_reservation(request: web.Request) -> web.Response:
    booking = request.app[BOOKING]
    reservation = await booking.get_reservation(request["match_info"]["id"], await actor(request))
    return web.json_response(shapes.reservation(reservation))


def own_or_all(tag: str, query: type[Schema], item: type[Schema]) -> Callable[[Handler], Handler]:
    """A list route of one's own items (everyone's with the admin token): its docs, query and token rule."""
    def wrap(handler: Handler) -> Handler:
        for decorate in (signed_in, response_schema(item(many=True), 200), querystring_schema(query),
                         docs(tags=[tag], summary=f"List {tag}, newest first: one's own (everyone's with the admin"
                              " token)", responses={**INVALID, **OWNER_ONLY})):
            handler = decorate(handler)
        return handler
    return wrap


@own_or_all("reservations", s.ReservationListQuerySchema, s.ReservationSchema)
async def list_reservations(request: web.Request) -> web.Response:
    query = request["querystring"]
    found = await request.app[BOOKING].list_reservations(
        await actor(request), query.get("sessionId"), query.get("status"), query["limit"], query["offset"])
    return web.json_response([shapes.reservation(reservation) for reservation in found])


@docs(tags=["reservations"], summary="Buy the held seats (idempotent with Idempotency-Key)",
      responses={**OWNER_ONLY, **not_found("reservation_not_found"),
                 409: {"schema": E, "description": "not_pending"}, 410: {"schema": E, "description": "hold_expired"},
                 422: {"schema": E, "description": "idempotency_key_reused"}})
@match_info_schema(s.IdPathSchema)
@headers_schema(s.IdempotencyHeaderSchema)
@response_schema(s.SaleSchema, 201)
@signed_in
async def confirm_reservation(request: web.Request) -> web.Response:
    booking = request.app[BOOKING]
    sale = await booking.confirm(await actor(request), request["match_info"]["id"], idempotency_key(request))
    return web.json_response(shapes.sale(sale), status=201)


@docs(tags=["reservations"], summary="Cancel a pending reservation and free its seats",
      produces=[],  # a 204 carries no body (Swagger 2: an empty list overrides the spec-wide JSON)
      responses={204: {"description": "cancelled"}, 409: {"schema": E, "description": "not_pending"},
                 **OWNER_ONLY, **not_found("reservation_not_found")})
@match_info_schema(s.IdPathSchema)
@signed_in
async def cancel_reservation(request: web.Request) -> web.Response:
    await request.app[BOOKING].release(await actor(request), request["match_info"]["id"])
    return web.Response(status=204)


@docs(tags=["sales"], summary="Read a sale (owner or admin)", responses={**OWNER_ONLY, **not_found("sale_not_found")})
@match_info_schema(s.IdPathSchema)
@response_schema(s.SaleSchema, 200)
@signed_in
async def get_sale(request: web.Request) -> web.Response:
    sale = await request.app[BOOKING].get_sale(request["match_info"]["id"], await actor(request))
    return web.json_response(shapes.sale(sale))


@own_or_all("sales", s.PageQuerySchema, s.SaleSchema)
async def list_sales(request: web.Request) -> web.Response:
    page = request["querystring"]
    sales = await request.app[BOOKING].list_sales(await actor(request), page["limit"], page["offset"])
    return web.json_response([shapes.sale(sale) for sale in sales])


class UserIdPathSchema(s.LooseSchema):
    userId = s.fields.UUID(required=True)


async def _user_sales(request: web.Request, user_id: uuid.UUID) -> web.Response:
    await require_owner_or_admin(request, user_id)
    page = request["querystring"]
    sales = await request.app[BOOKING].user_sales(user_id, page["limit"], page["offset"])
    return web.json_response([shapes.sale(sale) for sale in sales])


@docs(tags=["sales"], summary="A user's sales, newest first (owner or admin)", responses=OWNER_ONLY)
@match_info_schema(UserIdPathSchema)
@querystring_schema(s.PageQuerySchema)
@response_schema(s.SaleSchema(many=True), 200)
@signed_in
async def user_sales(request: web.Request) -> web.Response:
    return await _user_sales(request, request["match_info"]["userId"])


@docs(tags=["users"], summary="A user's purchases, newest first (owner or admin)", responses=OWNER_ONLY)
@match_info_schema(s.IdPathSchema)
@querystring_schema(s.PageQuerySchema)
@response_schema(s.SaleSchema(many=True), 200)
@signed_in
async def user_purchases(request: web.Request) -> web.Response:
    return await _user_sales(request, request["match_info"]["id"])


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/reservations", create_reservation)
    app.router.add_get("/reservations", list_reservations)
    app.router.add_get("/reservations/{id}", get_reservation)
    app.router.add_post("/reservations/{id}/confirm", confirm_reservation)
    app.router.add_delete("/reservations/{id}", cancel_reservation)
    app.router.add_get("/sales", list_sales)
    app.router.add_get("/sales/{id}", get_sale)
    app.router.add_get("/sales/user/{userId}", user_sales)
    app.router.add_get("/users/{id}/purchases", user_purchases)
