-- Retry-safe submits: the first answer to a request carrying an Idempotency-Key, kept for the
-- same user's retries. `fingerprint` is SHA-256 over method, path, query and body; `status` is NULL
-- while the first request is still being worked on. A large streamed answer (a bulk summary) lives
-- in object storage under `body_key` instead of `body`.
CREATE TABLE idempotency_keys (
    username text NOT NULL,
    key text NOT NULL,
    fingerprint bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    status int,
    headers jsonb,
    body bytea,
    body_key text,
    PRIMARY KEY (username, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
