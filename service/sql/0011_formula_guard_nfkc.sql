-- The formula guard also catches look-alikes of its trigger characters: a spreadsheet may read the
-- full-width '＝' or '＋' (or the small '﹦', superscript '⁼', ...) as the plain one. The first
-- character is normalised with NFKC before the test. Only non-ASCII first characters pay for the
-- normalisation, so an extract of plain data costs what it did.
CREATE OR REPLACE FUNCTION csv_guard_trigger(v text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT left(v, 1) IN ('=', '+', '-', '@', E'\t', E'\r')
        OR (ascii(v) > 127 AND left(normalize(left(v, 1), NFKC), 1) IN ('=', '+', '-', '@', E'\t', E'\r'))
$$;

CREATE OR REPLACE FUNCTION csv_guard(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN csv_guard_trigger(v) THEN '''' || v ELSE v END
$$;

CREATE OR REPLACE FUNCTION csv_guard_phone(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN csv_guard_trigger(v) AND v !~ '^\+[0-9]{1,3} [0-9]{1,14}$' THEN '''' || v ELSE v END
$$;
