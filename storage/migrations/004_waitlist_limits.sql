-- The seats held for a buyer on a waiting list count against MAX_SEATS_PER_USER like any hold
-- (docs/waiting-list.md): a place records the quota in force when it was taken (0: none); a join is refused
-- (BX429 hold_quota_exceeded) while the user's held seats and the request together pass it, and a pass over
-- the line skips a buyer who holds too many seats at that moment (they keep their place). Without this, one
-- user joining again after each offer would take every seat a sold-out show gets back.
-- The seats one client address waits for on one show stay within MAX_SEATS_PER_ADDRESS, as the seats it may
-- hold do (BX429 address_quota_exceeded), so one address making many guests cannot fill a show's line; the
-- sum is taken under the line's exclusive lock, so joins from one address at once cannot pass it together.

ALTER TABLE waitlist_entries ADD COLUMN max_user_seats integer NOT NULL DEFAULT 0 CHECK (max_user_seats >= 0);
ALTER TABLE waitlist_entries ADD COLUMN address text;  -- the client address that joined ('' or NULL: unknown)
CREATE INDEX waitlist_address_idx ON waitlist_entries (session_id, address) WHERE status = 'WAITING';

DROP FUNCTION bx_waitlist_join(uuid, uuid, integer, integer);
-- Join the line for p_quantity seats: the existing place if the user already waits; refused while the
-- session has that many seats free (BX409 seats_available: pick them) or has started, or while the user's
-- held seats and the request pass their quota (BX429 hold_quota_exceeded), or while the places of the same
-- address on this line and the request pass MAX_SEATS_PER_ADDRESS (BX429 address_quota_exceeded).
CREATE FUNCTION bx_waitlist_join(p_session uuid, p_user uuid, p_quantity integer, p_ttl_ms integer,
                                 p_max_user_seats integer, p_address text, p_max_address_seats integer)
