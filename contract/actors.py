"""Who acts for a request: one set of rules behind the REST bearer header and the WebSocket `?token=`.

Both doors resolve the token the same way (`principal_for_token`) and decide the same way who a hold is
for (`acting_user`) and who a confirm, release or read acts as (`booking_actor`). Only the wording of a
refusal differs by door (`Refusals`): a socket explains that it may watch but not act.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from aiohttp import web

from core.appkeys import SETTINGS, TOKENS
from core.errors import Forbidden, Unauthorized
from storage.auth import Principal, TokenExpired, resolve_principal
from storage.booking import Actor


async def principal_for_token(app: web.Application, token: str | None) -> Principal | None:
    """`resolve_principal` with the node's admin token and token cache."""
    return await resolve_principal(token, app[SETTINGS].admin_token, app[TOKENS])


async def valid_principal(app: web.Application, token: str | None) -> Principal | None:
    """`principal_for_token` where an expired token counts as not valid (None), as an unknown one does: for the
    callers that let such a caller watch (the socket) or count it by its address (the write limit)."""
    try:
        return await principal_for_token(app, token)
    except TokenExpired:
        return None


@dataclass(frozen=True)
class Refusals:
    """The messages of a door's 401s (None: the contract's default message)."""

    invalid_token: str | None = None  # a token was given but is not valid
    no_token_to_hold: str | None = None  # no token, asking to hold seats
    no_token_to_act: str | None = None  # no (valid) token, asking to act on a reservation


REST = Refusals()
SOCKET = Refusals(
    invalid_token="The token given at connect is not valid: this socket may watch but not act",
    no_token_to_hold="Connect with ?token= to hold seats: this socket may watch but not act",
    no_token_to_act="Connect with a valid ?token= to act on reservations",
)


def acting_user(auth_required: bool, who: Principal | None, claimed: uuid.UUID | None,
                refusals: Refusals = REST) -> uuid.UUID:
    """The user a hold is for. With auth on: the token's user (a claimed userId must match); with it off
    (demo mode) the claimed userId, which is then required."""
    if not auth_required:
        if claimed is None:
            raise Unauthorized("userId is required when authentication is off", code="user_required")
        return claimed
    if who is None:
        raise Unauthorized(refusals.invalid_token)
    if who.anonymous:
        raise Unauthorized(refusals.no_token_to_hold)
    if who.user_id is None:
        raise Forbidden("The admin token cannot act for a user")
    if claimed is not None and claimed != who.user_id:
        raise Forbidden("userId does not match the token's user", code="not_owner")
    return who.user_id


def booking_actor(auth_required: bool, who: Principal | None, refusals: Refusals = REST) -> Actor:
    """Who a confirm, release or read acts as: its user (owner checks apply), or the admin (who may act on
    any reservation). With auth off, the system."""
    if not auth_required:
        return Actor(None, check_owner=False)
    if who is None or who.anonymous:
        raise Unauthorized(refusals.no_token_to_act)
    return Actor(who.user_id, check_owner=not who.is_admin)
