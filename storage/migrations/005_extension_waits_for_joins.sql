-- An extension waits for a join in flight (docs/waiting-list.md): bx_extend takes the session's line lock
-- shared before it looks at the line, as a release does, so a join that has counted the free seats under that
-- lock (exclusive) commits its place first, and the extension then sees it and is refused. It holds the
-- reservation's row lock meanwhile; a join never waits on a reservation row, so the two cannot wait in a cycle.

-- Extend a PENDING, unexpired hold once by p_extend_ms; refused while buyers wait on the session's line.
CREATE OR REPLACE FUNCTION bx_extend(p_reservation uuid, p_user uuid, p_check_owner boolean, p_extend_ms integer)
RETURNS TABLE (session_id uuid, seat_ids uuid[], expires_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r       reservations%ROWTYPE;
    v_until timestamptz;
BEGIN
    -- FOR UPDATE (not SKIP LOCKED): an expiry sweep that has the row decides first, and this sees its outcome
    SELECT * INTO r FROM reservations WHERE id = p_reservation FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'BX404', MESSAGE = 'reservation_not_found';
    END IF;
    IF p_check_owner AND r.user_id <> p_user THEN
        RAISE EXCEPTION USING ERRCODE = 'BX403', MESSAGE = 'not_owner';
    END IF;
    IF r.status = 'EXPIRED' OR (r.status = 'PENDING' AND r.expires_at <= now()) THEN
        RAISE EXCEPTION USING ERRCODE = 'BX410', MESSAGE = 'hold_expired';
    END IF;
    IF r.status <> 'PENDING' THEN
        RAISE EXCEPTION USING ERRCODE = 'BX409', MESSAGE = 'not_pending', DETAIL = r.status;
    END IF;
    IF r.extended_at IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'BX409', MESSAGE = 'already_extended';
    END IF;
    -- the line's lock, shared (as a release takes it): a join in flight has committed its place first, so an
    -- extension never slips past a buyer who joined before it
    PERFORM pg_advisory_xact_lock_shared(x'776c'::integer, bx_waitlist_key(r.session_id));  -- 'wl', shared
    IF EXISTS (SELECT 1 FROM waitlist_entries w WHERE w.session_id = r.session_id AND w.status = 'WAITING') THEN
        RAISE EXCEPTION USING ERRCODE = 'BX409', MESSAGE = 'extension_not_allowed', DETAIL = 'waiting_list';
    END IF;
    v_until := r.expires_at + p_extend_ms * interval '1 millisecond';
    UPDATE reservations SET expires_at = v_until, extended_at = now(), updated_at = now() WHERE id = p_reservation;
    RETURN QUERY SELECT r.session_id,
                        ARRAY(SELECT rs.session_seat_id FROM reservation_seats rs
                              WHERE rs.reservation_id = p_reservation ORDER BY 1),
                        v_until;
END
$$;
