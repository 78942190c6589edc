-- Progress a person can read: what a running job is doing now (an extract 'counting' then
-- 'writing'; a bulk upload 'reading' its file, then 'committing' its rows, which can take a while
-- on its own), and whether rows_expected is an estimate (a bulk upload's, from its size, until the
-- whole file has been read) or a count.
ALTER TABLE jobs ADD COLUMN phase text, ADD COLUMN rows_estimated boolean NOT NULL DEFAULT false;
