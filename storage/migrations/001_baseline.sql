-- The baseline: the whole schema and the one current definition of every bx_* function.
-- After the first release this file never changes: later changes are new files appended after it
-- (002_..., 003_...), applied in name order and recorded in schema_migrations (storage/db.py).

-- The whole booking schema. PostgreSQL is the final arbiter: the constraints below make a double
-- sale impossible whatever Redis says.

CREATE TABLE users (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL,
    token_hash  bytea NOT NULL UNIQUE,          -- sha256 of the bearer token; the token itself is never stored
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE rooms (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    capacity    integer NOT NULL CHECK (capacity > 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE seats (
    id          uuid PRIMARY KEY,
    room_id     uuid NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    row_label   text NOT NULL,
    seat_number integer NOT NULL CHECK (seat_number > 0),
    position    integer NOT NULL,               -- display order within the room
    UNIQUE (room_id, row_label, seat_number)
);
CREATE INDEX seats_room_idx ON seats (room_id, position);

CREATE TABLE sessions (
    id              uuid PRIMARY KEY,
    movie_title     text NOT NULL,
    start_show_time timestamptz NOT NULL,
    end_show_time   timestamptz NOT NULL,
    room_id         uuid NOT NULL REFERENCES rooms (id),
    ticket_price    numeric(10, 2) NOT NULL CHECK (ticket_price >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (end_show_time > start_show_time)
);
CREATE INDEX sessions_start_idx ON sessions (start_show_time);

CREATE TABLE reservations (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id),
    session_id  uuid NOT NULL REFERENCES sessions (id),
    status      text NOT NULL DEFAULT 'PENDING'
                CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED', 'EXPIRED')),
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    extended_at timestamptz  -- set by the one extension a hold may have (bx_extend)
);
CREATE INDEX reservations_pending_expiry_idx ON reservations (expires_at) WHERE status = 'PENDING';
CREATE INDEX reservations_user_idx ON reservations (user_id, created_at DESC);
-- the per-user quota counts only live holds
CREATE INDEX reservations_user_pending_idx ON reservations (user_id) WHERE status = 'PENDING';

-- One row per seat per screening: the unit of contention. `version` grows with every change so
-- clients can order updates; `reservation_id` says who holds or bought it. Seat updates are HOT
-- (heap-only): no index covers a column a booking changes (status, version, reservation_id), pages keep
-- room for the new row versions (fillfactor), and the seats of a reservation are found through
-- reservation_seats' primary key.
-- `reservation_id` has no foreign key: without an index on it, the key's check on every deleted
-- reservation (jobs/retention.py) would scan all of session_seats (measured: 200 deletes took 46 s against
-- 500,000 session seats; 0.02 s without the key). Only the bx_* functions write it, always naming the
-- reservation they insert or hold locked; loadtests/invariants.py checks it (reserved_seats_are_held,
-- sold_seats_have_a_sale), and a SOLD seat's reservation is kept by the sales foreign key.
CREATE TABLE session_seats (
    id              uuid PRIMARY KEY,
    session_id      uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seat_id         uuid NOT NULL REFERENCES seats (id),
    position        integer NOT NULL,
    status          text NOT NULL DEFAULT 'AVAILABLE' CHECK (status IN ('AVAILABLE', 'RESERVED', 'SOLD')),
    version         bigint NOT NULL DEFAULT 1,
    reservation_id  uuid,
    UNIQUE (session_id, seat_id),
    -- a held or sold seat always names its reservation; a free one never does
    CHECK ((status = 'AVAILABLE') = (reservation_id IS NULL))
) WITH (fillfactor = 70);
CREATE INDEX session_seats_session_idx ON session_seats (session_id, position);

CREATE TABLE reservation_seats (
    reservation_id  uuid NOT NULL REFERENCES reservations (id) ON DELETE CASCADE,
    session_seat_id uuid NOT NULL REFERENCES session_seats (id),
    PRIMARY KEY (reservation_id, session_seat_id)
);
CREATE INDEX reservation_seats_seat_idx ON reservation_seats (session_seat_id);

CREATE TABLE sales (
    id              uuid PRIMARY KEY,
    reservation_id  uuid NOT NULL UNIQUE REFERENCES reservations (id),   -- one sale per reservation
    user_id         uuid NOT NULL REFERENCES users (id),
    session_id      uuid NOT NULL REFERENCES sessions (id),
    total_amount    numeric(12, 2) NOT NULL CHECK (total_amount >= 0),
    confirmed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sales_user_idx ON sales (user_id, confirmed_at DESC);

-- The seats of each sale. UNIQUE (session_id, session_seat_id): a seat of a screening is sold at
-- most once, enforced by the database itself.
CREATE TABLE sale_seats (
    sale_id         uuid NOT NULL REFERENCES sales (id) ON DELETE CASCADE,
    session_id      uuid NOT NULL REFERENCES sessions (id),
    session_seat_id uuid NOT NULL REFERENCES session_seats (id),
    PRIMARY KEY (sale_id, session_seat_id),
    UNIQUE (session_id, session_seat_id)
);

-- Idempotency records: (user, scope, key) -> the resource it produced. Written in the same
-- transaction as the resource, so a retry finds either both or neither.
CREATE TABLE idempotency_keys (
    user_id     uuid NOT NULL REFERENCES users (id),
    scope       text NOT NULL CHECK (scope IN ('hold', 'confirm')),
    key         text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_ref uuid NOT NULL,                  -- what was asked (session for a hold, reservation for a confirm)
    resource_id uuid NOT NULL,                  -- what was produced (reservation or sale)
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, scope, key)
);

-- Transactional outbox: domain events written with the state change they describe.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    event_type    text NOT NULL,
    session_id    uuid NOT NULL,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

-- what the retention job (jobs/retention.py) looks up: old keys, old finished reservations
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
CREATE INDEX reservations_finished_idx ON reservations (updated_at) WHERE status IN ('CANCELLED', 'EXPIRED');

-- The waiting room (docs/waiting-room.md): which sessions have one, with which inlet, and the secret that signs
-- admissions. The line itself (positions, the serving counter, who is inside) lives in Redis; this is what a
-- Redis restart must not lose.

CREATE TABLE waiting_rooms (
    session_id uuid PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    -- false: an admin closed it, and it stays closed (the automatic turn-on leaves a configured session alone)
    enabled    boolean NOT NULL,
    rate       double precision CHECK (rate > 0),  -- the rate inlet: buyers admitted per second, cluster-wide
    capacity   integer CHECK (capacity > 0),       -- the capacity inlet: buyers inside at once, cluster-wide
    auto       boolean NOT NULL DEFAULT false,     -- turned on by itself (QUEUE_AUTO_HOLDS_PER_SECOND)
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (CASE WHEN enabled THEN (rate IS NULL) <> (capacity IS NULL) ELSE rate IS NULL AND capacity IS NULL END)
);

-- Secrets every node must share and no one configured: made at random by the first node that needs one.
CREATE TABLE server_secrets (
    name       text PRIMARY KEY,
    value      bytea NOT NULL CHECK (length(value) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The booking transitions, each one atomic statement (one round trip, all or nothing):
--   bx_hold      AVAILABLE -> RESERVED   (reservation.created)
--   bx_confirm   RESERVED  -> SOLD       (payment.confirmed)
--   bx_release   RESERVED  -> AVAILABLE  (reservation.cancelled | reservation.expired)
--   bx_expire_due: bx_release for every PENDING reservation past expires_at, SKIP LOCKED.
--   bx_hold_batch, bx_hold_set: many holds in one transaction (group commit, storage/group_commit.py).
-- Every transition writes its outbox event in the same transaction; bx_event_payload is the one place
-- that builds an event's payload. storage/booking.py and storage/group_commit.py are their only callers.
-- Refusals are raised with SQLSTATE 'BXnnn', where nnn is the HTTP status and MESSAGE the contract's
-- stable error code; DETAIL carries the seat ids concerned.

CREATE FUNCTION bx_epoch_ms(ts timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT (extract(epoch FROM ts) * 1000)::bigint $$;

CREATE FUNCTION bx_event_payload(p_type text, p_session uuid, p_reservation uuid, p_user uuid, p_changes jsonb)
RETURNS jsonb LANGUAGE sql VOLATILE AS $$
    SELECT jsonb_build_object('type', p_type, 'sessionId', p_session, 'reservationId', p_reservation,
                              'userId', p_user, 'committedAt', bx_epoch_ms(clock_timestamp()), 'changes', p_changes)
$$;

-- PL/pgSQL: a LANGUAGE sql function that cannot be inlined is parsed and planned again on every call.
CREATE FUNCTION bx_event(p_type text, p_session uuid, p_reservation uuid, p_user uuid, p_changes jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (event_type, session_id, payload)
    VALUES (p_type, p_session, bx_event_payload(p_type, p_session, p_reservation, p_user, p_changes));
END
$$;

-- The arbiter of a hold. The UPDATE returns the seat labels and feeds reservation_seats in the same
-- statement; "not in this session" is told apart only on failure.
-- The per-user seat quota (MAX_SEATS_PER_USER) holds under any concurrency, on any number of nodes. A
-- hold counts the user's live held seats and adds its own; two holds of one user counting at once would
-- both see the same "before" and together pass the quota. So every hold path first takes a lock per user
-- (a transaction-level advisory lock: no row is written for it, unlike a row lock) and counts after it,
-- when the user's other hold has committed or rolled back: READ COMMITTED gives each statement of a
-- PL/pgSQL function a fresh snapshot. The users of a batch are locked together, in key order, before any
-- seat: two batches never wait on each other's users in a cycle, and a transaction holding seat locks
-- never waits on a user. The two-key form keeps these locks apart from the migrations' one-key lock; two
-- users whose ids hash alike only wait for each other.
CREATE FUNCTION bx_lock_users(p_users uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(x'6278'::integer, k)  -- 'bx'
    FROM (SELECT DISTINCT hashtext(u::text) AS k FROM unnest(p_users) AS u ORDER BY 1) AS keys;
END
$$;

CREATE FUNCTION bx_hold(p_reservation uuid, p_user uuid, p_session uuid, p_seats uuid[],
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
        FROM seats st JOIN rooms ro ON ro.id = st.room_id
        WHERE ss.id = ANY (p_seats) AND ss.session_id = p_session AND ss.status = 'AVAILABLE' AND st.id = ss.seat_id
        RETURNING ss.id, ss.version, ss.position, ss.seat_id, st.room_id, st.row_label, st.seat_number,
                  ro.created_at AS room_created_at
    ), linked AS (
        INSERT INTO reservation_seats (reservation_id, session_seat_id) SELECT p_reservation, upd.id FROM upd
    )
    SELECT count(*),
           jsonb_agg(jsonb_build_object('id', upd.id, 'status', 'RESERVED', 'version', upd.version,
                                        'reservationId', p_reservation) ORDER BY upd.id),
           jsonb_agg(jsonb_build_object('id', upd.id, 'seat_id', upd.seat_id, 'version', upd.version,
                                        'room_id', upd.room_id, 'row_label', upd.row_label,
                                        'seat_number', upd.seat_number, 'room_created_at', upd.room_created_at)
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

-- Frees the seats of a reservation the caller has locked and found PENDING.
CREATE FUNCTION bx_release_locked(p_reservation uuid, p_session uuid, p_user uuid, p_status text)
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

-- Releases serve the line in the same transaction: `offers` is what they handed over.
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

-- The expiry sweep: every due hold released, then the line of each session that got seats back
-- is served, in session order; those rows come last, with reservation_id NULL and the offers made.
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

CREATE FUNCTION bx_confirm(p_reservation uuid, p_user uuid, p_check_owner boolean, p_sale uuid, p_idem_key text)
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

-- Group commit for holds (storage/group_commit.py): the holds a node has waiting go to PostgreSQL in one
-- statement and one transaction, so they share one round trip and one commit (one WAL flush) instead of
-- paying for each. Every hold is still bx_hold, all-or-nothing, in its own subtransaction: a refusal (or
-- any error) rolls back that hold alone and comes back as a row with its SQLSTATE, message and detail,
-- which the node turns into the same error the single call would have raised.
-- The node keeps a batch far below 64 holds: more subtransactions than that in one transaction overflow
-- PostgreSQL's per-backend cache and slow every other session's snapshots.
CREATE FUNCTION bx_hold_batch(p_reservations uuid[], p_users uuid[], p_sessions uuid[], p_seat_ids uuid[],
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
        FROM seats st JOIN rooms ro ON ro.id = st.room_id
        WHERE ss.id = ANY (p_seat_ids) AND ss.status = 'AVAILABLE' AND st.id = ss.seat_id
          AND ss.session_id = v_session[array_position(p_seat_ids, ss.id)]
        RETURNING ss.id, ss.version, ss.position, ss.reservation_id AS r, ss.seat_id, st.room_id, st.row_label,
                  st.seat_number, ro.created_at AS room_created_at
    ), linked AS (
        INSERT INTO reservation_seats (reservation_id, session_seat_id) SELECT upd.r, upd.id FROM upd
    ), per_hold AS (
        SELECT upd.r, count(*) AS n,
               jsonb_agg(jsonb_build_object('id', upd.id, 'status', 'RESERVED', 'version', upd.version,
                                            'reservationId', upd.r) ORDER BY upd.id) AS changes,
               jsonb_agg(jsonb_build_object('id', upd.id, 'seat_id', upd.seat_id, 'version', upd.version,
                                        'room_id', upd.room_id, 'row_label', upd.row_label,
                                        'seat_number', upd.seat_number, 'room_created_at', upd.room_created_at)
                         ORDER BY upd.position) AS seats
        FROM upd GROUP BY upd.r
    ), events AS (
        INSERT INTO outbox (event_type, session_id, payload)
        SELECT 'reservation.created', holds.s,
               bx_event_payload('reservation.created', holds.s, holds.r, holds.u, per_hold.changes)
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

-- The seats held for a buyer on a waiting list count against MAX_SEATS_PER_USER like any hold
-- (docs/waiting-list.md): a place records the quota in force when it was taken (0: none); a join is refused
-- (BX429 hold_quota_exceeded) while the user's held seats and the request together pass it, and a pass over
-- the line skips a buyer who holds too many seats at that moment (they keep their place). Without this, one
-- user joining again after each offer would take every seat a sold-out show gets back.
-- The seats one client address waits for on one show stay within MAX_SEATS_PER_ADDRESS, as the seats it may
-- hold do (BX429 address_quota_exceeded), so one address making many guests cannot fill a show's line; the
-- sum is taken under the line's exclusive lock, so joins from one address at once cannot pass it together.

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
    max_user_seats integer NOT NULL DEFAULT 0 CHECK (max_user_seats >= 0),  -- the quota when it joined (0: none)
    address        text,                            -- the client address that joined ('' or NULL: unknown)
    CHECK ((status = 'OFFERED') = (reservation_id IS NOT NULL))
);
-- one place per buyer per session: joining again finds it
CREATE UNIQUE INDEX waitlist_one_place_idx ON waitlist_entries (session_id, user_id) WHERE status = 'WAITING';
CREATE INDEX waitlist_line_idx ON waitlist_entries (session_id, id) WHERE status = 'WAITING';
CREATE INDEX waitlist_user_idx ON waitlist_entries (user_id, session_id, id DESC);
CREATE INDEX waitlist_address_idx ON waitlist_entries (session_id, address) WHERE status = 'WAITING';

-- The version of each waiting list (storage/waitlist_line.py): a node keeps a copy of a session's line and
-- answers every buyer's place from it while the version is the same, instead of counting the line for each
-- read. Every change of who waits (a join, a leave, an offer, a place deleted while waiting) bumps it, by a
-- trigger, in the transaction that makes the change. No foreign key: a session deleted with its places would
-- bump a row of a session being deleted; a row is a few bytes per session that ever had a line.

CREATE TABLE waitlist_lines (
    session_id uuid PRIMARY KEY,
    version    bigint NOT NULL
);

CREATE FUNCTION bx_waitlist_bump() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_session uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.session_id ELSE NEW.session_id END;
BEGIN
    INSERT INTO waitlist_lines AS l (session_id, version) VALUES (v_session, 1)
    ON CONFLICT (session_id) DO UPDATE SET version = l.version + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER waitlist_joined AFTER INSERT ON waitlist_entries
    FOR EACH ROW WHEN (NEW.status = 'WAITING') EXECUTE FUNCTION bx_waitlist_bump();
CREATE TRIGGER waitlist_moved AFTER UPDATE OF status ON waitlist_entries
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION bx_waitlist_bump();
CREATE TRIGGER waitlist_deleted AFTER DELETE ON waitlist_entries
    FOR EACH ROW WHEN (OLD.status = 'WAITING') EXECUTE FUNCTION bx_waitlist_bump();

CREATE FUNCTION bx_waitlist_key(p_session uuid) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtext(p_session::text) $$;

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

-- An extension waits for a join in flight (docs/waiting-list.md): bx_extend takes the session's line lock
-- shared before it looks at the line, as a release does, so a join that has counted the free seats under that
-- lock (exclusive) commits its place first, and the extension then sees it and is refused. It holds the
-- reservation's row lock meanwhile; a join never waits on a reservation row, so the two cannot wait in a cycle.

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
