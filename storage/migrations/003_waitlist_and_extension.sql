-- Hold extension and the waiting list of sold-out sessions (docs/waiting-list.md).
--
-- Hold extension: a PENDING hold may be extended once (reservations.extended_at), by bx_extend.
-- The waiting list: waitlist_entries, one row per buyer in line (id = the order of the line). When seats
-- come back (a hold cancelled or expired), the same transaction that frees them offers them to the line:
-- bx_release and bx_expire_due call bx_waitlist_after_release, which holds seats for the first buyers whose
-- request fits (a reservation of their own, the normal TTL, its outbox row carrying the offer). A node that
-- dies after the commit loses nothing: the offer is a row, and its event is in the outbox.
--
-- Locks (transaction-level advisory locks, keyed by the session):
--   'wl' (line): taken SHARED by every release before it looks at the line, EXCLUSIVE by a join before it
--        counts free seats. A join therefore sees every release that did not see it: either the release
--        saw the new entry (and offers to it), or the join sees the freed seats (and is refused: pick them).
--   'wo' (offers): EXCLUSIVE around one pass over the line, so the line is served strictly in order. A
--        transaction that serves several sessions (the expiry sweep) takes them in session order, and a pass
--        never waits on a row (seats are taken SKIP LOCKED), so passes never wait on each other in a cycle.

ALTER TABLE reservations ADD COLUMN extended_at timestamptz;

CREATE TABLE waitlist_entries (
    id             bigserial PRIMARY KEY,           -- the place in line: first come, first served
    session_id     uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    quantity       integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    hold_ttl_ms    integer NOT NULL CHECK (hold_ttl_ms > 0),   -- the hold an offer makes lives this long
    status         text NOT NULL DEFAULT 'WAITING' CHECK (status IN ('WAITING', 'OFFERED', 'LEFT')),
    reservation_id uuid,                            -- the hold made for this entry, once OFFERED
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'OFFERED') = (reservation_id IS NOT NULL))
);
-- one place per buyer per session: joining again finds it
CREATE UNIQUE INDEX waitlist_one_place_idx ON waitlist_entries (session_id, user_id) WHERE status = 'WAITING';
CREATE INDEX waitlist_line_idx ON waitlist_entries (session_id, id) WHERE status = 'WAITING';
CREATE INDEX waitlist_user_idx ON waitlist_entries (user_id, session_id, id DESC);

CREATE FUNCTION bx_waitlist_key(p_session uuid) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtext(p_session::text) $$;

