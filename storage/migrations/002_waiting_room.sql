-- The waiting room (docs/waiting-room.md): which sessions have one open, at what admission rate, and the secret that signs
-- admissions. The line itself (positions, the serving counter) lives in Redis; this is what a Redis restart
-- must not lose.

CREATE TABLE waiting_rooms (
    session_id uuid PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    rate       double precision NOT NULL CHECK (rate > 0),  -- buyers admitted per second, cluster-wide
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Secrets every node must share and no one configured: made at random by the first node that needs one.
CREATE TABLE server_secrets (
    name       text PRIMARY KEY,
    value      bytea NOT NULL CHECK (length(value) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
