"""Locust users of a boxoffice rush: REST buyers, WebSocket seat pickers and watchers, on one contract client.

Run through `boxoffice rush` (loadtests/rush/), which creates the sessions, writes the plan this file
reads (`BOXOFFICE_RUSH_PLAN`), starts Locust headless on every core and checks the invariants afterwards.

Statistics: every REST call lands in Locust's table under a stable name ("hold", "confirm", ...); a
non-2xx answer is a Locust failure named "<status> <code>" -- so a refused hold shows up as the failure
"409 seats_unavailable", which under contention is the correct answer, not a fault. WebSocket requests
(connect, hold, release) are reported with request type "WS". Counters Locust does not keep (hold
outcomes per second, commit->arrival delays of broadcasts, errors by code) go to loadtests/metrics.py,
one file per process in the report folder.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import locust.runners
from locust import FastHttpUser, between, constant, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner

from loadtests.contract_client import (
    ContractClient,
    Reply,
    SeatSocket,
    SocketClosed,
    parse_json,
)
from loadtests.metrics import Metrics
from loadtests.plan import METRICS_DIR, STOP_FILE, WATCHER_MAPS_DIR, Plan
from loadtests.seats import pick_best_seats
from loadtests.waiting import wait_in_line

# A worker sharing 2 cores with the system under test can be too busy to send its 1 s heartbeat for a few
# seconds; with Locust's default liveness (3 missed beats) the master then declares it missing and
# re-spawns its users on the other worker, which distorts the run. A minute of tolerance instead.
locust.runners.HEARTBEAT_LIVENESS = 60

PLAN = Plan.load()
OUT = Path(PLAN.out_dir)
METRICS = Metrics()
METRICS_WRITE_INTERVAL = 2.0
# the room's shape per session (ids and places of every seat): it never changes, so each process keeps one copy
SHAPES: dict[str, list[dict[str, Any]]] = {}
_watcher_numbers = itertools.count()


class LocustTransport:
    """Sends a contract request through a Locust HTTP session, so it lands in Locust's statistics."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(self, method: str, path: str, *, name: str, json_body: Any = None,
                 headers: Mapping[str, str] | None = None) -> Reply:
        start = time.perf_counter()
        with self.client.request(method, path, name=name, json=json_body, headers=dict(headers or {}),
                                 catch_response=True) as resp:
            status = int(resp.status_code or 0)
            answer_headers = (resp.headers or {}) if status else {}
            error = getattr(resp, "error", None) if not status else None
            reply = Reply(status, parse_json(resp.content), (time.perf_counter() - start) * 1000,
                          answer_headers.get("X-Node-Id", ""),
                          Reply.parse_retry_after(answer_headers.get("Retry-After")),
                          type(error).__name__ if error is not None else "")
            if reply.ok:
                resp.success()
            else:
                resp.failure(reply.outcome)
        if not reply.ok:
            METRICS.error(name, reply.outcome)
        return reply


def report_ws(environment: Environment, name: str, started: float, message: Any = None,
              failure: str | None = None) -> None:
    """One WebSocket request in Locust's statistics (request type "WS")."""
    environment.events.request.fire(
        request_type="WS", name=name, response_time=(time.perf_counter() - started) * 1000,
        response_length=len(json.dumps(message)) if message is not None else 0,
        exception=RuntimeError(failure) if failure else None, context={},
    )
    if failure:
        METRICS.error(f"WS {name}", failure)


def record_broadcast(message: dict[str, Any], delay_ms: float) -> None:
    METRICS.broadcast(delay_ms)


