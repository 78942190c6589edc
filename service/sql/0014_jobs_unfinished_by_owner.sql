-- The per-user quota counts the owner's unfinished jobs while it holds the owner's row lock (every
-- submit of that user waits behind it). Jobs are never deleted, so by owner alone that count would
-- read a CTMS user's whole history; this index holds only the unfinished ones.
CREATE INDEX jobs_owner_unfinished_idx ON jobs (owner_id) WHERE status IN ('IN_QUEUE', 'IN_PROGRESS');