-- Join the line for p_quantity seats: the existing place if the user already waits; refused while the
-- session has that many seats free (BX409 seats_available: pick them) or has started.
CREATE FUNCTION bx_waitlist_join(p_session uuid, p_user uuid, p_quantity integer, p_ttl_ms integer)
RETURNS TABLE (entry_id bigint, created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_start timestamptz;
    v_free  integer;
    v_id    bigint;
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
    PERFORM pg_advisory_xact_lock(x'776c'::integer, bx_waitlist_key(p_session));  -- 'wl', exclusive
    SELECT count(*) INTO v_free FROM session_seats ss WHERE ss.session_id = p_session AND ss.status = 'AVAILABLE';
    IF v_free >= p_quantity THEN
        RAISE EXCEPTION USING ERRCODE = 'BX409', MESSAGE = 'seats_available', DETAIL = v_free::text;
    END IF;
    INSERT INTO waitlist_entries (session_id, user_id, quantity, hold_ttl_ms)
    VALUES (p_session, p_user, p_quantity, p_ttl_ms)
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

-- One pass over the line of a session: each WAITING entry in order whose quantity fits in the free seats
-- gets them held (a reservation of its own, its TTL, a reservation.created outbox row that also carries
-- `waitlist`: who to tell). Returns the offers made: [{entryId, reservationId, userId, expiresAtMs, seatIds}].
CREATE FUNCTION bx_waitlist_serve(p_session uuid)
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
        SELECT w.id, w.user_id, w.quantity, w.hold_ttl_ms FROM waitlist_entries w
        WHERE w.session_id = p_session AND w.status = 'WAITING' ORDER BY w.id FOR UPDATE
    LOOP
        EXIT WHEN v_free <= 0;
        CONTINUE WHEN e.quantity > v_free;
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

-- What every release does after freeing seats: look at the line (under the shared 'wl' lock, so a join in
-- flight has committed first) and serve it.
CREATE FUNCTION bx_waitlist_after_release(p_session uuid)
RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(x'776c'::integer, bx_waitlist_key(p_session));  -- 'wl', shared
    RETURN bx_waitlist_serve(p_session);
END
$$;

-- Leave the line (only a WAITING place; an offer already made is a hold, cancelled as any other).
CREATE FUNCTION bx_waitlist_leave(p_session uuid, p_user uuid)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    UPDATE waitlist_entries w SET status = 'LEFT', updated_at = now()
    WHERE w.session_id = p_session AND w.user_id = p_user AND w.status = 'WAITING'
    RETURNING w.id INTO v_id;
    IF v_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'BX404', MESSAGE = 'not_on_waitlist';
    END IF;
    RETURN v_id;
END
$$;

-- The backstop: sessions whose line waits while seats are free (a pass that found seats locked by a hold in
-- flight, a join racing a release's commit) are served again, in session order. Run by jobs/waitlist.py.
CREATE FUNCTION bx_waitlist_sweep()
RETURNS TABLE (session_id uuid, offers jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    s uuid;
BEGIN
    FOR s IN
        SELECT DISTINCT w.session_id FROM waitlist_entries w JOIN sessions se ON se.id = w.session_id
        WHERE w.status = 'WAITING' AND se.start_show_time > now()
          AND EXISTS (SELECT 1 FROM session_seats ss WHERE ss.session_id = w.session_id AND ss.status = 'AVAILABLE')
        ORDER BY 1
    LOOP
        session_id := s;
        offers := bx_waitlist_after_release(s);
        IF offers <> '[]'::jsonb THEN
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

-- Releases now serve the line in the same transaction: `offers` is what they handed over.
DROP FUNCTION bx_release(uuid, uuid, boolean);
CREATE FUNCTION bx_release(p_reservation uuid, p_user uuid, p_check_owner boolean)
RETURNS TABLE (session_id uuid, seat_ids uuid[], offers jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r     reservations%ROWTYPE;
    v_ids uuid[];
BEGIN
    SELECT * INTO r FROM reservations WHERE id = p_reservation FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'BX404', MESSAGE = 'reservation_not_found';
    END IF;
    IF p_check_owner AND r.user_id <> p_user THEN
        RAISE EXCEPTION USING ERRCODE = 'BX403', MESSAGE = 'not_owner';
    END IF;
    IF r.status <> 'PENDING' THEN
        RAISE EXCEPTION USING ERRCODE = 'BX409', MESSAGE = 'not_pending', DETAIL = r.status;
    END IF;
    v_ids := bx_release_locked(r.id, r.session_id, r.user_id, 'CANCELLED');
    RETURN QUERY SELECT r.session_id, v_ids, bx_waitlist_after_release(r.session_id);
END
$$;

-- The expiry sweep: every due hold released as before, then the line of each session that got seats back
-- is served, in session order; those rows come last, with reservation_id NULL and the offers made.
DROP FUNCTION bx_expire_due(integer);
CREATE FUNCTION bx_expire_due(p_limit integer)
RETURNS TABLE (reservation_id uuid, session_id uuid, seat_ids uuid[], offers jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r          record;
    s          uuid;
    v_sessions uuid[] := '{}';
BEGIN
    -- SKIP LOCKED: several nodes sweep at once without waiting on each other, and a reservation a
    -- confirm (or an extension) has locked is left to it (which then sees it PENDING and unexpired, or refuses).
    FOR r IN
        SELECT res.id, res.session_id, res.user_id FROM reservations res
        WHERE res.status = 'PENDING' AND res.expires_at <= now()
        ORDER BY res.expires_at LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    LOOP
        reservation_id := r.id;
        session_id := r.session_id;
        seat_ids := bx_release_locked(r.id, r.session_id, r.user_id, 'EXPIRED');
        offers := NULL;
        v_sessions := v_sessions || r.session_id;
        RETURN NEXT;
    END LOOP;
    FOR s IN SELECT DISTINCT x FROM unnest(v_sessions) AS x ORDER BY 1 LOOP
        reservation_id := NULL;
        session_id := s;
        seat_ids := '{}';
        offers := bx_waitlist_after_release(s);
        IF offers <> '[]'::jsonb THEN
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

-- Extend a PENDING, unexpired hold once by p_extend_ms; refused while buyers wait on the session's line.
CREATE FUNCTION bx_extend(p_reservation uuid, p_user uuid, p_check_owner boolean, p_extend_ms integer)
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
