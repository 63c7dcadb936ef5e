"""The socket's message protocol: envelope check, registry `type -> (handler, schema)`, one error mapping.

Holds and releases call the same `Booking` methods as the REST handlers: there is no second
implementation of a hold, only a second door to it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from realtime.hub import Command, Connection
from storage.appkeys import BOOKING, LIMITS, SETTINGS
from storage.auth import Principal, valid_principal
from storage.booking import Actor
from storage.errors import DomainError, Forbidden, SeatsUnavailable, Unauthorized, ValidationFailed
from storage.limits import hold_within_limits

log = logging.getLogger("boxoffice.ws")

MAX_SEAT_IDS = 100  # the booking rules (MAX_SEATS_PER_HOLD) refuse more; this only bounds the parse
MAX_REQUEST_ID = 128
MAX_IDEMPOTENCY_KEY = 200


class TokenBucket:
    """`rate` messages per second on average, bursts up to `burst`."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(slots=True)
class Peer:
    """Who is on the other end of one socket, and what they may do."""

    app: web.Application
    conn: Connection
    principal: Principal | None  # None: a token was given at connect but it is not valid
    address: str = ""  # the client's address (behind a trusted proxy: the one it reported)
    token: str | None = None  # given at connect; looked up again (cached) before each act
    bucket: TokenBucket | None = None  # the message rate allowance, made with the first message

    async def who(self) -> Principal | None:
        """Who acts now: a token revoked or expired since the connect no longer acts."""
        return await valid_principal(self.app, self.token) if self.token else self.principal

    def take_write(self, user_id: uuid.UUID | None) -> None:
        """A hold or release draws on the same limit as a REST write: its user's, else its address's."""
        limits = self.app[LIMITS]
        if user_id is not None and self.app[SETTINGS].auth_required:
            limits.take_user(user_id)
        else:
            limits.take_address(self.address)

    def allowed(self, rate: float, burst: int) -> bool:
        """Take one message's token (an idle socket -- most sockets only watch -- keeps no bucket)."""
        if self.bucket is None:
            self.bucket = TokenBucket(rate, burst)
        return self.bucket.take()

    @property
    def session_id(self) -> uuid.UUID:
        return uuid.UUID(self.conn.session_id)


Handler = Callable[[Peer, dict[str, Any]], Awaitable[dict[str, Any] | None]]
REGISTRY: dict[str, tuple[Handler, type[Schema]]] = {}


def message(type_: str, schema: type[Schema]) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        REGISTRY[type_] = (handler, schema)
        return handler
    return register


class UnknownType(ValidationFailed):
    code = "unknown_type"


class MalformedMessage(ValidationFailed):
    code, message = "malformed_json", "A message must be a JSON object"


# ------------------------------------------------------------ schemas (unknown fields are refused)

class MessageSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True)
    requestId = fields.Raw(allow_none=True)  # checked by the envelope: a string or a number


class HoldMessage(MessageSchema):
    sessionSeatIds = fields.List(fields.UUID(), required=True, validate=validate.Length(max=MAX_SEAT_IDS))
    idempotencyKey = fields.String(validate=validate.Length(min=1, max=MAX_IDEMPOTENCY_KEY))
    userId = fields.UUID(metadata={"description": "only with AUTH_REQUIRED=false, as in POST /reservations"})


class ReleaseMessage(MessageSchema):
    reservationId = fields.UUID(required=True)


class EmptyMessage(MessageSchema):
    pass


# ------------------------------------------------------------ who acts (the REST rules, for a socket)

async def acting_user(peer: Peer, claimed: uuid.UUID | None) -> uuid.UUID:
    if not peer.app[SETTINGS].auth_required:
        if claimed is None:
            raise Unauthorized("userId is required when authentication is off", code="user_required")
        return claimed
    who = await peer.who()
    if who is None:
        raise Unauthorized("The token given at connect is not valid: this socket may watch but not act")
    if who.anonymous:
        raise Unauthorized("Connect with ?token= to hold seats: this socket may watch but not act")
    if who.user_id is None:
        raise Forbidden("The admin token cannot act for a user")
    if claimed is not None and claimed != who.user_id:
        raise Forbidden("userId does not match the token's user", code="not_owner")
    return who.user_id


