-- Progress a person can read: what a running job is doing now (an extract 'counting' then
-- 'writing'; a bulk upload 'reading' its file, then 'committing' its rows, which can take a while
-- on its own), and whether rows_expected is an estimate (a bulk upload's, from its size, until the
-- whole file has been read) or a count.
ALTER TABLE jobs ADD COLUMN phase text, ADD COLUMN rows_estimated boolean NOT NULL DEFAULT false;

-- The operators' dashboard reads the last hour and day of finished jobs, of submitted ones (the
-- queue over time) and of webhook attempts by time: these keep those reads to their window.
CREATE INDEX jobs_completed_at_idx ON jobs (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX jobs_created_at_idx ON jobs (created_at);
-- When a job left the queue: a worker started it, or it ended without one.
CREATE INDEX jobs_left_queue_idx ON jobs ((coalesce(started_at, completed_at)));
CREATE INDEX webhook_attempts_at_idx ON webhook_attempts (at);
