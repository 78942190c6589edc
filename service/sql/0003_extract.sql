-- Extracts of participant contact information (issue 4).

-- The spreadsheet formula-injection guard, applied in SQL so rows never pass through Python one
-- by one: a cell starting with = + - @ tab or CR gets a leading apostrophe. A phone number of the
-- '+CC N' form is data, not a formula, and is left alone. Both are plain SQL functions the planner
-- inlines into the COPY query.
CREATE FUNCTION csv_guard(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN left(v, 1) IN ('=', '+', '-', '@', E'\t', E'\r') THEN '''' || v ELSE v END
$$;

CREATE FUNCTION csv_guard_phone(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN left(v, 1) IN ('=', '+', '-', '@', E'\t', E'\r') AND v !~ '^\+[0-9]{1,3} [0-9]{1,14}$'
        THEN '''' || v ELSE v END
$$;

-- An extract reads one site's extractable participants in ID order: an index holding exactly
-- those rows, so a small site in a huge study costs an index range, not a scan.
CREATE INDEX participants_site_extract_idx ON participants (site_id, subject_key)
    WHERE status IN ('available', 'signed');

-- The sweeper looks for unfinished jobs; the expiry cron for completed files past retention.
CREATE INDEX jobs_unfinished_idx ON jobs (status, heartbeat_at) WHERE status IN ('IN_QUEUE', 'IN_PROGRESS');
CREATE INDEX jobs_expires_idx ON jobs (expires_at) WHERE status = 'COMPLETED';