RETURNS TABLE (entry_id bigint, created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_start timestamptz;
    v_free  integer;
    v_id    bigint;
    v_held  integer;
    v_addr  integer;
BEGIN
    SELECT s.start_show_time INTO v_start FROM sessions s WHERE s.id = p_session;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'BX404', MESSAGE = 'session_not_found';
    END IF;
    IF v_start <= now() THEN
        RAISE EXCEPTION USING ERRCODE = 'BX422', MESSAGE = 'session_started';
    END IF;
    SELECT w.id INTO v_id FROM waitlist_entries w
    WHERE w.session_id = p_session AND w.user_id = p_user AND w.status = 'WAITING';
    IF FOUND THEN
        RETURN QUERY SELECT v_id, false;
        RETURN;
    END IF;
    IF p_max_user_seats > 0 THEN  -- as bx_hold counts (a pass over the line checks again when it serves)
        SELECT count(*) INTO v_held FROM reservations r JOIN reservation_seats rs ON rs.reservation_id = r.id
        WHERE r.user_id = p_user AND r.status = 'PENDING' AND r.expires_at > now();
        IF v_held + p_quantity > p_max_user_seats THEN
            RAISE EXCEPTION USING ERRCODE = 'BX429', MESSAGE = 'hold_quota_exceeded', DETAIL = v_held::text;
        END IF;
    END IF;
    PERFORM pg_advisory_xact_lock(x'776c'::integer, bx_waitlist_key(p_session));  -- 'wl', exclusive
    SELECT count(*) INTO v_free FROM session_seats ss WHERE ss.session_id = p_session AND ss.status = 'AVAILABLE';
    IF v_free >= p_quantity THEN
        RAISE EXCEPTION USING ERRCODE = 'BX409', MESSAGE = 'seats_available', DETAIL = v_free::text;
    END IF;
    IF p_max_address_seats > 0 AND coalesce(p_address, '') <> '' THEN
        SELECT coalesce(sum(w.quantity), 0) INTO v_addr FROM waitlist_entries w
        WHERE w.session_id = p_session AND w.status = 'WAITING' AND w.address = p_address;
        IF v_addr + p_quantity > p_max_address_seats THEN
            RAISE EXCEPTION USING ERRCODE = 'BX429', MESSAGE = 'address_quota_exceeded', DETAIL = v_addr::text;
        END IF;
    END IF;
    INSERT INTO waitlist_entries (session_id, user_id, quantity, hold_ttl_ms, max_user_seats, address)
    VALUES (p_session, p_user, p_quantity, p_ttl_ms, p_max_user_seats, nullif(p_address, ''))
    ON CONFLICT (session_id, user_id) WHERE status = 'WAITING' DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NULL THEN  -- a concurrent join of the same user won
        SELECT w.id INTO v_id FROM waitlist_entries w
        WHERE w.session_id = p_session AND w.user_id = p_user AND w.status = 'WAITING';
        RETURN QUERY SELECT v_id, false;
        RETURN;
    END IF;
    RETURN QUERY SELECT v_id, true;
END
$$;

CREATE OR REPLACE FUNCTION bx_waitlist_serve(p_session uuid)
RETURNS jsonb
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    e          record;
    v_offers   jsonb := '[]'::jsonb;
    v_free     integer;
    v_seats    uuid[];
    v_res      uuid;
    v_expires  timestamptz;
    v_changes  jsonb;
    v_labels   jsonb;
    v_held     integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM waitlist_entries w WHERE w.session_id = p_session AND w.status = 'WAITING') THEN
        RETURN v_offers;
    END IF;
    PERFORM pg_advisory_xact_lock(x'776f'::integer, bx_waitlist_key(p_session));  -- 'wo', exclusive
    IF NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = p_session AND s.start_show_time > now()) THEN
        RETURN v_offers;
    END IF;
    SELECT count(*) INTO v_free FROM session_seats ss WHERE ss.session_id = p_session AND ss.status = 'AVAILABLE';
    FOR e IN
        -- only places whose request fits in the seats free now are locked: a long line where none fits (one seat
        -- back, everyone waiting for two) is read, not written, by each release and backstop pass
        SELECT w.id, w.user_id, w.quantity, w.hold_ttl_ms, w.max_user_seats FROM waitlist_entries w
        WHERE w.session_id = p_session AND w.status = 'WAITING' AND w.quantity <= v_free ORDER BY w.id FOR UPDATE
    LOOP
        EXIT WHEN v_free <= 0;
        CONTINUE WHEN e.quantity > v_free;
        -- The user's quota, as bx_hold counts it under the same per-user lock; never waited for here (this
        -- transaction holds seat locks): a user whose lock is taken stops the pass, and the backstop serves on.
        -- A buyer who holds too many seats now keeps their place; the next whose request fits is served.
        IF e.max_user_seats > 0 THEN
            EXIT WHEN NOT pg_try_advisory_xact_lock(x'6278'::integer, hashtext(e.user_id::text));  -- 'bx'
            SELECT count(*) INTO v_held FROM reservations r JOIN reservation_seats rs ON rs.reservation_id = r.id
            WHERE r.user_id = e.user_id AND r.status = 'PENDING' AND r.expires_at > now();
            CONTINUE WHEN v_held + e.quantity > e.max_user_seats;
        END IF;
        -- Together if possible: the first run (in seat order) of free seats numbered side by side in one row
        -- that is long enough for the request; else the first free seats in seat order.
        WITH free AS (
            SELECT ss.id, ss.position, st.row_label,
                   st.seat_number - row_number() OVER (PARTITION BY st.row_label ORDER BY st.seat_number) AS run
            FROM session_seats ss JOIN seats st ON st.id = ss.seat_id
            WHERE ss.session_id = p_session AND ss.status = 'AVAILABLE'
        ), first_run AS (
            SELECT free.row_label, free.run FROM free GROUP BY free.row_label, free.run
            HAVING count(*) >= e.quantity ORDER BY min(free.position) LIMIT 1
        )
        SELECT array_agg(x.id ORDER BY x.position) INTO v_seats FROM (
            SELECT free.id, free.position FROM free JOIN first_run USING (row_label, run)
            ORDER BY free.position LIMIT e.quantity) x;
        IF v_seats IS NOT NULL THEN  -- lock them; one taken meanwhile by a hold in flight: the plain choice
            SELECT array_agg(ss.id ORDER BY ss.position) INTO v_seats FROM (
                SELECT ss.id, ss.position FROM session_seats ss
                WHERE ss.id = ANY (v_seats) AND ss.status = 'AVAILABLE' FOR UPDATE SKIP LOCKED) ss;
        END IF;
        IF coalesce(cardinality(v_seats), 0) < e.quantity THEN
            SELECT array_agg(x.id ORDER BY x.position) INTO v_seats FROM (
                SELECT ss.id, ss.position FROM session_seats ss
                WHERE ss.session_id = p_session AND ss.status = 'AVAILABLE'
                ORDER BY ss.position LIMIT e.quantity FOR UPDATE SKIP LOCKED) x;
        END IF;
        -- seats a hold in flight has locked are skipped: if too few are left, the waitlist sweep tries again
        EXIT WHEN coalesce(cardinality(v_seats), 0) < e.quantity;
        v_res := gen_random_uuid();
        v_expires := now() + e.hold_ttl_ms * interval '1 millisecond';
        INSERT INTO reservations (id, user_id, session_id, status, expires_at, created_at, updated_at)
        VALUES (v_res, e.user_id, p_session, 'PENDING', v_expires, now(), now());
        WITH upd AS (
            UPDATE session_seats ss SET status = 'RESERVED', version = ss.version + 1, reservation_id = v_res
            FROM seats st
            WHERE ss.id = ANY (v_seats) AND ss.status = 'AVAILABLE' AND st.id = ss.seat_id
            RETURNING ss.id, ss.version, ss.position, st.row_label, st.seat_number
        ), linked AS (
            INSERT INTO reservation_seats (reservation_id, session_seat_id) SELECT v_res, upd.id FROM upd
        )
        SELECT jsonb_agg(jsonb_build_object('id', upd.id, 'status', 'RESERVED', 'version', upd.version,
                                            'reservationId', v_res) ORDER BY upd.id),
               jsonb_agg(jsonb_build_object('id', upd.id, 'rowLabel', upd.row_label, 'seatNumber', upd.seat_number)
                         ORDER BY upd.position)
        INTO v_changes, v_labels FROM upd;
        UPDATE waitlist_entries SET status = 'OFFERED', reservation_id = v_res, updated_at = now() WHERE id = e.id;
        INSERT INTO outbox (event_type, session_id, payload)
        VALUES ('reservation.created', p_session,
                bx_event_payload('reservation.created', p_session, v_res, e.user_id, v_changes)
                || jsonb_build_object('waitlist', jsonb_build_object(
                       'entryId', e.id, 'quantity', e.quantity, 'expiresAtMs', bx_epoch_ms(v_expires),
                       'createdAtMs', bx_epoch_ms(now()), 'seats', v_labels)));
        v_offers := v_offers || jsonb_build_array(jsonb_build_object(
            'entryId', e.id, 'reservationId', v_res, 'userId', e.user_id, 'expiresAtMs', bx_epoch_ms(v_expires),
            'seatIds', to_jsonb(v_seats)));
        v_free := v_free - e.quantity;
    END LOOP;
    RETURN v_offers;
END
$$;
