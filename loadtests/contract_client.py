"""The one client of the wire contract (CONTRACT.md), shared by every Locust user and by the rush runner.

It speaks only HTTP + JSON and the WebSocket protocol the contract describes; it imports nothing of the
server. How a request travels is pluggable (`Transport`): Locust users send through their own HTTP
session so each request lands in Locust's statistics; the runner sends through urllib.

The WebSocket side (`SeatSocket`) uses `websocket-client`, a plain blocking client: a reader thread per
socket keeps a `SeatMap` (snapshot + changes applied by version) and hands replies to the caller that
waits for them. Under Locust, gevent's monkey-patching turns those threads and sockets into greenlets.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import websocket  # websocket-client

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
        return self.send("POST", "/reservations", name="hold", headers=self._auth(extra),
                         json_body={"userId": self.user_id, "sessionId": session_id, "sessionSeatIds": list(seat_ids)})

    def confirm(self, reservation_id: str, idempotency_key: str, name: str = "confirm") -> Reply:
        return self.send("POST", f"/reservations/{reservation_id}/confirm", name=name,
                         headers=self._auth({"Idempotency-Key": idempotency_key}))

    def cancel(self, reservation_id: str) -> Reply:
        return self.send("DELETE", f"/reservations/{reservation_id}", name="cancel", headers=self._auth())

    def reservation(self, reservation_id: str) -> Reply:
        return self.send("GET", f"/reservations/{reservation_id}", name="reservation", headers=self._auth())

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


# ---- choosing seats --------------------------------------------------------------------------------


def seat_place(seat: Mapping[str, Any]) -> tuple[str, int]:
    """(rowLabel, seatNumber) of a seat from the REST seat map (nested `seat`) or a socket snapshot (flat)."""
    inner = seat.get("seat") or seat
    return str(inner["rowLabel"]), int(inner["seatNumber"])


def pick_best_seats(seats: Sequence[Mapping[str, Any]], count: int, rng: random.Random,
                    jitter: float = 2.0, all_seats: Sequence[Mapping[str, Any]] | None = None) -> list[str]:
    """`count` available seats as a buyer picks them: the best free seat (middle rows, centre of the row,
    loosened by `jitter` so not everybody wants the very same one) and its free neighbours in that row.

    `seats` are the available seats; `all_seats` (default: `seats`) gives the room's shape, so "middle"
    means the middle of the room even when the centre is already gone. Everybody aims at the same
    few seats: that is where the contention of a rush comes from.
    """
    if not seats or count <= 0:
        return []
    shape = all_seats or seats
    rows = sorted({seat_place(s)[0] for s in shape})
    row_index = {label: i for i, label in enumerate(rows)}
    numbers = [seat_place(s)[1] for s in shape]
    mid_row = (len(rows) - 1) / 2
    mid_seat = (min(numbers) + max(numbers)) / 2

    def score(seat: Mapping[str, Any]) -> float:
        row, number = seat_place(seat)
        return abs(row_index.get(row, 0) - mid_row) + 0.6 * abs(number - mid_seat) + rng.uniform(0, jitter)

    by_place = {seat_place(s): str(s["id"]) for s in seats}
    anchor_row, anchor_number = seat_place(min(seats, key=score))
    chosen = [by_place[(anchor_row, anchor_number)]]
    # grow the group left and right in the anchor's row, nearest first
    for step in range(1, max(numbers) + 1):
        for number in (anchor_number - step, anchor_number + step):
            if len(chosen) < count and (anchor_row, number) in by_place:
                chosen.append(by_place[(anchor_row, number)])
    if len(chosen) < count:  # the row is full around the anchor: take the next best seats anywhere
        rest = sorted((s for s in seats if str(s["id"]) not in chosen), key=score)
        chosen += [str(s["id"]) for s in rest[: count - len(chosen)]]
    return chosen


# ---- seat maps kept by clients ---------------------------------------------------------------------


@dataclass
class SeatMap:
    """A client's picture of one session: seat id -> (status, version), built the way the contract says:
    a snapshot, then changes applied only when their version is newer than the one held."""

    seats: dict[str, tuple[str, int]] = field(default_factory=dict)
    places: dict[str, tuple[str, int]] = field(default_factory=dict)  # seat id -> (rowLabel, seatNumber)
    applied: int = 0
    stale: int = 0  # changes that arrived with a version not newer than the one held (duplicates, reordering)

    def load(self, seats: Iterable[Mapping[str, Any]]) -> None:
        seats = list(seats)
        self.seats = {str(s["id"]): (str(s["status"]), int(s["version"])) for s in seats}
        self.places = {str(s["id"]): seat_place(s) for s in seats if "rowLabel" in s or "seat" in s}

    def with_status(self, status: str) -> list[dict[str, Any]]:
        """The seats in `status`, shaped like a snapshot's seats (for `pick_best_seats`)."""
        return [{"id": seat_id, "rowLabel": self.places[seat_id][0], "seatNumber": self.places[seat_id][1]}
                for seat_id, (state, _) in self.seats.items() if state == status and seat_id in self.places]

    def shape(self) -> list[dict[str, Any]]:
        return [{"id": i, "rowLabel": row, "seatNumber": n} for i, (row, n) in self.places.items()]

    def apply(self, changes: Iterable[Mapping[str, Any]]) -> None:
        for change in changes:
            seat_id, version = str(change["id"]), int(change["version"])
            held = self.seats.get(seat_id)
            if held is not None and held[1] >= version:
                self.stale += 1
                continue
            self.seats[seat_id] = (str(change["status"]), version)
            self.applied += 1

    def differences(self, truth: Mapping[str, tuple[str, int]]) -> list[dict[str, Any]]:
        """Every seat where this map and `truth` (e.g. GET /sessions/{id}/seats) disagree."""
        out = []
        for seat_id in sorted(set(self.seats) | set(truth)):
            mine, real = self.seats.get(seat_id), truth.get(seat_id)
            if mine != real:
                out.append({"seat": seat_id, "client": mine, "server": real})
        return out

    @staticmethod
    def from_rest(body: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
        return {str(s["id"]): (str(s["status"]), int(s["version"])) for s in body["seats"]}


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