class BoxofficeUser(FastHttpUser):
    """A browser of the rush: a guest account, and the contract client every user class shares."""

    abstract = True
    host = PLAN.host
    network_timeout = 60.0
    connection_timeout = 30.0

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.rng = random.Random()
        self.api = ContractClient(LocustTransport(self.client))

    def ensure_guest(self) -> bool:
        """A guest account (POST /users) the first time, or after that failed."""
        return self.api.token is not None or self.api.create_guest().status == 201

    def back_off(self, reply: Reply) -> None:
        """What a person does when the site answers with an error: wait a bit (Retry-After when given)."""
        if reply.retry_after is not None:
            gevent.sleep(min(reply.retry_after, 10.0) * self.rng.uniform(1.0, 1.5))
        elif reply.status == 0 or reply.status >= 500:
            gevent.sleep(self.rng.uniform(*PLAN.buyer.error_wait_seconds))

    def wait_in_line(self, session_id: str) -> bool:
        """The session's waiting room (loadtests/waiting.py); False: try again later."""
        return wait_in_line(self.api, session_id, self.rng, METRICS, self.back_off)

    def leave_line(self, session_id: str) -> None:
        """A buyer who walks away gives their place inside back (the capacity inlet: the next one goes in)."""
        if PLAN.queue_capacity and session_id in self.api.admissions:
            self.api.leave_queue(session_id)

    def choose_session(self) -> str:
        return self.rng.choice(PLAN.session_ids)

    def shape_of(self, session_id: str) -> list[dict[str, Any]] | None:
        """Every seat of the session (the page load: a full seat map), fetched once per process."""
        if session_id not in SHAPES:
            reply = self.api.seat_map(session_id)
            if not reply.ok:
                self.back_off(reply)
                return None
            SHAPES[session_id] = reply.body["seats"]
        return SHAPES[session_id]

    def buy(self, reservation_id: str, seats: int) -> bool:
        """Confirm with an Idempotency-Key (sometimes twice: same sale expected), then read the purchases."""
        key = uuid.uuid4().hex
        sale = self.api.confirm(reservation_id, key)
        if sale.status != 201:
            return False
        METRICS.count("sales")
        METRICS.count("seats_bought", seats)
        if self.rng.random() < PLAN.buyer.retry_confirm_probability:
            again = self.api.confirm(reservation_id, key, name="confirm (same key)")
            # a retry the system did not answer (timeout, 5xx) proves nothing; any answer must be the same sale
            answered = 0 < again.status < 500
            if answered and (again.status != 201 or again.body.get("id") != sale.body.get("id")):
                METRICS.error("confirm (same key)", "idempotency_mismatch")
                METRICS.count("idempotency_mismatch")
        purchases = self.api.purchases()
        if purchases.ok and not any(p.get("id") == sale.body.get("id") for p in purchases.body):
            METRICS.error("purchases", "purchase_missing")
            METRICS.count("purchase_missing")
        return True


class RushBuyer(BoxofficeUser):
    """REST buyer: seat map, hold 1-4 of the best free seats, then buy, cancel or walk away."""

    weight = PLAN.weights.get("RushBuyer", 1)
    wait_time = between(*PLAN.buyer.wait_seconds)
    refusals = 0  # 409s this buyer has had
    counted_at_hold = False

    @task
    def try_to_buy(self) -> None:
        plan = PLAN.buyer
        if self.api.token is None:
            guest = self.api.create_guest()
            if guest.status != 201:
                self.back_off(guest)
                return
        session_id = self.choose_session()
        if PLAN.queued and not self.wait_in_line(session_id):
            return
        if not self.counted_at_hold:
            self.counted_at_hold = True
            METRICS.count("buyers_at_hold")  # with a waiting room: the admitted buyers
        shape = self.shape_of(session_id)
        if shape is None:
            return
        free_reply = self.api.seat_map(session_id, "AVAILABLE")
        if not free_reply.ok:
            self.back_off(free_reply)
            return
        free = free_reply.body["seats"]
        if not free:
            self.nothing_free(session_id)
            return
        wanted = self.rng.randint(plan.seats_min, plan.seats_max)
        for attempt in range(plan.retries_after_conflict + 1):
            if attempt:  # the page shows those seats taken now: the buyer clicks the next best ones
                gevent.sleep(self.rng.uniform(*plan.repick_seconds))
            # every refusal makes a buyer less picky: "the best seats" widens towards "any seats together"
            jitter = plan.best_seat_jitter * (1 + min(self.refusals, plan.max_pickiness_loss))
            seats = pick_best_seats(free, wanted, self.rng, jitter, all_seats=shape)
            hold = self.api.hold(session_id, seats, idempotency_key=uuid.uuid4().hex)
            METRICS.hold("REST", hold.status == 201, "" if hold.ok else hold.code, hold.elapsed_ms)
            if hold.status == 201:
                break
            if hold.status != 409 or not isinstance(hold.body, dict):
                self.back_off(hold)
                return
            self.refusals += 1
            taken = set(hold.body.get("details", {}).get("conflicts", [])) or set(seats)
            free = [s for s in free if s["id"] not in taken]
            if not free:
                return
        else:
            return  # refused every time: look at a fresh map after the wait
        METRICS.count("holds")
        gevent.sleep(self.rng.uniform(*plan.pay_seconds))
        roll = self.rng.random()
        if roll < plan.confirm_probability:
            self.buy(hold.body["id"], len(seats))
            if plan.buy_once:
                raise StopUser()
        elif roll < plan.confirm_probability + plan.cancel_probability:
            self.api.cancel(hold.body["id"])  # changed their mind: picks again
            METRICS.count("cancels")
        else:
            METRICS.count("abandoned_holds")  # closes the tab: the hold expires on its own
            if plan.buy_once:
                self.leave_line(session_id)
                raise StopUser()

    def nothing_free(self, session_id: str) -> None:
        """No free seat: sold out (leave, in a rush), or all taken by holds that may still expire (wait)."""
        full = self.api.seat_map(session_id)
        if full.ok and all(s["status"] == "SOLD" for s in full.body["seats"]):
            METRICS.count("buyers_saw_sold_out")
            if PLAN.stop_when_sold_out:
                self.leave_line(session_id)
                raise StopUser()
        gevent.sleep(self.rng.uniform(*PLAN.buyer.sold_out_wait_seconds))


