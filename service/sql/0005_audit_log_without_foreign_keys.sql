-- The audit log is history, not a relation: its rows must outlive what they name, and writing one
-- must not lock the user, study, site and participant rows it mentions. Each foreign key made every
-- audited write take FOR KEY SHARE locks on those rows (the same study row for every concurrent
-- add), about a quarter of an add-participant's database time.
ALTER TABLE audit_log
    DROP CONSTRAINT audit_log_user_id_fkey,
    DROP CONSTRAINT audit_log_study_id_fkey,
    DROP CONSTRAINT audit_log_site_id_fkey,
    DROP CONSTRAINT audit_log_participant_id_fkey;

-- Rows arrive in time order and are never updated: a BRIN index serves time ranges at a fraction
-- of a B-tree's upkeep.
DROP INDEX audit_log_at_idx;
CREATE INDEX audit_log_at_brin ON audit_log USING brin (at);
