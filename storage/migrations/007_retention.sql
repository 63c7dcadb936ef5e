-- Retention (jobs/retention.py): published outbox events, idempotency keys and finished reservations are
-- deleted once older than their settings, a bounded batch at a time.

-- A finished (CANCELLED or EXPIRED) reservation is deleted with its reservation_seats rows (ON DELETE CASCADE).
-- session_seats.reservation_id loses its foreign key: migration 003 dropped the index on that column (seat
-- updates stay HOT), so the key's check on every deleted reservation was a scan of all of session_seats
-- (measured: 200 deletes took 46 s against 500,000 session seats; 0.02 s without the key). The pointer is
-- written only by the bx_* functions, which always name the reservation they insert or hold locked; the
-- invariant checks (storage/invariants.py: reserved_seats_are_held, sold_seats_have_a_sale) verify it, and a
-- SOLD seat's reservation is kept by the sales foreign key. Retention deletes only reservations that hold no
-- seat (found through reservation_seats' primary key, not a scan).
ALTER TABLE session_seats DROP CONSTRAINT IF EXISTS session_seats_reservation_id_fkey;

-- what the retention job looks up: old keys, old finished reservations (small: finished ones only)
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
CREATE INDEX reservations_finished_idx ON reservations (updated_at) WHERE status IN ('CANCELLED', 'EXPIRED');
