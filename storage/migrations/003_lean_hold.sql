-- A leaner hold path, measured with loadtests/bench_holds.py.
--  * Seat updates become HOT (heap-only): no index covers a column a booking changes (status, version,
--    reservation_id) and pages keep room for the new row versions (fillfactor). Seats of a reservation
--    are found through reservation_seats' primary key instead of an index on session_seats.reservation_id.
--  * bx_hold does its work in fewer statements: the UPDATE returns the seat labels and feeds
--    reservation_seats in the same statement; "not in this session" is told apart only on failure.

--  * bx_event is PL/pgSQL: a non-inlinable LANGUAGE sql function is parsed and planned again on every
--    call, which cost more than the rest of a hold.

DROP INDEX IF EXISTS session_seats_reservation_idx;
ALTER TABLE session_seats SET (fillfactor = 70);
-- the per-user quota counts only live holds
CREATE INDEX reservations_user_pending_idx ON reservations (user_id) WHERE status = 'PENDING';

CREATE OR REPLACE FUNCTION bx_event(p_type text, p_session uuid, p_reservation uuid, p_user uuid, p_changes jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (event_type, session_id, payload)
    VALUES (p_type, p_session, jsonb_build_object(
        'type', p_type, 'sessionId', p_session, 'reservationId', p_reservation, 'userId', p_user,
        'committedAt', (extract(epoch FROM clock_timestamp()) * 1000)::bigint, 'changes', p_changes));
END
$$;

CREATE OR REPLACE FUNCTION bx_hold(p_reservation uuid, p_user uuid, p_session uuid, p_seats uuid[],
                                   p_ttl_ms integer, p_max_user_seats integer, p_idem_key text)
RETURNS TABLE (expires_at timestamptz, seats jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now       timestamptz := now();
    v_start     timestamptz;
    v_count     integer;
    v_held      integer;
    v_expires   timestamptz;
    v_changes   jsonb;
    v_seats     jsonb;
    v_missing   text;
BEGIN
    SELECT s.start_show_time INTO v_start FROM sessions s WHERE s.id = p_session;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'BX404', MESSAGE = 'session_not_found';
    END IF;
    IF v_start <= v_now THEN
        RAISE EXCEPTION USING ERRCODE = 'BX422', MESSAGE = 'session_started';
    END IF;

    IF p_max_user_seats > 0 THEN
        SELECT count(*) INTO v_held FROM reservations r JOIN reservation_seats rs ON rs.reservation_id = r.id
        WHERE r.user_id = p_user AND r.status = 'PENDING' AND r.expires_at > v_now;
        IF v_held + cardinality(p_seats) > p_max_user_seats THEN
            RAISE EXCEPTION USING ERRCODE = 'BX429', MESSAGE = 'hold_quota_exceeded', DETAIL = v_held::text;
        END IF;
    END IF;

    v_expires := v_now + p_ttl_ms * interval '1 millisecond';
    INSERT INTO reservations (id, user_id, session_id, status, expires_at, created_at, updated_at)
    VALUES (p_reservation, p_user, p_session, 'PENDING', v_expires, v_now, v_now);

    -- The arbiter: only seats still AVAILABLE flip. Row locks are taken in index order, so overlapping
    -- holds cannot deadlock, and a concurrent winner makes the loser's WHERE false after it commits.
    WITH upd AS (
        UPDATE session_seats ss SET status = 'RESERVED', version = ss.version + 1, reservation_id = p_reservation
        FROM seats st
        WHERE ss.id = ANY (p_seats) AND ss.session_id = p_session AND ss.status = 'AVAILABLE' AND st.id = ss.seat_id
        RETURNING ss.id, ss.version, ss.position, st.row_label, st.seat_number
    ), linked AS (
        INSERT INTO reservation_seats (reservation_id, session_seat_id) SELECT p_reservation, upd.id FROM upd
    )
    SELECT count(*),
           jsonb_agg(jsonb_build_object('id', upd.id, 'status', 'RESERVED', 'version', upd.version,
                                        'reservationId', p_reservation) ORDER BY upd.id),
           jsonb_agg(jsonb_build_object('id', upd.id, 'rowLabel', upd.row_label, 'seatNumber', upd.seat_number)
                     ORDER BY upd.position)
    INTO v_count, v_changes, v_seats FROM upd;

    IF v_count < cardinality(p_seats) THEN
        SELECT string_agg(x::text, ',') INTO v_missing FROM unnest(p_seats) AS x
        WHERE NOT EXISTS (SELECT 1 FROM session_seats ss WHERE ss.id = x AND ss.session_id = p_session);
        IF v_missing IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'BX422', MESSAGE = 'seats_not_in_session', DETAIL = v_missing;
        END IF;
        SELECT string_agg(ss.id::text, ',') INTO v_missing FROM session_seats ss
        WHERE ss.id = ANY (p_seats) AND ss.reservation_id IS DISTINCT FROM p_reservation;
        RAISE EXCEPTION USING ERRCODE = 'BX409', MESSAGE = 'seats_unavailable', DETAIL = v_missing;
    END IF;

    IF p_idem_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (user_id, scope, key, request_ref, resource_id)
        VALUES (p_user, 'hold', p_idem_key, p_session, p_reservation);
    END IF;
    PERFORM bx_event('reservation.created', p_session, p_reservation, p_user, v_changes);
    RETURN QUERY SELECT v_expires, v_seats;
END
$$;

-- Seats of a reservation through reservation_seats' primary key (no index on session_seats.reservation_id).
CREATE OR REPLACE FUNCTION bx_release_locked(p_reservation uuid, p_session uuid, p_user uuid, p_status text)
RETURNS uuid[]
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_changes jsonb;
    v_ids     uuid[];
BEGIN
    WITH upd AS (
        UPDATE session_seats ss SET status = 'AVAILABLE', version = ss.version + 1, reservation_id = NULL
        WHERE ss.id IN (SELECT rs.session_seat_id FROM reservation_seats rs WHERE rs.reservation_id = p_reservation)
          AND ss.reservation_id = p_reservation AND ss.status = 'RESERVED'
        RETURNING ss.id, ss.version
    )
    SELECT array_agg(upd.id ORDER BY upd.id),
           coalesce(jsonb_agg(jsonb_build_object('id', upd.id, 'status', 'AVAILABLE', 'version', upd.version)
                              ORDER BY upd.id), '[]'::jsonb)
    INTO v_ids, v_changes FROM upd;
    UPDATE reservations SET status = p_status, updated_at = now() WHERE id = p_reservation;
    PERFORM bx_event(CASE p_status WHEN 'CANCELLED' THEN 'reservation.cancelled' ELSE 'reservation.expired' END,
                     p_session, p_reservation, p_user, v_changes);
    RETURN coalesce(v_ids, '{}');
END
$$;

CREATE OR REPLACE FUNCTION bx_confirm(p_reservation uuid, p_user uuid, p_check_owner boolean, p_sale uuid,
                                      p_idem_key text)
RETURNS TABLE (sale_id uuid, created boolean, session_id uuid, seat_ids uuid[], sold_until timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r         record;
    v_prior   idempotency_keys%ROWTYPE;
    v_count   integer;
    v_total   integer;
    v_changes jsonb;
    v_ids     uuid[];
BEGIN
    SELECT res.*, s.ticket_price, s.end_show_time INTO r
    FROM reservations res JOIN sessions s ON s.id = res.session_id
    WHERE res.id = p_reservation FOR UPDATE OF res;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'BX404', MESSAGE = 'reservation_not_found';
    END IF;
    IF p_check_owner AND r.user_id <> p_user THEN
        RAISE EXCEPTION USING ERRCODE = 'BX403', MESSAGE = 'not_owner';
    END IF;

    -- A retry: read after the lock, so concurrent retries of one key all see the first one's sale.
    IF p_idem_key IS NOT NULL THEN
        SELECT * INTO v_prior FROM idempotency_keys k
        WHERE k.user_id = r.user_id AND k.scope = 'confirm' AND k.key = p_idem_key;
        IF FOUND THEN
            IF v_prior.request_ref <> p_reservation THEN
                RAISE EXCEPTION USING ERRCODE = 'BX422', MESSAGE = 'idempotency_key_reused';
            END IF;
            RETURN QUERY SELECT v_prior.resource_id, false, r.session_id, NULL::uuid[], r.end_show_time;
            RETURN;
        END IF;
    END IF;

    IF r.status = 'EXPIRED' OR (r.status = 'PENDING' AND r.expires_at <= now()) THEN
        RAISE EXCEPTION USING ERRCODE = 'BX410', MESSAGE = 'hold_expired';
    END IF;
    IF r.status <> 'PENDING' THEN
        RAISE EXCEPTION USING ERRCODE = 'BX409', MESSAGE = 'not_pending', DETAIL = r.status;
    END IF;

    SELECT count(*) INTO v_total FROM reservation_seats rs WHERE rs.reservation_id = p_reservation;
    WITH upd AS (
        UPDATE session_seats ss SET status = 'SOLD', version = ss.version + 1
        WHERE ss.id IN (SELECT rs.session_seat_id FROM reservation_seats rs WHERE rs.reservation_id = p_reservation)
          AND ss.reservation_id = p_reservation AND ss.status = 'RESERVED'
        RETURNING ss.id, ss.version
    )
    SELECT count(*), array_agg(upd.id ORDER BY upd.id),
           jsonb_agg(jsonb_build_object('id', upd.id, 'status', 'SOLD', 'version', upd.version,
                                        'reservationId', p_reservation) ORDER BY upd.id)
    INTO v_count, v_ids, v_changes FROM upd;
    IF v_count = 0 OR v_count <> v_total THEN
        RAISE EXCEPTION USING ERRCODE = 'BX500', MESSAGE = 'seat_state_mismatch';
    END IF;

    INSERT INTO sales (id, reservation_id, user_id, session_id, total_amount, confirmed_at)
    VALUES (p_sale, p_reservation, r.user_id, r.session_id, r.ticket_price * v_count, now());
    INSERT INTO sale_seats (sale_id, session_id, session_seat_id)
    SELECT p_sale, r.session_id, unnest(v_ids);
    UPDATE reservations SET status = 'CONFIRMED', updated_at = now() WHERE id = p_reservation;
    IF p_idem_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (user_id, scope, key, request_ref, resource_id)
        VALUES (r.user_id, 'confirm', p_idem_key, p_reservation, p_sale);
    END IF;
    PERFORM bx_event('payment.confirmed', r.session_id, p_reservation, r.user_id, v_changes);
    RETURN QUERY SELECT p_sale, true, r.session_id, v_ids, r.end_show_time;
END
$$;
