-- Webhook callbacks (Standard Webhooks v1): endpoints, their signing secrets, the outbox of
-- messages (one per endpoint and event, written in the transaction that finishes the job) and
-- the log of every delivery attempt.

CREATE TABLE webhook_endpoints (
    id bigserial PRIMARY KEY,
    url text NOT NULL,
    description text NOT NULL DEFAULT '',
    event_types text[] NOT NULL,
    study_id bigint REFERENCES studies (id),   -- NULL: every study
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text,                      -- e.g. 'gone' after a 410
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The current secret has expires_at NULL; a rotated-out secret keeps signing until expires_at.
CREATE TABLE webhook_secrets (
    id bigserial PRIMARY KEY,
    endpoint_id bigint NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    secret text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz
);
CREATE INDEX webhook_secrets_endpoint_idx ON webhook_secrets (endpoint_id);

-- The outbox. msg_id is the webhook-id header: the same for every attempt and redelivery, so
-- receivers can de-duplicate. payload is the event body, fixed when the event happened.
CREATE TABLE webhook_messages (
    id bigserial PRIMARY KEY,
    msg_id text NOT NULL UNIQUE,
    endpoint_id bigint NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_type text NOT NULL,
    job_uuid uuid,
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),  -- also the lease while an attempt runs
    created_at timestamptz NOT NULL DEFAULT now(),
    retry_until timestamptz,                             -- NULL: created_at + the configured window
    delivered_at timestamptz,
    last_error text
);
CREATE INDEX webhook_messages_due_idx ON webhook_messages (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_messages_endpoint_idx ON webhook_messages (endpoint_id, created_at DESC);
CREATE INDEX webhook_messages_job_idx ON webhook_messages (job_uuid);

CREATE TABLE webhook_attempts (
    id bigserial PRIMARY KEY,
    message_id bigint NOT NULL REFERENCES webhook_messages (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL,
    outcome text NOT NULL,        -- success, http_error, timeout, connection_error, blocked, gone
    http_status integer,
    response_excerpt text,        -- the first bytes of the receiver's answer
    error text
);
CREATE INDEX webhook_attempts_message_idx ON webhook_attempts (message_id, attempt);
CREATE INDEX webhook_attempts_outcome_idx ON webhook_attempts (outcome);
