"""The one client of the wire contract (CONTRACT.md), shared by every Locust user and by the rush runner
(what a client does with seats, picking them and keeping a map, is `loadtests/seats.py`).

It speaks only HTTP + JSON and the WebSocket protocol the contract describes; it imports nothing of the
server. How a request travels is pluggable (`Transport`): Locust users send through their own HTTP
session so each request lands in Locust's statistics; the runner sends through urllib.

The WebSocket side (`SeatSocket`) uses `websocket-client`, a plain blocking client: a reader thread per
socket keeps a `SeatMap` (snapshot + changes applied by version) and hands replies to the caller that
waits for them. Under Locust, gevent's monkey-patching turns those threads and sockets into greenlets.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import websocket  # websocket-client

from loadtests.seats import SeatMap

# ---- HTTP ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status (0 when no answer came), the parsed JSON body, and how long it took."""

    status: int
    body: Any
    elapsed_ms: float
    node_id: str = ""
    retry_after: float | None = None  # seconds, from a 429/503's Retry-After header
    transport_error: str = ""  # why no answer came (status 0): the exception's class name

    @staticmethod
    def parse_retry_after(value: str | None) -> float | None:
        try:
            return float(value) if value else None
        except ValueError:
            return None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def code(self) -> str:
        """The contract's stable error `code` (or a stand-in when the body has none)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("code"), str):
            return str(self.body["code"])
        if self.status == 0:
            return f"no_answer ({self.transport_error})" if self.transport_error else "no_answer"
        return f"http_{self.status}"

    @property
    def outcome(self) -> str:
        """"201" for a success, "409 seats_unavailable" for an error: the key of the errors-by-code table."""
        return str(self.status) if self.ok else f"{self.status} {self.code}"


class Transport(Protocol):
    """Sends one request; `name` groups it in statistics (e.g. "hold" rather than the URL with its id)."""

    def __call__(self, method: str, path: str, *, name: str, json_body: Any = None,
                 headers: Mapping[str, str] | None = None) -> Reply: ...


def parse_json(raw: bytes | str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


class UrllibTransport:
    """A blocking transport on the standard library (the runner's set-up and checks)."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def __call__(self, method: str, path: str, *, name: str, json_body: Any = None,
                 headers: Mapping[str, str] | None = None) -> Reply:
        data = None if json_body is None else json.dumps(json_body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method,  # noqa: S310 - our URL
                                     headers={"Content-Type": "application/json", **(headers or {})})
        start = time.perf_counter()
        retry_after = None
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                status, body, node = resp.status, resp.read(), resp.headers.get("X-Node-Id", "")
        except urllib.error.HTTPError as exc:
            status, body, node = exc.code, exc.read(), exc.headers.get("X-Node-Id", "")
            retry_after = Reply.parse_retry_after(exc.headers.get("Retry-After"))
        except OSError as exc:
            return Reply(0, None, (time.perf_counter() - start) * 1000, transport_error=type(exc).__name__)
        return Reply(status, parse_json(body), (time.perf_counter() - start) * 1000, node, retry_after)