class SocketUser(BoxofficeUser):
    """A user with one open seat-map socket (reconnected, with a fresh snapshot, if it drops)."""

    abstract = True
    socket: SeatSocket | None = None
    session_id = ""

    def connect(self, token: str | None) -> bool:
        self.close_socket()
        sock = SeatSocket(PLAN.host, self.session_id, token, on_seats=record_broadcast)
        started = time.perf_counter()
        try:
            sock.open()
        except Exception as exc:  # noqa: BLE001 - any failure to connect is a statistic, not a crash
            report_ws(self.environment, "connect", started, failure=f"connect failed: {type(exc).__name__}")
            sock.close()
            return False
        report_ws(self.environment, "connect", started, sock.snapshot)
        self.socket = sock
        return True

    def close_socket(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    def on_stop(self) -> None:
        self.close_socket()


class SeatPicker(SocketUser):
    """WebSocket seat picker: watches a session, holds and releases over the socket, sometimes buys (REST)."""

    weight = PLAN.weights.get("SeatPicker", 1)
    wait_time = between(*PLAN.picker.wait_seconds)

    def on_start(self) -> None:
        self.session_id = self.choose_session()

    @task
    def pick(self) -> None:
        plan = PLAN.picker
        if self.socket is None or not self.socket.open_:
            if self.socket is not None:
                METRICS.count("ws_reconnects")
            if not self.ensure_guest() or not self.connect(self.api.token):
                return
        assert self.socket is not None
        free = self.socket.map.with_status("AVAILABLE")
        if not free:
            return
        wanted = self.rng.randint(plan.seats_min, plan.seats_max)
        seats = pick_best_seats(free, wanted, self.rng, plan.best_seat_jitter, all_seats=self.socket.map.shape())
        started = time.perf_counter()
        reply = self.ws_call("hold", lambda sock: sock.hold(seats))
        if reply is None:  # the socket failed under the request: an error, not a refusal
            METRICS.hold("WS", False, "no_answer", (time.perf_counter() - started) * 1000)
            return
        ok = reply.get("type") == "hold.ok"
        code = "" if ok else str(reply.get("code", "unknown"))
        METRICS.hold("WS", ok, code, reply["_elapsed_ms"])
        if not ok:
            return
        METRICS.count("holds")
        reservation_id = reply["reservation"]["id"]
        gevent.sleep(self.rng.uniform(*plan.hold_seconds))
        if self.rng.random() < plan.confirm_probability:
            self.buy(reservation_id, len(seats))
        else:
            self.ws_call("release", lambda sock: sock.release(reservation_id))
            METRICS.count("releases")

    def ws_call(self, name: str, call: Any) -> dict[str, Any] | None:
        """A request over the socket, reported to Locust as WS <name>; None if the socket failed."""
        assert self.socket is not None
        started = time.perf_counter()
        try:
            reply, elapsed = call(self.socket)
        except (SocketClosed, TimeoutError, OSError) as exc:
            report_ws(self.environment, name, started, failure=f"{type(exc).__name__}")
            self.close_socket()
            return None
        kind = str(reply.get("type", ""))
        failure = None if kind.endswith(".ok") else f"WS {reply.get('code', kind)}"
        report_ws(self.environment, name, started, reply, failure)
        return {**reply, "_elapsed_ms": elapsed}


class Watcher(SocketUser):
    """Only watches: keeps its own seat map from the snapshot and the changes (applied by version).

    When it stops it writes that map to the report folder; the runner checks no seat in it is ahead of
    PostgreSQL or disagrees with it at the same version (the run may stop before the stream is quiet, so
    the final equality check is made by the runner's own watchers, which outlive the load).
    """

    fixed_count = PLAN.watchers
    wait_time = constant(2.0)

    def on_start(self) -> None:
        self.number = next(_watcher_numbers)
        self.session_id = PLAN.session_ids[self.number % len(PLAN.session_ids)]

    @task
    def watch(self) -> None:
        if self.socket is None or not self.socket.open_:
            if self.socket is not None:
                METRICS.count("ws_reconnects")
            self.connect(None)

    def on_stop(self) -> None:
        sock = self.socket
        if sock is not None and sock.snapshots:
            record = {
                "sessionId": self.session_id, "nodeId": sock.node_id, "closedAt": time.time() * 1000,
                "applied": sock.map.applied, "stale": sock.map.stale, "messages": sock.messages,
                "seats": {seat: list(state) for seat, state in sock.map.seats.items()},
            }
            folder = OUT / WATCHER_MAPS_DIR
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{os.getpid()}-{self.number}.json").write_text(json.dumps(record))
            METRICS.count("watcher_changes_applied", sock.map.applied)
            METRICS.count("watcher_stale_changes", sock.map.stale)
        super().on_stop()


# ---- process-level hooks ------------------------------------------------------------------------------


def write_metrics() -> None:
    METRICS.write(OUT / METRICS_DIR)


def _metrics_writer() -> None:
    while True:
        gevent.sleep(METRICS_WRITE_INTERVAL)
        write_metrics()


def _stop_watcher(environment: Environment) -> None:
    """On the master: end the run (the same path as --run-time) when the runner asks (sold out), or when
    every buyer of a rush has left -- bought, walked away or found nothing -- so no time is spent idle."""
    stop_file = OUT / STOP_FILE
    runner = environment.runner
    assert runner is not None
    users_seen = False  # the master learns the workers' user counts from their reports, a moment after spawning
    while True:
        gevent.sleep(0.5)
        users_seen = users_seen or (_spawned.is_set() and runner.user_count > 0)
        everybody_left = PLAN.stop_when_sold_out and users_seen and runner.user_count == 0
        if stop_file.exists() or everybody_left:
            runner.quit()
            return


_spawned = gevent.event.Event()


@events.spawning_complete.add_listener
def on_spawning_complete(user_count: int, **_: Any) -> None:
    _spawned.set()


@events.init.add_listener
def on_init(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or environment.runner is None:
        gevent.spawn(_metrics_writer)
    else:  # the master (or a single local process)
        gevent.spawn(_stop_watcher, environment)
        if not hasattr(environment.runner, "clients"):  # a LocalRunner also runs the users
            gevent.spawn(_metrics_writer)


@events.test_stop.add_listener
def on_test_stop(**_: Any) -> None:
    write_metrics()


@events.quitting.add_listener
def on_quitting(environment: Environment, **_: Any) -> None:
    write_metrics()
    environment.process_exit_code = 0  # the runner judges the run (invariants), not Locust's failure count
