"""What every Locust user of a rush shares: the plan, the process's metrics, the room shapes, the transport that
puts contract calls into Locust's statistics, and the base user (loaded by `locustfile.py`)."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser
from locust.env import Environment

from loadtests.contract_client import ContractClient, Reply, parse_json
from loadtests.metrics import Metrics
from loadtests.plan import Plan
from loadtests.waiting import wait_in_line

PLAN = Plan.load()
OUT = Path(PLAN.out_dir)
METRICS = Metrics()
# the room's shape per session (ids and places of every seat): it never changes, so each process keeps one copy
SHAPES: dict[str, list[dict[str, Any]]] = {}


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
        self.api.admissions.pop(session_id, None)  # a buyer who comes back lines up again

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
