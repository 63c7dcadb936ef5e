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
import time
import uuid
from typing import Any

import gevent
from locust import between, constant, task
from locust.exception import StopUser

import loadtests.locust_hooks  # noqa: F401 - registers the process-level hooks
from loadtests.contract_client import SeatSocket, SocketClosed
from loadtests.locust_base import METRICS, OUT, PLAN, BoxofficeUser, record_broadcast, report_ws
from loadtests.plan import WATCHER_MAPS_DIR
from loadtests.seats import pick_best_seats

_watcher_numbers = itertools.count()


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
                if hold.code == "not_admitted":  # the admission ran out (or the room was reopened): line up again
                    self.api.admissions.pop(session_id, None)
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

