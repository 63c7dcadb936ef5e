"""The socket's commands of hold extension and the waiting list: the same calls as their REST routes.

`extend` -> `extend.ok` {reservation}; `waitlist.join` {quantity} -> `waitlist.joined` {entry, created};
`waitlist.leave` -> `waitlist.left`. The offer itself reaches the buyer as `waitlist.offer` from the hub
(realtime/hub.py), on whichever node their socket is. Registered in the message registry on import.
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from contract import shapes
from contract import waitlist as wire
from core.appkeys import EXTENDER, LIMITS, SETTINGS, WAITLIST
from realtime.messages import MessageSchema, Peer, acting_user, actor, message

MAX_QUANTITY = 100  # the parse bound; the booking rule (MAX_SEATS_PER_HOLD) is checked after


class ExtendMessage(MessageSchema):
    reservationId = fields.UUID(required=True)


class JoinMessage(MessageSchema):
    quantity = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=MAX_QUANTITY))
    userId = fields.UUID(metadata={"description": "only with AUTH_REQUIRED=false"})


class LeaveMessage(MessageSchema):
    userId = fields.UUID(metadata={"description": "only with AUTH_REQUIRED=false"})


@message("extend", ExtendMessage, in_task=True)
async def extend(peer: Peer, msg: dict[str, Any]) -> dict[str, Any]:
    who = await peer.writer()
    acting = actor(peer, who)
    peer.app[LIMITS].take_write(who, peer.address)
    reservation = await peer.app[EXTENDER].extend(acting, msg["reservationId"])
    return {"type": "extend.ok", "reservation": shapes.reservation(reservation)}


@message("waitlist.join", JoinMessage, in_task=True)
async def join(peer: Peer, msg: dict[str, Any]) -> dict[str, Any]:
    who = await peer.writer()
    user_id = acting_user(peer, who, msg.get("userId"))
    peer.app[LIMITS].take_write(who, peer.address)
    entry, created = await peer.app[WAITLIST].join(user_id, peer.session_id, msg["quantity"])
    if peer.conn.user_id is None and not peer.app[SETTINGS].auth_required:
        peer.conn.user_id = str(user_id)  # demo mode: the offer finds this socket by the user it joined as
    return {"type": "waitlist.joined", "created": created, "entry": wire.entry(entry)}


@message("waitlist.leave", LeaveMessage, in_task=True)
async def leave(peer: Peer, msg: dict[str, Any]) -> dict[str, Any]:
    who = await peer.writer()
    user_id = acting_user(peer, who, msg.get("userId"))
    peer.app[LIMITS].take_write(who, peer.address)
    await peer.app[WAITLIST].leave(user_id, peer.session_id)
    return {"type": "waitlist.left", "sessionId": str(peer.session_id)}