async def actor(peer: Peer) -> Actor:
    if not peer.app[SETTINGS].auth_required:
        return Actor(None, check_owner=False)
    who = await peer.who()
    if who is None or who.anonymous:
        raise Unauthorized("Connect with a valid ?token= to act on reservations")
    return Actor(who.user_id, check_owner=not who.is_admin)


# ------------------------------------------------------------ handlers

@message("hold", HoldMessage)
async def hold(peer: Peer, msg: dict[str, Any]) -> dict[str, Any]:
    user_id = await acting_user(peer, msg.get("userId"))
    peer.take_write(user_id)
    reservation = await hold_within_limits(peer.app[LIMITS], peer.app[BOOKING], peer.address, user_id,
                                           peer.session_id, msg["sessionSeatIds"], msg.get("idempotencyKey"))
    return {"type": "hold.ok", "reservation": reservation}


@message("release", ReleaseMessage)
async def release(peer: Peer, msg: dict[str, Any]) -> dict[str, Any]:
    who = await actor(peer)
    if who.check_owner:  # the admin is not limited
        peer.take_write(who.user_id)
    await peer.app[BOOKING].release(who, msg["reservationId"])
    return {"type": "release.ok", "reservationId": str(msg["reservationId"])}


@message("ping", EmptyMessage)
async def ping(peer: Peer, msg: dict[str, Any]) -> dict[str, Any]:
    return {"type": "pong"}


@message("resync", EmptyMessage)
async def resync(peer: Peer, msg: dict[str, Any]) -> None:
    peer.conn.send(Command.SNAPSHOT)  # read when the writer gets to it: fresher than anything queued before
    return None


# ------------------------------------------------------------ dispatch and the one error mapping

def decode(raw: str) -> dict[str, Any]:
    try:
        envelope = json.loads(raw)
    except ValueError:
        raise MalformedMessage("The message is not valid JSON") from None
    if not isinstance(envelope, dict):
        raise MalformedMessage()
    return envelope


def check_envelope(envelope: dict[str, Any]) -> None:
    """`type` must be a string; `requestId` (echoed) a short string or an integer."""
    request_id = envelope.get("requestId")
    if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, str | int)
                                   or len(str(request_id)) > MAX_REQUEST_ID):
        envelope.pop("requestId")  # not echoed back
        raise ValidationFailed(details={"fields": {"requestId": ["a string or an integer, at most 128 long"]}})
    if not isinstance(envelope.get("type"), str):
        raise ValidationFailed("Every message needs a string `type`", details={"fields": {"type": ["required"]}})


def error_reply(exc: Exception, msg_type: str | None) -> dict[str, Any]:
    """Every failure of a message as the contract's reply; the socket stays open."""
    if isinstance(exc, SeatsUnavailable) and msg_type == "hold":
        return {"type": "hold.rejected", "code": exc.code, "conflicts": exc.conflicts}
    if isinstance(exc, DomainError):
        reply: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
        if exc.details:
            reply["details"] = exc.details
        return reply
    log.exception("unexpected error handling a %r socket message", msg_type)
    return {"type": "error", "code": "internal_error", "message": "Internal server error"}


async def dispatch(peer: Peer, raw: str) -> dict[str, Any] | None:
    """One client message -> its reply (None when the reply is the snapshot the writer sends)."""
    envelope: dict[str, Any] = {}
    try:
        envelope = decode(raw)
        check_envelope(envelope)
        entry = REGISTRY.get(envelope["type"])
        if entry is None:
            raise UnknownType(f"Unknown message type; known: {', '.join(sorted(REGISTRY))}")
        handler, schema = entry
        try:
            data = schema().load(envelope)
        except ValidationError as exc:
            raise ValidationFailed(details={"fields": exc.messages}) from None
        reply = await handler(peer, data)
    except Exception as exc:  # noqa: BLE001 - mapped to a reply in one place; CancelledError passes
        reply = error_reply(exc, envelope.get("type"))
    if reply is not None:
        reply["requestId"] = envelope.get("requestId")
    return reply
