-- The per-user seat quota (MAX_SEATS_PER_USER) holds under any concurrency, on any number of nodes.
-- A hold counts the user's live held seats and adds its own; two holds of one user counting at once would
-- both see the same "before" and together pass the quota. So every hold path first takes a lock per user
-- (a transaction-level advisory lock: no row is written for it, unlike a row lock) and counts after it, when
-- the user's other hold has committed or rolled back: READ COMMITTED gives each statement of a PL/pgSQL
-- function a fresh snapshot. The users of a batch are locked together, in key order, before any seat: two
-- batches never wait on each other's users in a cycle, and a transaction holding seat locks never waits on
-- a user. The two-key form keeps these locks apart from the migrations' one-key lock; two users whose ids
-- hash alike only wait for each other.

CREATE FUNCTION bx_lock_users(p_users uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(x'6278'::integer, k)  -- 'bx'
    FROM (SELECT DISTINCT hashtext(u::text) AS k FROM unnest(p_users) AS u ORDER BY 1) AS keys;
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
        PERFORM bx_lock_users(ARRAY[p_user]);
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

CREATE OR REPLACE FUNCTION bx_hold_batch(p_reservations uuid[], p_users uuid[], p_sessions uuid[], p_seat_ids uuid[],
                              p_seat_counts integer[], p_ttl_ms integer, p_max_user_seats integer,
                              p_idem_keys text[])
RETURNS TABLE (r_expires_at timestamptz, r_seats jsonb, r_state text, r_message text, r_detail text)
LANGUAGE plpgsql AS $$
DECLARE
    v_from integer := 1;
BEGIN
    IF p_max_user_seats > 0 THEN
        PERFORM bx_lock_users(p_users);
    END IF;
    FOR i IN 1 .. cardinality(p_reservations) LOOP
        r_expires_at := NULL; r_seats := NULL; r_state := NULL; r_message := NULL; r_detail := NULL;
        BEGIN
            SELECT h.expires_at, h.seats INTO r_expires_at, r_seats
            FROM bx_hold(p_reservations[i], p_users[i], p_sessions[i],
                         p_seat_ids[v_from : v_from + p_seat_counts[i] - 1],
                         p_ttl_ms, p_max_user_seats, p_idem_keys[i]) h;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS r_state = RETURNED_SQLSTATE, r_message = MESSAGE_TEXT,
                                    r_detail = PG_EXCEPTION_DETAIL;
        END;
        v_from := v_from + p_seat_counts[i];
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION bx_hold_set(p_reservations uuid[], p_users uuid[], p_sessions uuid[], p_seat_ids uuid[],
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
    IF p_max_user_seats > 0 THEN
        PERFORM bx_lock_users(p_users);
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
