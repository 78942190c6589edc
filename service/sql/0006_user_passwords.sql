-- Local accounts: a user may sign in at the OC4 token endpoint with a password. Only the argon2id
-- hash (PHC string, salt and parameters inside) is stored; NULL means no password is set and the
-- user can only use tokens from the identity provider or the CLI.
ALTER TABLE users ADD COLUMN password_hash text;
ALTER TABLE users ADD COLUMN password_changed_at timestamptz;
