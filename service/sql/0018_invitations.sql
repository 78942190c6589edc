-- Invitations to the Participate portal, by email or SMS: the outbox, each delivery attempt, and
-- the studies' own message templates.
--
-- The outbox holds no personal data: no address, no number, no name, no access code and no
-- rendered message. The message is rendered at each attempt from the participant's current row, so
-- a code reset between queueing and sending sends the current code.

CREATE TABLE invitations (
    id bigserial PRIMARY KEY,
    participant_id bigint NOT NULL REFERENCES participants (id) ON DELETE CASCADE,
    study_id bigint NOT NULL REFERENCES studies (id),
    channel text NOT NULL CHECK (channel IN ('email', 'sms')),
    status text NOT NULL DEFAULT 'QUEUED' CHECK (status IN ('QUEUED', 'SENT', 'FAILED')),
    -- Made when queued and the same for every attempt: the email's Message-ID, the SMS request's
    -- Idempotency-Key. A receiver that saw it already can drop a repeat.
    message_id text NOT NULL UNIQUE,
    -- The transport's own id once it accepted the message (the SMS provider's message id, or the
    -- Message-ID for email). Set together with status SENT: a SENT row is never attempted again.
    accepted_id text,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),  -- also the lease while an attempt runs
    retry_until timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL,  -- the username that asked for it
    sent_at timestamptz,
    last_error text,  -- a kind and a status code, never a server's words (they may quote the address)
    CHECK ((status = 'SENT') = (accepted_id IS NOT NULL AND sent_at IS NOT NULL))
);
CREATE INDEX invitations_due_idx ON invitations (next_attempt_at) WHERE status = 'QUEUED';
CREATE INDEX invitations_participant_idx ON invitations (participant_id, created_at DESC);
CREATE INDEX invitations_study_status_idx ON invitations (study_id, status, created_at DESC);

CREATE TABLE invitation_attempts (
    id bigserial PRIMARY KEY,
    invitation_id bigint NOT NULL REFERENCES invitations (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL,
    outcome text NOT NULL,  -- accepted, retry, failed
    status_code integer,    -- the SMTP reply code or the HTTP status, when there was one
    error text              -- the kind of failure, as in invitations.last_error
);
CREATE INDEX invitation_attempts_invitation_idx ON invitation_attempts (invitation_id, attempt);

-- A study's own wording per channel; without a row the built-in default is used. subject is for
-- email only. Placeholders are checked when a template is set (core/invitations/templates.py).
CREATE TABLE invitation_templates (
    study_id bigint NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    channel text NOT NULL CHECK (channel IN ('email', 'sms')),
    subject text,
    body text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL,
    PRIMARY KEY (study_id, channel),
    CHECK ((channel = 'email') = (subject IS NOT NULL))
);
