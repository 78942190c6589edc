-- Erasure of one participant's personal data (docs/erasure.md).
--
-- erased_at: when the participant's personal fields were destroyed. The row stays (its ID, OID,
-- site, status and audit rows), with every personal column NULL; the column is also the list of
-- erasures to apply again after restoring a backup taken before them.
ALTER TABLE participants ADD COLUMN erased_at timestamptz;
-- Erased participants of a site, for the rule that expires extracts read before an erasure.
CREATE INDEX participants_erased_idx ON participants (site_id, erased_at) WHERE erased_at IS NOT NULL;

-- The stored answers of Idempotency-Key requests: a body sealed under the active field key
-- (core/protection/blobs.py) and the participant an answer concerns, so that erasing it deletes
-- the answer too.
ALTER TABLE idempotency_keys
    ADD COLUMN sealed boolean NOT NULL DEFAULT false,
    ADD COLUMN participant_id bigint;
CREATE INDEX idempotency_keys_participant_idx ON idempotency_keys (participant_id)
    WHERE participant_id IS NOT NULL;

-- Answers kept in clear before this migration that carry contact data (a connect call's answer):
-- forgotten now rather than left until their retention ends. A retry of one runs the call again,
-- which changes nothing the first did not.
DELETE FROM idempotency_keys
WHERE body IS NOT NULL
  AND (position('"firstName"'::bytea IN body) > 0 OR position('"lastName"'::bytea IN body) > 0
       OR position('"email"'::bytea IN body) > 0 OR position('"phoneNumber"'::bytea IN body) > 0
       OR position('"identifier"'::bytea IN body) > 0);
