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