class ContractClient:
    """The REST calls of the contract, as one user (or the admin) makes them."""

    def __init__(self, send: Transport, token: str | None = None) -> None:
        self.send = send
        self.token = token
        self.user_id: str | None = None
        self.admissions: dict[str, str] = {}  # session id -> this user's admission (sessions with a waiting room)

    def _auth(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**headers, **(extra or {})}

    # ---- users ----

    def create_guest(self, name: str = "Guest") -> Reply:
        """POST /users with a unique e-mail; on 201 this client acts as that user from now on."""
        email = f"guest-{uuid.uuid4().hex}@rush.example.com"
        reply = self.send("POST", "/users", name="create user", json_body={"name": name, "email": email})
        if reply.status == 201 and isinstance(reply.body, dict):
            self.token = reply.body.get("token")
            self.user_id = reply.body.get("id")
        return reply

    def purchases(self) -> Reply:
        return self.send("GET", f"/users/{self.user_id}/purchases", name="purchases", headers=self._auth())

    # ---- seats and holds ----

    def seat_map(self, session_id: str, status: str | None = None) -> Reply:
        query = f"?status={status}" if status else ""
        return self.send("GET", f"/sessions/{session_id}/seats{query}",
                         name="seat map" + (f" ({status})" if status else ""))

    def hold(self, session_id: str, seat_ids: Sequence[str], idempotency_key: str | None = None) -> Reply:
        extra = {"x-idempotency-key": idempotency_key} if idempotency_key else {}
        if session_id in self.admissions:
            extra["X-Admission"] = self.admissions[session_id]
        return self.send("POST", "/reservations", name="hold", headers=self._auth(extra),
                         json_body={"userId": self.user_id, "sessionId": session_id, "sessionSeatIds": list(seat_ids)})

    def confirm(self, reservation_id: str, idempotency_key: str, name: str = "confirm") -> Reply:
        return self.send("POST", f"/reservations/{reservation_id}/confirm", name=name,
                         headers=self._auth({"Idempotency-Key": idempotency_key}))

    def cancel(self, reservation_id: str) -> Reply:
        return self.send("DELETE", f"/reservations/{reservation_id}", name="cancel", headers=self._auth())

    def reservation(self, reservation_id: str) -> Reply:
        return self.send("GET", f"/reservations/{reservation_id}", name="reservation", headers=self._auth())

    # ---- the waiting room ----

    def join_queue(self, session_id: str) -> Reply:
        return self.send("POST", f"/sessions/{session_id}/queue", name="queue join", headers=self._auth())

    def queue_place(self, session_id: str) -> Reply:
        return self.send("GET", f"/sessions/{session_id}/queue", name="queue place", headers=self._auth())

    def open_queue(self, session_id: str, rate: float = 0.0, capacity: int = 0) -> Reply:
        inlet: dict[str, float | int] = {"capacity": capacity} if capacity else {"rate": rate}
        return self.send("PUT", f"/sessions/{session_id}/queue", name="open queue", headers=self._auth(),
                         json_body={"enabled": True, **inlet})

    def leave_queue(self, session_id: str) -> Reply:
        return self.send("DELETE", f"/sessions/{session_id}/queue", name="queue leave", headers=self._auth())

    # ---- admin and ops ----

    def create_room(self, name: str, rows: int, seats_per_row: int) -> Reply:
        return self.send("POST", "/rooms", name="create room", headers=self._auth(),
                         json_body={"name": name, "rows": rows, "seatsPerRow": seats_per_row})

    def create_session(self, room_id: str, movie_title: str, price: float = 12.5,
                       starts_in: timedelta = timedelta(days=1)) -> Reply:
        start = datetime.now(UTC) + starts_in
        return self.send("POST", "/sessions", name="create session", headers=self._auth(), json_body={
            "movieTitle": movie_title, "startShowTime": start.isoformat(),
            "endShowTime": (start + timedelta(hours=2)).isoformat(), "roomId": room_id, "ticketPrice": price,
        })

    def ready(self) -> Reply:
        return self.send("GET", "/ready", name="ready")


# ---- WebSocket -------------------------------------------------------------------------------------


class SocketClosed(RuntimeError):
    """The socket closed (or never opened) while a request waited for its reply."""


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None


def ws_url(base_url: str, session_id: str, token: str | None = None) -> str:
    parts = urllib.parse.urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    query = "?" + urllib.parse.urlencode({"token": token}) if token else ""
    return f"{scheme}://{parts.netloc}/ws/sessions/{session_id}{query}"


