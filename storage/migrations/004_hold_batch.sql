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
