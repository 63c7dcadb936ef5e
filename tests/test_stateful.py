"""Hypothesis stateful test: random hold / confirm / cancel / expire / retry sequences against a model.

The booking logic (storage.booking.Booking, the one implementation) runs on real PostgreSQL and Redis;
after every step the database's seat map must equal the model's and every invariant must hold.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule
from redis.asyncio import Redis

from core.errors import DomainError
from loadtests.invariants import broken, check_invariants
from storage import catalog, db
from storage.booking import Actor, Booking
from storage.redis_gate import RedisGate

SEATS = 8
USERS = 3


class BookingMachine(RuleBasedStateMachine):
    reservations = Bundle("reservations")
    urls: dict[str, str] = {}

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.run(self._setup())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _setup(self) -> None:
        self.pool = await db.create_pool(self.urls["DATABASE_URL"], min_size=1, max_size=4)
        self.redis = Redis.from_url(self.urls["REDIS_URL"])
        self.booking = Booking(self.pool, RedisGate(self.redis), hold_ttl_seconds=60, max_seats_per_hold=4,
                               max_seats_per_user=0)
        room = await catalog.create_room(self.pool, "stateful", catalog.seat_layout(1, SEATS * 2, None))
        start = datetime.now(UTC) + timedelta(days=1)
        session = await catalog.create_session(self.pool, "m", start, start + timedelta(hours=1),
                                               room.id, Decimal("5"))
        self.session_id = session.id
        self.seats = [r["id"] for r in await catalog.seat_rows(self.pool, self.session_id)][:SEATS]
        self.users = []
        for i in range(USERS):
            user, _ = await catalog.create_user(self.pool, f"u{i}", f"{uuid.uuid4().hex}@stateful.io")
            self.users.append(user.id)
        # the model
        self.seat_status = {s: "AVAILABLE" for s in self.seats}
        self.status: dict[uuid.UUID, str] = {}
        self.owner: dict[uuid.UUID, uuid.UUID] = {}
        self.held: dict[uuid.UUID, list[uuid.UUID]] = {}
        self.sale_by_key: dict[tuple[uuid.UUID, str], tuple[uuid.UUID, str]] = {}
        self.hold_keys: dict[tuple[uuid.UUID, str], uuid.UUID] = {}

    def teardown(self) -> None:
        async def close() -> None:
            await self.pool.close()
            await self.redis.aclose()
        self.run(close())
        self.loop.close()

    # ------------------------------------------------------------------ rules

    @initialize()
    def start(self) -> None:
        pass

    @rule(target=reservations, user=st.integers(0, USERS - 1),
          picks=st.lists(st.integers(0, SEATS - 1), min_size=1, max_size=3, unique=True),
          key=st.sampled_from([None, "k1", "k2"]))
    def hold(self, user: int, picks: list[int], key: str | None) -> Any:
        user_id, seats = self.users[user], [self.seats[i] for i in picks]
        prior = self.hold_keys.get((user_id, key)) if key else None
        try:
            reservation = self.run(self.booking.hold(user_id, self.session_id, seats, key))
        except DomainError as exc:
            assert prior is None or exc.code == "idempotency_key_reused"
            assert exc.code == "seats_unavailable", exc.code
            assert any(self.seat_status[s] != "AVAILABLE" for s in seats)
            return uuid.uuid4()  # a reservation id nobody has
        rid = reservation.id
        if prior is not None:
            assert rid == prior, "a retried hold must return the same reservation"
            return rid
        assert all(self.seat_status[s] == "AVAILABLE" for s in seats), "the database held a taken seat"
        for s in seats:
            self.seat_status[s] = "RESERVED"
        self.status[rid], self.owner[rid], self.held[rid] = "PENDING", user_id, seats
        if key:
            self.hold_keys[(user_id, key)] = rid
        return rid

    @rule(rid=reservations, key=st.sampled_from([None, "buy1", "buy2"]), as_owner=st.booleans())
    def confirm(self, rid: uuid.UUID, key: str | None, as_owner: bool) -> None:
        owner = self.owner.get(rid)
        actor_id = owner if (as_owner and owner) else self.users[-1] if owner != self.users[-1] else self.users[0]
        try:
            sale = self.run(self.booking.confirm(Actor(actor_id), rid, key))
        except DomainError as exc:
            if rid not in self.status:
                assert exc.code == "reservation_not_found"
            elif actor_id != owner:
                assert exc.code == "not_owner"
            elif key and (owner, key) in self.sale_by_key:
                assert exc.code == "idempotency_key_reused"
                assert self.sale_by_key[(owner, key)][1] != str(rid)
            else:
                assert self.status[rid] != "PENDING"
                assert exc.code == ("hold_expired" if self.status[rid] == "EXPIRED" else "not_pending"), exc.code
            return
        assert actor_id == owner
        if key and (owner, key) in self.sale_by_key:
            assert sale.id == self.sale_by_key[(owner, key)][0]
            return
        assert self.status[rid] == "PENDING", f"confirmed a {self.status[rid]} reservation"
        self.status[rid] = "CONFIRMED"
        for s in self.held[rid]:
            self.seat_status[s] = "SOLD"
        if key:
            self.sale_by_key[(owner, key)] = (sale.id, str(rid))

    @rule(rid=reservations, as_owner=st.booleans())
    def cancel(self, rid: uuid.UUID, as_owner: bool) -> None:
        owner = self.owner.get(rid)
        actor_id = owner if (as_owner and owner) else self.users[-1] if owner != self.users[-1] else self.users[0]
        try:
            self.run(self.booking.release(Actor(actor_id), rid))
        except DomainError as exc:
            expected = ("reservation_not_found" if rid not in self.status else
                        "not_owner" if actor_id != owner else "not_pending")
            assert exc.code == expected, (exc.code, expected)
            return
        assert actor_id == owner and self.status[rid] == "PENDING"
        self.status[rid] = "CANCELLED"
        for s in self.held[rid]:
            self.seat_status[s] = "AVAILABLE"

    @rule(rid=reservations)
    def expire(self, rid: uuid.UUID) -> None:
        async def expire_now() -> None:  # due now: the sweep expires it (and any other due hold)
            await self.pool.execute("UPDATE reservations SET expires_at = now() - interval '1 second'"
                                    " WHERE id = $1 AND status = 'PENDING'", rid)
            # The session's cluster nodes run their own sweepers on this database: one of them may hold the
            # row (SKIP LOCKED) when ours looks, and commit a moment later. Either way it must end EXPIRED.
            async with asyncio.timeout(10):
                while True:
                    await self.booking.expire_due()
                    if await self.pool.fetchval("SELECT status FROM reservations WHERE id = $1", rid) != "PENDING":
                        return
                    await asyncio.sleep(0.02)
        self.run(expire_now())  # the invariant then compares the reservation's status with the model's
        if self.status.get(rid) == "PENDING":
            self.status[rid] = "EXPIRED"
            for s in self.held[rid]:
                self.seat_status[s] = "AVAILABLE"

    # ------------------------------------------------------------------ invariants

    @invariant()
    def database_equals_model(self) -> None:
        if not hasattr(self, "pool"):
            return
        rows = self.run(catalog.seat_rows(self.pool, self.session_id))
        actual = {r["id"]: r["status"] for r in rows if r["id"] in self.seat_status}
        assert actual == self.seat_status
        statuses = self.run(self.pool.fetch("SELECT id, status FROM reservations WHERE session_id = $1",
                                            self.session_id))
        assert {r["id"]: r["status"] for r in statuses} == self.status
        report = self.run(check_invariants(self.pool, [self.session_id]))
        report.pop("outbox_published")  # no relay runs here: the booking layer alone is under test
        assert not broken(report), broken(report)


@pytest.mark.timeout(300)
def test_booking_matches_the_model(stack: Any) -> None:
    BookingMachine.urls = stack.urls
    machine_test = BookingMachine.TestCase
    machine_test.settings = settings(max_examples=20, stateful_step_count=25, deadline=None,
                                     suppress_health_check=list(HealthCheck))
    machine_test("runTest").runTest()
