"""The socket's message protocol: envelope check, registry `type -> (handler, schema)`, one error mapping.

Holds and releases call the same `Booking` methods as the REST handlers: there is no second
implementation of a hold, only a second door to it.

A message is read, checked and validated by the socket's reader; a command that waits on the database
(hold, release) then runs as a task of its own, so a slow hold never stalls the reader: a ping sent
meanwhile is answered at once. A socket has at most `MAX_COMMANDS_IN_FLIGHT` such tasks; a command beyond
that is answered `error` with code `too_many_requests` and not run. The tasks belong to the socket: when it
closes, they get `COMMAND_GRACE` seconds to finish, then are cancelled and awaited.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from contract import actors, shapes
from contract.actors import valid_principal
from contract.limits import hold_within_limits
from contract.rules import MAX_BEST_ROWS, MAX_IDEMPOTENCY_KEY, MAX_ROW_LABEL, Text
from core.aio import stop_task
from core.appkeys import BOOKING, LIMITS, QUEUE_PUSH, SETTINGS, WAITING_ROOM
from core.errors import DomainError, RateLimited, SeatsUnavailable, ValidationFailed
from core.ratelimit import TokenBucket
from realtime.hub import Connection
from realtime.queue_push import place_message
from storage.auth import Principal
from storage.booking import Actor
from storage.faults import service_fault

log = logging.getLogger("boxoffice.ws")

MAX_SEAT_IDS = 100  # the booking rules (MAX_SEATS_PER_HOLD) refuse more; this only bounds the parse
MAX_REQUEST_ID = 128
MAX_COMMANDS_IN_FLIGHT = 8  # per socket: holds and releases still waiting for their answer
COMMAND_GRACE = 2.0  # a closing socket's commands may finish this long (under the 3 s close wait), then are cancelled


@dataclass(slots=True)
class Peer:
    """Who is on the other end of one socket, and what they may do."""

    app: web.Application
    conn: Connection
    principal: Principal | None  # None: a token was given at connect but it is not valid
    address: str = ""  # the client's address (behind a trusted proxy: the one it reported)
    token: str | None = None  # given at connect; looked up again (cached) before each act
    bucket: TokenBucket | None = None  # the message rate allowance, made with the first message
    admission: str | None = None  # given to this socket by the waiting room (`queue.join`)
    # commands running as tasks, owned here (made with the first: most sockets only watch)
    commands: set[asyncio.Task[None]] | None = None

    def allowed(self, rate: float, burst: int) -> bool:
        """Take one message's token (an idle socket -- most sockets only watch -- keeps no bucket)."""
        if self.bucket is None:
            self.bucket = TokenBucket(rate, burst)
        return not self.bucket.take()

    def remember_admission(self, admission: str | None) -> None:
        self.admission = admission

    @property
    def session_id(self) -> uuid.UUID:
        return uuid.UUID(self.conn.session_id)

    async def who(self) -> Principal | None:
        """Who acts now: a token revoked or expired since the connect no longer acts."""
        return await valid_principal(self.app, self.token) if self.token else self.principal

    async def writer(self) -> Principal | None:
        """Who a hold or release acts as and is counted for (`Limits.take_write`, as a REST write): the token's
        principal, or None with AUTH_REQUIRED=false (then the address's bucket)."""
        return await self.who() if self.app[SETTINGS].auth_required else None

    def start(self, command: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(command, name=name)
        if self.commands is None:
            self.commands = set()
        self.commands.add(task)
        task.add_done_callback(self.commands.discard)

    async def finish_commands(self, grace: float = COMMAND_GRACE) -> None:
        """The socket is closing: let its commands finish (a hold half-way through its write should land
        or fail whole), at most `grace` seconds; then cancel and await what is left."""
        if not self.commands:
            return
        try:
            await asyncio.wait(set(self.commands), timeout=grace)
        finally:  # even if this wait is cancelled (a shutdown timeout): no command outlives its socket
            for task in list(self.commands):
                await stop_task(task, task.get_name())


Handler = Callable[[Peer, dict[str, Any]], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class SocketCommand:
    handler: Handler
    schema: Schema  # built once, at import
    in_task: bool  # waits on the database: runs as a task of the socket, not in its reader


REGISTRY: dict[str, SocketCommand] = {}


def message(type_: str, schema: type[Schema], *, in_task: bool = False) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        REGISTRY[type_] = SocketCommand(handler, schema(), in_task)
        return handler
    return register


class UnknownType(ValidationFailed):
    code = "unknown_type"


class MalformedMessage(ValidationFailed):
    code, message = "malformed_json", "A message must be a JSON object"


class TooManyCommands(RateLimited):
    code = "too_many_requests"
    message = f"At most {MAX_COMMANDS_IN_FLIGHT} holds and releases in flight per socket; wait for their replies"


# ------------------------------------------------------------ schemas (unknown fields are refused)

class MessageSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True)
    requestId = fields.Raw(allow_none=True)  # checked by the envelope: a string or a number


class HoldMessage(MessageSchema):
    sessionSeatIds = fields.List(fields.UUID(), validate=validate.Length(max=MAX_SEAT_IDS))
    quantity = fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_SEAT_IDS))  # best available
    rows = fields.List(Text(MAX_ROW_LABEL), validate=validate.Length(min=1, max=MAX_BEST_ROWS))
    idempotencyKey = Text(MAX_IDEMPOTENCY_KEY)  # printable: the REST header's rule
    userId = fields.UUID(metadata={"description": "only with AUTH_REQUIRED=false, as in POST /reservations"})
    admission = Text(256, metadata={
        "description": "on a session with a waiting room; by default the one this socket was admitted with"})


