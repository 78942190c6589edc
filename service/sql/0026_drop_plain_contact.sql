-- The plain personal columns go, once no row holds a value in them (docs/key-management.md).
--
-- Rows written before encryption keep their values in clear until `participants encrypt-existing`
-- has passed them. While any does, this migration refuses (SQLSTATE PW001): the migration runner
-- leaves it waiting, applies nothing after it, and the service starts and serves meanwhile;
-- encrypt-existing applies it at its end. The lock keeps a row from gaining plain data between the
-- check and the drop (no current writer fills these columns; an older process still running might).
LOCK TABLE participants IN ACCESS EXCLUSIVE MODE;

DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM participants
        WHERE first_name IS NOT NULL OR last_name IS NOT NULL OR email IS NOT NULL
           OR phone IS NOT NULL OR identifier IS NOT NULL OR access_code IS NOT NULL
    ) THEN
        RAISE EXCEPTION 'participants still hold personal fields in plain columns'
            USING ERRCODE = 'PW001', HINT = 'run participants encrypt-existing, which applies this migration at its end';
    END IF;
END
$$;

DROP INDEX IF EXISTS participants_access_code_idx;
ALTER TABLE participants
    DROP COLUMN first_name,
    DROP COLUMN last_name,
    DROP COLUMN email,
    DROP COLUMN phone,
    DROP COLUMN identifier,
    DROP COLUMN access_code;

-- Data-key rotations (participants rotate-data-key): one row each, its progress kept so that a run
-- stopped midway continues where it stopped. Counts and key ids only: nothing personal.
CREATE TABLE key_rotations (
    id serial PRIMARY KEY,
    from_key integer NOT NULL,
    to_key integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_participant_id bigint NOT NULL DEFAULT 0,
    rows_done bigint NOT NULL DEFAULT 0,
    finished_at timestamptz
);
CREATE UNIQUE INDEX key_rotations_one_running_idx ON key_rotations ((true)) WHERE finished_at IS NULL;
