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