class ReleaseMessage(MessageSchema):
    reservationId = fields.UUID(required=True)


class EmptyMessage(MessageSchema):
    pass


# ------------------------------------------------------------ who acts (the REST rules, for a socket)

def acting_user(peer: Peer, who: Principal | None, claimed: uuid.UUID | None) -> uuid.UUID:
    return actors.acting_user(peer.app[SETTINGS].auth_required, who, claimed, actors.SOCKET)


def actor(peer: Peer, who: Principal | None) -> Actor:
    return actors.booking_actor(peer.app[SETTINGS].auth_required, who, actors.SOCKET)


# ------------------------------------------------------------ handlers

@message("hold", HoldMessage, in_task=True)
async def hold(peer: Peer, msg: dict[str, Any]) -> dict[str, Any]:
    who = await peer.writer()
    user_id = acting_user(peer, who, msg.get("userId"))
    peer.app[LIMITS].take_write(who, peer.address)
    held = await hold_within_limits(peer.app[LIMITS], peer.app[BOOKING], peer.address, user_id,
                                    peer.session_id, msg.get("sessionSeatIds"), msg.get("idempotencyKey"),
                                    quantity=msg.get("quantity"), rows=msg.get("rows"),
                                    admission=msg.get("admission") or peer.admission)
    return {"type": "hold.ok", "reservation": shapes.held(held.reservation, held.stranded)}


@message("queue.join", EmptyMessage, in_task=True)
async def queue_join(peer: Peer, msg: dict[str, Any]) -> dict[str, Any]:
    """A place in the session's waiting room (the same one if the user has one); while the buyer waits, the
    node pushes `queue.position` at most once a second, then `queue.admitted` (realtime.queue_push)."""
    user_id = acting_user(peer, await peer.writer(), None)
    place = await peer.app[WAITING_ROOM].join(peer.session_id, user_id)
    if place is not None and not place.admitted:
        peer.app[QUEUE_PUSH].add(peer.session_id, peer.conn, user_id, place, peer.remember_admission)
    elif place is not None:
        peer.remember_admission(place.admission)
    return place_message(peer.session_id, place)


