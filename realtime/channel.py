"""`GET /ws/sessions/{sessionId}`: a live seat channel (snapshot, then changes; hold/release/ping/resync).

Checks happen before the upgrade so a refusal is a plain JSON error: unknown session (404), a
browser Origin not allowed (403). After it: frames over `ws_max_msg_size` close with 1009, a
client over its message rate with 1008, a socket silent for `ws_idle_timeout` with 1000; the
heartbeat drops dead peers. Whatever ends a socket, its hub subscription is removed in `finally`.

A token that is not valid does not refuse the upgrade: the seat map is public (as GET
/sessions/{id}/seats is), so the socket may watch; every hold or release on it answers
`unauthorized`, exactly like a socket without a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import uuid
from urllib.parse import urlsplit

from aiohttp import WSMessage, WSMsgType, web

from contract.actors import valid_principal
from core import metrics
from core.appkeys import HUB, LIMITS, NODE_ID, PG_POOL, SETTINGS, SNAPSHOTS
from core.errors import DomainError, Forbidden, ValidationFailed
from realtime.hub import Connection, WSClose
from realtime.messages import Peer, dispatch
from storage.auth import MAX_TOKEN
from storage.catalog import get_session_row

CLOSE_TIMEOUT = 2.0  # how long a close waits for the peer's close frame
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
END_TYPES = {WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR}
# The kernel send buffer of a seat channel. Left alone, Linux autotunes it up to tcp_wmem's maximum
# (4 MB; on loopback at once): a peer that stops reading then parks megabytes per socket in kernel
# memory -- RSS never shows it -- and its writer never waits, so its queue never fills and the hub
# never drops it (measured: 200 never-reading clients pinned ~310 MB of Send-Q on 3 nodes and none was
# dropped in 30 s). Capped, a stalled peer backs up into its queue within seconds and is dropped with
# 1013. The kernel doubles the value (128 kB): a reading peer never notices, and even a 5,000-seat
# snapshot crosses a 200 ms round trip in about a second.
WS_SEND_BUFFER = 64 * 1024


SUBPROTOCOL = "boxoffice"  # echoed to a client that offers it (a browser needs one of its offers echoed)
TOKEN_PROTOCOL = "bearer."  # an offered subprotocol "bearer.<token>" carries the token outside the URL


def subprotocol_token(request: web.Request) -> str | None:
    """The token a client offered as the subprotocol `bearer.<token>` (Sec-WebSocket-Protocol), if any."""
    for offer in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        offer = offer.strip()
        if offer.startswith(TOKEN_PROTOCOL):
            return offer[len(TOKEN_PROTOCOL):MAX_TOKEN + len(TOKEN_PROTOCOL)] or None
    return None


class UpgradeRequired(DomainError):
    status, code, message = 426, "upgrade_required", "This route speaks WebSocket only"


def origin_allowed(origin: str | None, host: str, allowed: tuple[str, ...]) -> bool:
    """No Origin (scripts, load tests): allowed. Else it must be listed, or by default be this server's host."""
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    if allowed:
        return "*" in allowed or origin in {a.strip().rstrip("/").lower() for a in allowed}
    try:
        parts = urlsplit(origin)
        served = urlsplit(f"//{host.lower()}")
        default = DEFAULT_PORTS.get(parts.scheme)
        return bool(parts.hostname) and parts.hostname == served.hostname and \
            (parts.port or default) == (served.port or default)
    except ValueError:  # a port that is not a number
        return False


async def session_socket(request: web.Request) -> web.StreamResponse:
    """The socket's whole life in one coroutine frame, which stays alive for as long as it is open: the
    upgrade happens in `upgrade`, whose frame ends with it (on 2,000 idle sockets every frame counts)."""
    ws, peer = await upgrade(request)
    conn, hub = peer.conn, request.app[HUB]
    hub.add(conn)  # before the snapshot is read: no change can fall in between
    metrics.OPEN_SOCKETS.inc()
    try:
        conn.start()
        # the reader: one message at a time, each answered through the socket's queue (holds and releases
        # from tasks of their own, realtime.messages)
        while (msg := await ws.receive()).type not in END_TYPES and await take_message(peer, ws, msg):
            pass
    finally:
        try:
            await peer.finish_commands()
            await conn.stop()
        finally:  # even if the stop is cancelled (shutdown timeout), nothing is left behind
            hub.remove(conn)
            metrics.OPEN_SOCKETS.dec()
            request.app[LIMITS].close_socket(peer.address)
    return ws


