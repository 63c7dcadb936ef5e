"""Group commit of holds (storage.group_commit.HoldWriter) on the real database.

Holds that queue up behind a write in flight go to PostgreSQL together; each must still get exactly the
outcome it would get alone: held, or refused with its own code while the rest of its batch commits.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest

from storage import db
from storage.booking import refusal
from storage.group_commit import HoldWriter
from tests.conftest import assert_invariants, make_session, make_user, seat_ids


@pytest.fixture
async def pool(base_settings: Any) -> Any:
    pool = await db.create_pool(base_settings.database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.mark.parametrize("set_based", [True, False], ids=["set-first", "hold-by-hold"])
async def test_a_batch_gives_every_hold_its_own_outcome(client: Any, pg: asyncpg.Connection, pool: Any,
                                                        set_based: bool) -> None:
    session = await make_session(client, rows=2, per_row=8)
    other = await make_session(client, rows=2, per_row=8)
    seats = [uuid.UUID(s) for s in await seat_ids(client, session["id"])]
    foreign = uuid.UUID((await seat_ids(client, other["id"]))[0])
    users = [uuid.UUID((await make_user(client, f"g{i}"))["id"]) for i in range(3)]
    session_id = uuid.UUID(session["id"])
    # one write in flight at a time: the holds submitted together are written together
    writer = HoldWriter(pool, hold_ttl_ms=30_000, max_seats_per_user=4, max_batch=32, max_inflight=1,
                        set_based=set_based)
    batch_sizes: list[int] = []
    writer.batcher.on_batch = batch_sizes.append  # each write transaction's number of holds

    asks: list[tuple[str, uuid.UUID, list[uuid.UUID], str | None]] = [
        ("first", users[0], [seats[0]], None),
        ("ok-a", users[0], [seats[1], seats[2]], "key-a"),     # user 0 now holds 3 of its 4 seats
        ("taken", users[1], [seats[2], seats[3]], None),        # seat 2 went to ok-a earlier in the batch
        ("foreign", users[1], [seats[4], foreign], None),       # a seat of another session
        ("quota", users[0], [seats[5], seats[6]], None),        # a 4th and 5th seat for user 0
        ("same-key", users[0], [seats[6]], "key-a"),            # within quota, but the key ok-a used
        ("ok-b", users[2], [seats[3], seats[7]], None),         # seat 3 is free again: "taken" rolled back
    ]
    results = await asyncio.gather(
        *(writer.write(uuid.uuid4(), user, session_id, wanted, key) for _, user, wanted, key in asks),
        return_exceptions=True)
    outcome = {}
    for (name, *_), result in zip(asks, results, strict=True):
        if isinstance(result, asyncpg.PostgresError):
            error = refusal(result)
            outcome[name] = error.code if error else result.sqlstate
        else:
            outcome[name] = "held"
    assert outcome == {"first": "held", "ok-a": "held", "taken": "seats_unavailable",
                       "foreign": "seats_not_in_session", "quota": "hold_quota_exceeded",
                       "same-key": "23505", "ok-b": "held"}

    # PostgreSQL holds exactly the seats of the holds that were granted, nothing of the refused ones
    rows = await pg.fetch("SELECT ss.id, r.user_id FROM session_seats ss"
                          " JOIN reservations r ON r.id = ss.reservation_id"
                          " WHERE ss.session_id = $1 AND ss.status = 'RESERVED'", session_id)
    assert {r["id"]: r["user_id"] for r in rows} == {
        seats[0]: users[0], seats[1]: users[0], seats[2]: users[0], seats[3]: users[2], seats[7]: users[2]}
    assert await pg.fetchval("SELECT count(*) FROM reservations WHERE session_id = $1", session_id) == 3
    assert await pg.fetchval("SELECT count(*) FROM outbox WHERE session_id = $1", session_id) == 3
    # the holds went in batches: fewer write transactions than holds. (Counted by the writer: the database's
    # own commit counter also counts this test's reads and the app's background jobs, and is flushed late.)
    assert sum(batch_sizes) == len(asks) and len(batch_sizes) < len(asks), batch_sizes
    # set-first: the batch was refused as a whole (nothing of it written) and then written hold by hold
    assert (writer.set_batches, writer.set_refused) == (0, 1 if set_based else 0)
    await assert_invariants(pg, [session["id"]])


def _event_shape(payload: dict[str, Any], reservation: uuid.UUID) -> dict[str, Any]:
    """An outbox event with what differs between two holds (ids, user, times, versions) taken out."""
    assert payload["reservationId"] == str(reservation) and isinstance(payload["committedAt"], int)
    return {**payload, "reservationId": None, "userId": None, "committedAt": None,
            "changes": [{**c, "id": None, "version": c["version"] > 1, "reservationId": c["reservationId"] ==
                         str(reservation)} for c in payload["changes"]]}


async def test_a_batch_granted_whole_is_written_set_based_exactly_as_hold_by_hold(
        client: Any, pg: asyncpg.Connection, pool: Any) -> None:
    session = await make_session(client, rows=4, per_row=8)
    session_id = uuid.UUID(session["id"])
    seats = [uuid.UUID(s) for s in await seat_ids(client, session["id"])]
    users = [uuid.UUID((await make_user(client, f"s{i}"))["id"]) for i in range(4)]
    # (user, seat positions, idempotency key): holds of 1 to 4 seats, two by one user, one with a key
    asks = [(0, range(0, 1), None), (1, range(1, 3), "k1"), (2, range(3, 6), None), (0, range(6, 10), None),
            (3, range(10, 12), None)]
    events: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for set_based in (True, False):
        writer = HoldWriter(pool, hold_ttl_ms=30_000, max_seats_per_user=8, max_batch=32, max_inflight=1,
                            set_based=set_based)
        # the second round holds the same shapes on other seats, for other users (within their quota)
        offset, shift = (0, 0) if set_based else (16, 1)
        holds = [(uuid.uuid4(), users[(user + shift) % 4], [seats[i + offset] for i in where],
                  key and f"{key}-{set_based}") for user, where, key in asks]
        rows = await asyncio.gather(*(writer.write(rid, user, session_id, wanted, key)
                                      for rid, user, wanted, key in holds))
        if set_based:  # the first hold went alone; the four behind it in one set-based batch
            assert (writer.set_batches, writer.set_refused) == (1, 0)
        for (rid, _, wanted, _), row in zip(holds, rows, strict=True):
            assert [s.id for s in row.seats] == wanted
            assert row.seats[0].row_label and row.seats[0].seat_number
            held = await pg.fetch("SELECT id, status, version FROM session_seats WHERE reservation_id = $1", rid)
            assert {r["id"] for r in held} == set(wanted)
            assert all(r["status"] == "RESERVED" and r["version"] == 2 for r in held)
            assert await pg.fetchval("SELECT count(*) FROM reservation_seats WHERE reservation_id = $1",
                                     rid) == len(wanted)
            reservation = await pg.fetchrow("SELECT status, expires_at - created_at AS ttl FROM reservations"
                                            " WHERE id = $1", rid)
            assert reservation["status"] == "PENDING" and reservation["ttl"].total_seconds() == 30
            found = await pg.fetch("SELECT event_type, payload FROM outbox WHERE payload->>'reservationId' = $1",
                                   str(rid))
            assert len(found) == 1 and found[0]["event_type"] == "reservation.created"
            events[set_based].append(_event_shape(json.loads(found[0]["payload"]), rid))
        keys = await pg.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = $1", f"k1-{set_based}")
        assert keys == 1
    assert events[True] == events[False]
    await assert_invariants(pg, [session["id"]])


async def test_a_set_based_batch_refused_by_one_seat_writes_nothing_of_it(
        client: Any, pg: asyncpg.Connection, pool: Any) -> None:
    session = await make_session(client, rows=2, per_row=8)
    session_id = uuid.UUID(session["id"])
    seats = [uuid.UUID(s) for s in await seat_ids(client, session["id"])]
    user = uuid.UUID((await make_user(client, "r"))["id"])
    holder = uuid.UUID((await make_user(client, "h"))["id"])
    await pg.fetchrow("SELECT * FROM bx_hold($1, $2, $3, $4, 30000, 0, NULL)", uuid.uuid4(), holder, session_id,
                      [seats[5]])
    before = await pg.fetchval("SELECT count(*) FROM outbox WHERE session_id = $1", session_id)
    with pytest.raises(asyncpg.PostgresError) as refused:
        await pg.fetch("SELECT * FROM bx_hold_set($1, $2, $3, $4, $5, 30000, 0, $6)",
                       [uuid.uuid4(), uuid.uuid4()], [user, user], [session_id, session_id],
                       [seats[0], seats[1], seats[5]], [1, 2], [None, "key"])
    assert refused.value.sqlstate == "BX000"
    assert await pg.fetchval("SELECT count(*) FROM reservations WHERE user_id = $1", user) == 0
    assert await pg.fetchval("SELECT count(*) FROM idempotency_keys WHERE user_id = $1", user) == 0
    assert await pg.fetchval("SELECT count(*) FROM outbox WHERE session_id = $1", session_id) == before
    assert await pg.fetchval("SELECT count(*) FROM session_seats WHERE session_id = $1 AND status = 'RESERVED'",
                             session_id) == 1


async def test_a_batch_that_fails_as_a_whole_fails_each_caller_and_changes_nothing(
        client: Any, pg: asyncpg.Connection, base_settings: Any) -> None:
    session = await make_session(client)
    seats = [uuid.UUID(s) for s in await seat_ids(client, session["id"])]
    user = uuid.UUID((await make_user(client))["id"])
    pool = await db.create_pool(base_settings.database_url, min_size=1, max_size=1)
    writer = HoldWriter(pool, hold_ttl_ms=30_000, max_seats_per_user=0, max_batch=32, max_inflight=1)
    await pool.close()  # the database is gone for this writer: every caller hears of it
    results = await asyncio.gather(*(writer.write(uuid.uuid4(), user, uuid.UUID(session["id"]), [s], None)
                                     for s in seats[:5]), return_exceptions=True)
    assert all(isinstance(r, asyncpg.InterfaceError) for r in results), results
    assert await pg.fetchval("SELECT count(*) FROM reservations WHERE session_id = $1",
                             uuid.UUID(session["id"])) == 0
