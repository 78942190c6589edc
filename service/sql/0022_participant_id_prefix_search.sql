-- The console's search of a site's participants by the start of their ID, in any case: an index
-- range, not a scan of the site (a site may hold hundreds of thousands of participants).
CREATE INDEX participants_site_lower_key_idx ON participants (site_id, lower(subject_key) text_pattern_ops);
