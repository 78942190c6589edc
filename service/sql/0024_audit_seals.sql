-- A tamper-evident audit trail (docs/data-protection.md): audit rows are never changed once
-- written, and a background sealer chains them with a keyed hash into audit_seals.

-- Rows of the audit log and of its seals are final: no UPDATE, no DELETE, whoever asks (the
-- service's own role included). Only the tables' owner can switch the trigger off, and what it then
-- changes in sealed rows verify-audit reports. TRUNCATE stays possible (test fixtures empty every
-- table with it); truncating sealed rows is reported too, as deleted rows.
CREATE FUNCTION audit_rows_are_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'audit rows can be neither updated nor deleted (docs/data-protection.md)';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_rows_are_final();

-- One seal per sealed audit row: mac = HMAC-SHA256(key, previous row's mac || the row's canonical
-- bytes), in id order. A separate table, so sealing never updates (or locks) an audit row.
CREATE TABLE audit_seals (
    audit_id bigint PRIMARY KEY,
    mac bytea NOT NULL CHECK (length(mac) = 32),
    sealed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER audit_seals_append_only BEFORE UPDATE OR DELETE ON audit_seals
    FOR EACH ROW EXECUTE FUNCTION audit_rows_are_final();

-- An audit row's writer has its transaction id before it draws the row's id. The sealer relies on
-- it: once every transaction id older than one taken after it read max(id) has ended, no row with
-- an id up to that max can still commit (core/audit_seal.py). The first write of a transaction
-- would otherwise be given its transaction id only when the row is stored, after the default ran.
CREATE FUNCTION audit_log_next_id() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_current_xact_id();
    RETURN nextval('audit_log_id_seq');
END
$$;

ALTER TABLE audit_log ALTER COLUMN id SET DEFAULT audit_log_next_id();
-- Ids in the order they are drawn: a per-session cache would hand out ids out of time order.
ALTER SEQUENCE audit_log_id_seq CACHE 1;