@message("queue.leave", EmptyMessage, in_task=True)
async def queue_leave(peer: Peer, msg: dict[str, Any]) -> dict[str, Any]:
    """The buyer gives up their place in line (or, with the capacity inlet, their place inside), as
    `DELETE /sessions/{id}/queue` does."""
    user_id = acting_user(peer, await peer.writer(), None)
    peer.app[QUEUE_PUSH].remove(peer.session_id, peer.conn)
    peer.remember_admission(None)
    await peer.app[WAITING_ROOM].leave(peer.session_id, user_id)
    return {"type": "queue.left", "sessionId": str(peer.session_id)}


@message("release", ReleaseMessage, in_task=True)
async def release(peer: Peer, msg: dict[str, Any]) -> dict[str, Any]:
    who = await peer.writer()
    acting = actor(peer, who)
    peer.app[LIMITS].take_write(who, peer.address)
    await peer.app[BOOKING].release(acting, msg["reservationId"])
    return {"type": "release.ok", "reservationId": str(msg["reservationId"])}


@message("ping", EmptyMessage)
async def ping(peer: Peer, msg: dict[str, Any]) -> dict[str, Any]:
    return {"type": "pong"}


@message("resync", EmptyMessage)
async def resync(peer: Peer, msg: dict[str, Any]) -> None:
    peer.conn.send_snapshot()  # coalesced: one snapshot queued per socket at most, however often it is asked
    return None


# ------------------------------------------------------------ dispatch and the one error mapping

def decode(raw: str) -> dict[str, Any]:
    try:
        envelope = json.loads(raw)
    except ValueError:
        raise MalformedMessage("The message is not valid JSON") from None
    except RecursionError:  # nested deeper than the parser goes (a frame of 16 kB holds 8,000 levels)
        raise MalformedMessage("The message is nested too deeply") from None
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
    if not isinstance(exc, DomainError):
        exc = service_fault(exc) or exc  # a backing service's state: `*_unavailable`, retry shortly
    if isinstance(exc, DomainError):
        reply: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
        if exc.details:
            reply["details"] = exc.details
        return reply
    log.exception("unexpected error handling a %r socket message", msg_type)
    return {"type": "error", "code": "internal_error", "message": "Internal server error"}


async def dispatch(peer: Peer, raw: str) -> None:
    """One client message: checked and validated here, then run (in the reader, or as a task of the socket);
    its reply goes out through the socket's queue."""
    envelope: dict[str, Any] = {}
    try:
        envelope = decode(raw)
        check_envelope(envelope)
        command = REGISTRY.get(envelope["type"])
        if command is None:
            raise UnknownType(f"Unknown message type; known: {', '.join(sorted(REGISTRY))}")
        try:
            data = command.schema.load(envelope)
        except ValidationError as exc:
            raise ValidationFailed(details={"fields": exc.messages}) from None
        if command.in_task and len(peer.commands or ()) >= MAX_COMMANDS_IN_FLIGHT:
            raise TooManyCommands()
    except Exception as exc:  # noqa: BLE001 - mapped to a reply in one place; CancelledError passes
        reply(peer, envelope, error_reply(exc, envelope.get("type")))
        return
    if command.in_task:
        peer.start(run(peer, command, envelope, data), f"ws-{envelope['type']}")
    else:
        await run(peer, command, envelope, data)


async def run(peer: Peer, command: SocketCommand, envelope: dict[str, Any], data: dict[str, Any]) -> None:
    try:
        answer = await command.handler(peer, data)
    except Exception as exc:  # noqa: BLE001 - mapped to a reply in one place; CancelledError passes
        answer = error_reply(exc, envelope.get("type"))
    reply(peer, envelope, answer)


def reply(peer: Peer, envelope: dict[str, Any], answer: dict[str, Any] | None) -> None:
    """Send `answer` with the request's id (None: the reply is the snapshot the writer sends)."""
    if answer is not None:
        answer["requestId"] = envelope.get("requestId")
        peer.conn.send_message(answer)
