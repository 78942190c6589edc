-- The foundation: studies, sites, users and roles, participants, jobs, audit log.
-- Status words are stored lower case; the API shows OC4's labels ("Available", "Removed").

CREATE TABLE studies (
    id bigserial PRIMARY KEY,
    oid text NOT NULL UNIQUE,
    name text NOT NULL,
    status text NOT NULL DEFAULT 'available'
        CHECK (status IN ('available', 'frozen', 'locked', 'removed')),
    participant_id_method text NOT NULL DEFAULT 'manual'
        CHECK (participant_id_method IN ('manual', 'system_generated')),
    id_template text NOT NULL DEFAULT '{site}-{seq:04}',
    id_seq bigint NOT NULL DEFAULT 0,  -- last number handed out by the template's {seq}
    participate_enabled boolean NOT NULL DEFAULT false,
    expected_total_enrollment integer NOT NULL DEFAULT 0 CHECK (expected_total_enrollment >= 0),
    enforce_enrollment_cap boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sites (
    id bigserial PRIMARY KEY,
    study_id bigint NOT NULL REFERENCES studies (id),
    oid text NOT NULL UNIQUE,
    name text NOT NULL,
    status text NOT NULL DEFAULT 'available'
        CHECK (status IN ('available', 'frozen', 'locked', 'removed')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sites_study_idx ON sites (study_id);

CREATE TABLE users (
    id bigserial PRIMARY KEY,
    username text NOT NULL UNIQUE,
    full_name text NOT NULL DEFAULT '',
    admin boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- (user, study, optional site, role): no site means a study-level role reaching every site.
CREATE TABLE role_assignments (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    study_id bigint NOT NULL REFERENCES studies (id),
    site_id bigint REFERENCES sites (id),
    role text NOT NULL
        CHECK (role IN ('coordinator', 'director', 'investigator', 'ra', 'ra2', 'monitor', 'viewer')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX role_assignments_unique_idx
    ON role_assignments (user_id, study_id, coalesce(site_id, 0), role);

CREATE SEQUENCE participant_oid_suffix_seq;

CREATE TABLE participants (
    id bigserial PRIMARY KEY,
    study_id bigint NOT NULL REFERENCES studies (id),
    site_id bigint REFERENCES sites (id),  -- NULL: a study-level participant
    subject_key text NOT NULL,
    oid text NOT NULL,
    status text NOT NULL DEFAULT 'available'
        CHECK (status IN ('available', 'signed', 'removed', 'auto-removed')),
    first_name text,
    last_name text,
    email text,
    phone text,
    identifier text,
    access_code text,
    participate_status text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_by bigint REFERENCES users (id),
    updated_by bigint REFERENCES users (id)
);
-- A participant ID is unique within its study whatever its case (OC4 compares case-insensitively).
CREATE UNIQUE INDEX participants_study_key_idx ON participants (study_id, lower(subject_key));
-- Enrollment cap counts and extracts by site, ordered by ID, without scanning the study.
CREATE INDEX participants_study_status_idx ON participants (study_id, status);
CREATE INDEX participants_site_key_idx ON participants (site_id, subject_key);
CREATE UNIQUE INDEX participants_access_code_idx ON participants (access_code) WHERE access_code IS NOT NULL;

-- OC4-style OID: SS_ and the upper-cased letters and digits of the ID; a suffix keeps it unique
-- within the study when two IDs differ only in punctuation.
CREATE FUNCTION participant_oid(p_study_id bigint, p_subject_key text) RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM participants WHERE study_id = p_study_id AND oid = c.oid)
        THEN c.oid || '_' || nextval('participant_oid_suffix_seq')
        ELSE c.oid
    END
    FROM (SELECT 'SS_' || upper(regexp_replace(p_subject_key, '[^A-Za-z0-9]', '', 'g')) AS oid) c
$$;
CREATE INDEX participants_study_oid_idx ON participants (study_id, oid);

CREATE TABLE jobs (
    uuid uuid PRIMARY KEY,
    type text NOT NULL CHECK (type IN ('EXTRACT_PARTICIPANTS', 'BULK_ADD_PARTICIPANTS')),
    status text NOT NULL DEFAULT 'IN_QUEUE'
        CHECK (status IN ('IN_QUEUE', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED', 'EXPIRED', 'DELETED')),
    study_id bigint NOT NULL REFERENCES studies (id),
    site_id bigint REFERENCES sites (id),
    owner_id bigint NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz,
    heartbeat_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    rows_done bigint NOT NULL DEFAULT 0,
    rows_expected bigint,
    row_count bigint,
    byte_size bigint,
    sha256 text,
    object_key text,
    file_name text,
    expires_at timestamptz,
    error text,
    cancel_requested boolean NOT NULL DEFAULT false,
    params jsonb NOT NULL DEFAULT '{}'::jsonb,   -- what the job needs beyond its columns (never personal data)
    result jsonb                               -- e.g. the bulk summary
);
CREATE INDEX jobs_owner_idx ON jobs (owner_id, created_at DESC);
CREATE INDEX jobs_status_idx ON jobs (status, created_at);
CREATE INDEX jobs_study_site_idx ON jobs (study_id, site_id, created_at DESC);

-- Who did what, when. Field names, never field values: the log must hold no personal data.
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    user_id bigint REFERENCES users (id),
    username text,
    action text NOT NULL,
    study_id bigint REFERENCES studies (id),
    site_id bigint REFERENCES sites (id),
    participant_id bigint REFERENCES participants (id),
    job_uuid uuid,
    details jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_study_idx ON audit_log (study_id, at);