async def upgrade(request: web.Request) -> tuple[web.WebSocketResponse, Peer]:
    """The checks before the upgrade, those that read nothing first (400, 403 origin_not_allowed, 429
    too_many_sockets), then 404 session_not_found and 426; then the upgrade."""
    app, settings = request.app, request.app[SETTINGS]
    try:
        session_id = uuid.UUID(request.match_info["sessionId"])
    except ValueError:
        raise ValidationFailed(details={"fields": {"sessionId": ["Not a valid UUID."]}}) from None
    if not origin_allowed(request.headers.get("Origin"), request.host, settings.allowed_origins):
        raise Forbidden("This Origin may not open seat channels", code="origin_not_allowed")
    limits = app[LIMITS]
    address = limits.client_ip(request)
    limits.open_socket(address)  # given back when the socket ends (session_socket), or below on a refusal
    try:
        await get_session_row(app[PG_POOL], session_id)  # 404 session_not_found, before any upgrade
        # the token: in the subprotocol (never logged anywhere), else `?token=` (kept for older clients)
        token = subprotocol_token(request) or request.query.get("token")
        who = await valid_principal(app, token)  # the REST rule; an expired token may watch
        # no per-socket heartbeat timer or receive timeout: the hub's keeper pings, cuts and closes idle sockets
        ws = web.WebSocketResponse(max_msg_size=settings.ws_max_msg_size, autoping=False, protocols=(SUBPROTOCOL,),
                                   compress=False, timeout=CLOSE_TIMEOUT)  # frames are shared: never per-socket deflate
        if not ws.can_prepare(request).ok:
            raise UpgradeRequired()
        ws.headers["X-Node-Id"] = ws.headers["X-Worker-ID"] = app[NODE_ID]
        cap_send_buffer(request)
        await ws.prepare(request)
    except BaseException:
        limits.close_socket(address)
        raise
    user_id = str(who.user_id) if who is not None and who.user_id is not None else None
    # one string per session, not per socket (interned strings are freed with their last user)
    conn = Connection(ws, request, sys.intern(str(session_id)), user_id, settings.ws_queue_size,
                      app[SNAPSHOTS].render)
    return ws, Peer(app, conn, who, address, token or None)


def cap_send_buffer(request: web.Request) -> None:
    """Bound what a peer that does not read can park in the kernel (see WS_SEND_BUFFER)."""
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # best effort: the socket may already be gone
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, WS_SEND_BUFFER)


async def take_message(peer: Peer, ws: web.WebSocketResponse, msg: WSMessage) -> bool:
    """One message from the client; False: read no more (the socket is being closed)."""
    conn = peer.conn
    conn.last_heard = asyncio.get_running_loop().time()
    if conn.closing:  # closing: what the client still sends is ignored
        return True
    settings = peer.app[SETTINGS]
    # every frame counts, control frames too: a flood of pings costs a pong each
    if not peer.allowed(settings.ws_rate_per_second, settings.ws_rate_burst):
        conn.drop(WSClose.POLICY, "message rate limit exceeded")
        # Stop reading here. With the reader waiting in receive(), the writer's ws.close() would close
        # the TCP connection as soon as its close frame is out, while the flood is still arriving:
        # unread bytes turn that close into a reset, and a client still writing then fails before it
        # reads its 1008 (measured: 25 of 120 floods against cluster nodes saw no close frame). Left
        # alone, ws.close() waits for the client's close frame, reading and discarding the rest of
        # the flood; a client that never answers is cut by the drop's timer, as before.
        return False
    if msg.type is WSMsgType.PONG:  # the answer to the keeper's ping
        return True
    if msg.type is WSMsgType.PING:
        await ws.pong(msg.data)
        return True
    conn.last_message = conn.last_heard
    if msg.type is not WSMsgType.TEXT:
        conn.send_message({"type": "error", "requestId": None, "code": "unsupported_frame",
                           "message": "Send JSON text frames"})
        return True
    await dispatch(peer, msg.data)
    return True
