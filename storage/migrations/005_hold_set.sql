-- Set-based group commit: a batch of holds written with one statement per table instead of one bx_hold
-- (and one subtransaction) per hold. It only writes a batch in which every hold would be granted: a
-- session that is missing or started, a user over the quota, a seat not AVAILABLE (or asked twice), an
-- idempotency key already used, or any other error raises, the whole call rolls back (it is one
-- statement), and the node writes that batch with bx_hold_batch instead, which gives each hold its own
-- outcome. With the Redis gate in front, the seats of a batch are almost always free, so almost every
-- batch takes this path. What it writes for each hold is exactly what bx_hold writes.
CREATE FUNCTION bx_hold_set(p_reservations uuid[], p_users uuid[], p_sessions uuid[], p_seat_ids uuid[],
                            p_seat_counts integer[], p_ttl_ms integer, p_max_user_seats integer,
                            p_idem_keys text[])
RETURNS TABLE (r_expires_at timestamptz, r_seats jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now     timestamptz := now();
    v_expires timestamptz := now() + p_ttl_ms * interval '1 millisecond';
    v_granted integer;
    v_seats   jsonb[];
    v_holder  uuid[];  -- per asked seat (in p_seat_ids order): the reservation asking for it
    v_session uuid[];  -- and its session
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(p_sessions) AS x LEFT JOIN sessions s ON s.id = x
               WHERE s.id IS NULL OR s.start_show_time <= v_now) THEN
        RAISE EXCEPTION USING ERRCODE = 'BX000', MESSAGE = 'hold_set_refused', DETAIL = 'session';
    END IF;
    IF p_max_user_seats > 0 AND EXISTS (
        SELECT 1 FROM (SELECT u, sum(c) AS asked FROM unnest(p_users, p_seat_counts) AS a (u, c) GROUP BY u) a
        WHERE a.asked + (SELECT count(*) FROM reservations r JOIN reservation_seats rs ON rs.reservation_id = r.id
                         WHERE r.user_id = a.u AND r.status = 'PENDING' AND r.expires_at > v_now)
              > p_max_user_seats) THEN
        RAISE EXCEPTION USING ERRCODE = 'BX000', MESSAGE = 'hold_set_refused', DETAIL = 'quota';
    END IF;

    INSERT INTO reservations (id, user_id, session_id, status, expires_at, created_at, updated_at)
    SELECT h.r, h.u, h.s, 'PENDING', v_expires, v_now, v_now
    FROM unnest(p_reservations, p_users, p_sessions) AS h (r, u, s);

    INSERT INTO idempotency_keys (user_id, scope, key, request_ref, resource_id)
    SELECT h.u, 'hold', h.k, h.s, h.r
    FROM unnest(p_reservations, p_users, p_sessions, p_idem_keys) AS h (r, u, s, k) WHERE h.k IS NOT NULL;

    SELECT array_agg(h.r ORDER BY h.ord, g), array_agg(h.s ORDER BY h.ord, g) INTO v_holder, v_session
    FROM unnest(p_reservations, p_sessions, p_seat_counts) WITH ORDINALITY AS h (r, s, c, ord),
         generate_series(1, h.c) AS g;

    -- The arbiter, as in bx_hold: only seats still AVAILABLE flip (found through the primary key, like
    -- bx_hold's = ANY); a seat held meanwhile, or asked by two holds of the batch (it flips once), leaves
    -- the count short and the whole batch rolls back.
    WITH holds AS (
        SELECT h.r, h.u, h.s, h.ord
        FROM unnest(p_reservations, p_users, p_sessions) WITH ORDINALITY AS h (r, u, s, ord)
    ), upd AS (
        UPDATE session_seats ss
        SET status = 'RESERVED', version = ss.version + 1, reservation_id = v_holder[array_position(p_seat_ids, ss.id)]
        FROM seats st
        WHERE ss.id = ANY (p_seat_ids) AND ss.status = 'AVAILABLE' AND st.id = ss.seat_id
          AND ss.session_id = v_session[array_position(p_seat_ids, ss.id)]
        RETURNING ss.id, ss.version, ss.position, ss.reservation_id AS r, st.row_label, st.seat_number
    ), linked AS (
        INSERT INTO reservation_seats (reservation_id, session_seat_id) SELECT upd.r, upd.id FROM upd
    ), per_hold AS (
        SELECT upd.r, count(*) AS n,
               jsonb_agg(jsonb_build_object('id', upd.id, 'status', 'RESERVED', 'version', upd.version,
                                            'reservationId', upd.r) ORDER BY upd.id) AS changes,
               jsonb_agg(jsonb_build_object('id', upd.id, 'rowLabel', upd.row_label, 'seatNumber', upd.seat_number)
                         ORDER BY upd.position) AS seats
        FROM upd GROUP BY upd.r
    ), events AS (
        INSERT INTO outbox (event_type, session_id, payload)
        SELECT 'reservation.created', holds.s, jsonb_build_object(
            'type', 'reservation.created', 'sessionId', holds.s, 'reservationId', holds.r, 'userId', holds.u,
            'committedAt', (extract(epoch FROM clock_timestamp()) * 1000)::bigint, 'changes', per_hold.changes)
        FROM holds JOIN per_hold ON per_hold.r = holds.r
        ORDER BY holds.ord
    )
    SELECT coalesce(sum(per_hold.n), 0), array_agg(per_hold.seats ORDER BY holds.ord)
    INTO v_granted, v_seats
    FROM holds LEFT JOIN per_hold ON per_hold.r = holds.r;

    IF v_granted <> cardinality(p_seat_ids) THEN
        RAISE EXCEPTION USING ERRCODE = 'BX000', MESSAGE = 'hold_set_refused', DETAIL = 'seats';
    END IF;
    RETURN QUERY SELECT v_expires, x.seats FROM unnest(v_seats) WITH ORDINALITY AS x (seats, ord) ORDER BY x.ord;
END
$$;
