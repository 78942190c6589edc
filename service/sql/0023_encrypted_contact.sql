-- Personal data encrypted at rest (docs/data-protection.md).
--
-- data_keys: the data keys, each wrapped by the key-encryption key (a local key or AWS KMS) that
-- kek_id names; the service unwraps them at start and never stores them in clear. 'fields' keys
-- encrypt the personal columns (one active; a 'retiring' one is still read while a rotation
-- re-encrypts its rows, then deleted); the 'index' key makes blind indexes; the 'audit' key seals
-- the audit log.
CREATE TABLE data_keys (
    id serial PRIMARY KEY,
    purpose text NOT NULL CHECK (purpose IN ('fields', 'index', 'audit')),
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'retiring', 'retired')),
    wrapped bytea NOT NULL,
    kek_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX data_keys_one_active_idx ON data_keys (purpose) WHERE state = 'active';

-- Each personal column c gets c_ct: key id (4 bytes), nonce (12), AES-256-GCM ciphertext and tag,
-- its associated data the participant's study, ID and the column. The columns looked up by value
-- get c_bidx: HMAC-SHA256 (first 16 bytes) of the normalised value under the index key.
-- The plain columns stay until no row holds plain data (participants encrypt-existing), then a
-- later migration drops them.
ALTER TABLE participants
    ADD COLUMN first_name_ct bytea,
    ADD COLUMN last_name_ct bytea,
    ADD COLUMN email_ct bytea,
    ADD COLUMN phone_ct bytea,
    ADD COLUMN identifier_ct bytea,
    ADD COLUMN access_code_ct bytea,
    ADD COLUMN first_name_bidx bytea,
    ADD COLUMN last_name_bidx bytea,
    ADD COLUMN identifier_bidx bytea,
    ADD COLUMN access_code_bidx bytea;

-- Access codes are unique (and found) by their blind index.
CREATE UNIQUE INDEX participants_access_code_bidx_idx ON participants (access_code_bidx)
    WHERE access_code_bidx IS NOT NULL;
