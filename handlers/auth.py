"""Who is calling: bearer token -> Principal, and the checks handlers make with it."""

from __future__ import annotations

import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from contract import actors
from contract.actors import principal_for_token
from core.appkeys import SETTINGS
from core.errors import Forbidden, Unauthorized
from storage.auth import MAX_TOKEN, Principal
from storage.booking import Actor

PRINCIPAL = "principal"


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()[:MAX_TOKEN]


async def principal(request: web.Request) -> Principal:
    cached = request.get(PRINCIPAL)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    found = await principal_for_token(request.app, bearer_token(request))
    if found is None:
        raise Unauthorized("The bearer token is not valid", code="invalid_token")
    request[PRINCIPAL] = found
    return found


async def require_admin(request: web.Request) -> None:
    if not request.app[SETTINGS].auth_required:
        return
    who = await principal(request)
    if who.anonymous:
        raise Unauthorized()
    if not who.is_admin:
        raise Forbidden("This route needs the admin token", code="admin_required")


async def acting_user(request: web.Request, claimed: uuid.UUID | None = None) -> uuid.UUID:
    """The user a request acts for (contract.actors.acting_user)."""
    auth_required = request.app[SETTINGS].auth_required
    return actors.acting_user(auth_required, await principal(request) if auth_required else None, claimed)


async def actor(request: web.Request) -> Actor:
    """The caller as a booking actor (contract.actors.booking_actor)."""
    auth_required = request.app[SETTINGS].auth_required
    return actors.booking_actor(auth_required, await principal(request) if auth_required else None)


async def require_owner_or_admin(request: web.Request, owner_id: uuid.UUID) -> None:
    """Reading someone's data: their own token, or the admin's."""
    if not request.app[SETTINGS].auth_required:
        return
    who = await principal(request)
    if who.anonymous:
        raise Unauthorized()
    if not who.is_admin and who.user_id != owner_id:
        raise Forbidden("This belongs to another user", code="not_owner")


AUTH_ATTR = "__boxoffice_auth__"


def admin_only(handler: Handler) -> Handler:
    """Mark a route as needing the admin token (checked before the request body is validated)."""
    setattr(handler, AUTH_ATTR, "admin")
    return handler


def signed_in(handler: Handler) -> Handler:
    """Mark a route as needing a valid token, a user's or the admin's (checked before validation)."""
    setattr(handler, AUTH_ATTR, "token")
    return handler


async def check_caller(request: web.Request) -> None:
    """The route's token rule (`admin_only`, `signed_in`), checked before anything the caller sent is read:
    a caller without the right token gets 401/403, and learns nothing of the body's rules from a 400."""
    need = getattr(request.match_info.handler, AUTH_ATTR, None)
    if need is not None and request.app[SETTINGS].auth_required:
        if need == "admin":
            await require_admin(request)
        elif (await principal(request)).anonymous:
            raise Unauthorized()
