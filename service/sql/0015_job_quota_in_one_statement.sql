-- The per-user quota of unfinished jobs, checked inside the statement that inserts the job (see
-- create_job in service/core/jobs.py). One user's submits queue on the owner's row lock; checked
-- by a separate statement in an explicit transaction, each submit held that lock for three round
-- trips (lock, count, COMMIT), so a CTMS submitting 200 extracts at once waited on 600 of them in a
-- row. As one statement in its own transaction, the lock is held for the count and the commit.
CREATE FUNCTION enforce_job_quota(owner bigint, job uuid, max_active bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    others bigint;
BEGIN
    IF max_active IS NULL THEN
        RETURN true;
    END IF;
    -- NO KEY UPDATE: the job row's foreign key check (at the end of the statement, or earlier in
    -- a caller's transaction) takes a KEY SHARE lock on the owner's row, which FOR UPDATE would
    -- conflict with: two submits each holding KEY SHARE would wait on each other.
    PERFORM 1 FROM users WHERE id = owner FOR NO KEY UPDATE;
    -- A statement after the lock: in a volatile function each statement takes a fresh snapshot, so
    -- it holds every job committed by the submits that held the lock before. The job being
    -- inserted is left out and counted once, whatever this snapshot makes of it.
    SELECT count(*) INTO others FROM jobs
    WHERE owner_id = owner AND status IN ('IN_QUEUE', 'IN_PROGRESS') AND uuid <> job;
    IF others + 1 > max_active THEN
        RAISE EXCEPTION 'the owner has too many unfinished jobs' USING ERRCODE = 'P0429';
    END IF;
    RETURN true;
END
$$;
