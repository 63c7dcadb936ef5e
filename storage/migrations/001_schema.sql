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
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reservations_pending_expiry_idx ON reservations (expires_at) WHERE status = 'PENDING';
CREATE INDEX reservations_user_idx ON reservations (user_id, created_at DESC);

-- One row per seat per screening: the unit of contention. `version` grows with every change so
-- clients can order updates; `reservation_id` says who holds or bought it.
CREATE TABLE session_seats (
    id              uuid PRIMARY KEY,
    session_id      uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seat_id         uuid NOT NULL REFERENCES seats (id),
    position        integer NOT NULL,
    status          text NOT NULL DEFAULT 'AVAILABLE' CHECK (status IN ('AVAILABLE', 'RESERVED', 'SOLD')),
    version         bigint NOT NULL DEFAULT 1,
    reservation_id  uuid REFERENCES reservations (id),
    UNIQUE (session_id, seat_id),
    -- a held or sold seat always names its reservation; a free one never does
    CHECK ((status = 'AVAILABLE') = (reservation_id IS NULL))
);
CREATE INDEX session_seats_session_idx ON session_seats (session_id, position);
CREATE INDEX session_seats_reservation_idx ON session_seats (reservation_id) WHERE reservation_id IS NOT NULL;

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