class SeatSocket:
    """One `GET /ws/sessions/{id}` connection: keeps the seat map current and pairs replies with requests.

    `on_seats(message, delay_ms)` is called for every `seats` message, with the delay between the change's
    commit (`committedAt`) and its arrival here. Call `open()`, then `hold`/`release`/`ping`, then `close()`.
    """

    def __init__(self, base_url: str, session_id: str, token: str | None = None, *,
                 on_seats: Callable[[dict[str, Any], float], None] | None = None,
                 connect_timeout: float = 15.0) -> None:
        self.url = ws_url(base_url, session_id, token)
        self.session_id = session_id
        self.on_seats = on_seats
        self.connect_timeout = connect_timeout
        self.map = SeatMap()
        self.snapshot: dict[str, Any] = {}
        self.node_id = ""
        self.snapshots = 0
        self.messages = 0
        self.last_message_at = 0.0  # time.monotonic() of the last frame received
        self.close_reason = ""
        self._ws: websocket.WebSocket | None = None
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._snapshot_seen = threading.Event()
        self._closed = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def open_(self) -> bool:
        return self._ws is not None and not self._closed.is_set()

    def open(self) -> float:
        """Connect and wait for the snapshot; return the milliseconds that took. Raises on failure."""
        start = time.perf_counter()
        # no Origin header: the contract lets scripts without one in (browsers are checked against ALLOWED_ORIGINS)
        self._ws = websocket.create_connection(self.url, timeout=self.connect_timeout, suppress_origin=True,
                                               enable_multithread=True)
        self._ws.settimeout(1.0)  # the reader wakes up every second to notice close()
        self._reader = threading.Thread(target=self._read_loop, name=f"ws-{self.session_id[:8]}", daemon=True)
        self._reader.start()
        if not self._snapshot_seen.wait(self.connect_timeout):
            self.close()
            raise SocketClosed(f"no snapshot within {self.connect_timeout}s ({self.close_reason or 'silent'})")
        return (time.perf_counter() - start) * 1000

    def close(self) -> None:
        self._closed.set()
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close(timeout=1)
            except (OSError, websocket.WebSocketException):
                pass
        self._fail_pending()

    # ---- requests ----

    def request(self, message: dict[str, Any], timeout: float = 15.0) -> tuple[dict[str, Any], float]:
        """Send a message with a fresh requestId; return (its reply, milliseconds until it came)."""
        request_id = uuid.uuid4().hex[:16]
        slot = _Pending()
        with self._lock:
            self._pending[request_id] = slot
        start = time.perf_counter()
        try:
            ws = self._ws
            if ws is None or self._closed.is_set():
                raise SocketClosed(self.close_reason or "socket not open")
            try:
                ws.send(json.dumps({**message, "requestId": request_id}))
            except (OSError, websocket.WebSocketException) as exc:
                raise SocketClosed(f"send failed: {exc}") from exc
            if not slot.done.wait(timeout):
                raise TimeoutError(f"no reply to {message.get('type')} within {timeout}s")
            if slot.reply is None:
                raise SocketClosed(self.close_reason or "socket closed")
            return slot.reply, (time.perf_counter() - start) * 1000
        finally:
            with self._lock:
                self._pending.pop(request_id, None)

    def hold(self, seat_ids: Sequence[str], timeout: float = 15.0) -> tuple[dict[str, Any], float]:
        return self.request({"type": "hold", "sessionSeatIds": list(seat_ids)}, timeout)

    def release(self, reservation_id: str, timeout: float = 15.0) -> tuple[dict[str, Any], float]:
        return self.request({"type": "release", "reservationId": reservation_id}, timeout)

    def ping(self, timeout: float = 15.0) -> tuple[dict[str, Any], float]:
        return self.request({"type": "ping"}, timeout)

    def resync(self) -> None:
        ws = self._ws
        if ws is not None:
            ws.send(json.dumps({"type": "resync"}))

    # ---- the reader ----

    def _read_loop(self) -> None:
        ws = self._ws
        try:
            while ws is not None and not self._closed.is_set():
                try:
                    raw = ws.recv()
                except websocket.WebSocketTimeoutException:
                    continue
                if not raw:  # a close frame
                    self.close_reason = f"closed by the server ({ws.status or ''})"
                    break
                self._dispatch(json.loads(raw))
        except (OSError, websocket.WebSocketException, ValueError) as exc:
            if not self._closed.is_set():
                self.close_reason = f"{type(exc).__name__}: {exc}"
        finally:
            self._closed.set()
            self._fail_pending()

    def _dispatch(self, message: dict[str, Any]) -> None:
        received_ms = time.time() * 1000
        self.messages += 1
        self.last_message_at = time.monotonic()
        kind = message.get("type")
        if kind == "snapshot":
            self.map.load(message.get("seats", []))
            self.snapshot = message
            self.node_id = str(message.get("nodeId", ""))
            self.snapshots += 1
            self._snapshot_seen.set()
        elif kind == "seats":
            self.map.apply(message.get("changes", []))
            committed = message.get("committedAt")
            if self.on_seats is not None and isinstance(committed, int | float):
                self.on_seats(message, received_ms - committed)
        request_id = message.get("requestId")
        if request_id:
            with self._lock:
                slot = self._pending.get(str(request_id))
            if slot is not None:
                slot.reply = message
                slot.done.set()

    def _fail_pending(self) -> None:
        with self._lock:
            slots = list(self._pending.values())
        for slot in slots:
            slot.done.set()  # reply stays None: the waiter raises SocketClosed

    def wait_quiet(self, quiet_seconds: float = 1.0, timeout: float = 10.0) -> bool:
        """Until no frame has arrived for `quiet_seconds` (True), or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if time.monotonic() - self.last_message_at >= quiet_seconds:
                return True
            time.sleep(0.1)
        return False
